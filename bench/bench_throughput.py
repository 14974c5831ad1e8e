"""Every throughput goal in one run, each as a ratio against its peer tool, with its verdict.

On one mixed-content loop device (caches dropped before every timed run, rescue and its peer
interleaved, the best of `--rounds` taken for each): raw image against `dd` and `ddrescue -d`;
.qcow2 and .img.zst against `zstd -T0 -3`; restore of the zstd qcow2 onto a direct-I/O loop
device over a file on disk against `qemu-img convert -O raw -n`, with and without the read-back
verification (when the target's queue/rotational says, and forced during the writing, as a
virtual disk that calls itself rotational hides the difference); imaging with the TUI open
against headless (bench_tui); one sector-map frame at 220x64 (bench_map); `rescue --version`
start-up; used-blocks against full imaging of an ext4 (bench_used); and how qcow2 compression
scales with --threads against zstd's -T1, -T2 and -T0. Each row prints the figure now, the
goal and whether it is met.

Every rescue process runs with rescue's bytecode compiled beforehand (into the tree's
__pycache__), as an installed package has it: where PYTHONDONTWRITEBYTECODE is set, each start
would otherwise compile every module it imports again.

Run as root: python bench/bench_throughput.py [--size 1G] [--quick] [--workdir DIR]
                                              [--target-dir DIR] [--only PART ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack

from bench_map import widget_frames, write_big_map
from bench_restore import allocate, restore_cmd, same_bytes
from bench_tui import TUI_SCRIPT, job_seconds
from bench_used import build, timed_rescue
from common import REPO, make_mixed_disk, remove, rescue_cmd, timed

from rescue.io.blockdev import rotational
from rescue.units import parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20
PARTS = ("imaging", "restore", "presenters", "used", "scaling")


class Table:
    """Rows of (what, figure now, goal, met), printed as they come and once more at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: float | None, goal: str, detail: str = "") -> None:
        if value is None:
            now, met = "n/a", "n/a"
        else:
            now = f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
            bound = float(goal.split()[1].rstrip("xs"))
            met = "met" if (value >= bound if goal.startswith(">=") else value <= bound) \
                else "not met"
        row = (what, f"{now} {detail}".rstrip(), goal, met)
        self.rows.append(row)
        print(f"  {row[0]:<44} {row[1]:<46} {row[2]:<10} {row[3]}", flush=True)

    def print(self) -> None:
        print("\n== throughput goals: figure now, goal, verdict")
        for what, now, goal, met in self.rows:
            print(f"  {what:<44} {now:<46} {goal:<10} {met}")


def best(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The best time of each run over `rounds` rounds, the runs interleaved in each round."""
    times: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name] = min(times.get(name, float("inf")), run())
    return times


def written(cmd: list[str], out: str) -> Callable[[], float]:
    """A timed run of `cmd` that writes `out` (and maybe its map), starting from nothing."""
    def run() -> float:
        remove(out)
        return timed(cmd)
    return run


def sh(command: str) -> list[str]:
    return ["sh", "-c", command]


def imaging(table: Table, device: str, work: str, size: int, rounds: int) -> None:
    """Raw against dd and ddrescue -d; qcow2 and .img.zst against zstd -T0 -3."""
    out = {name: os.path.join(work, name) for name in
           ("dd.img", "ddrescue.img", "rescue.img", "z.zst", "r.qcow2", "r.img.zst")}
    times = best(rounds, {
        "dd": written(["dd", f"if={device}", f"of={out['dd.img']}", "bs=4M", "iflag=direct",
                       "conv=fsync", "status=none"], out["dd.img"]),
        "ddrescue": written(["ddrescue", "-d", device, out["ddrescue.img"],
                             f"{out['ddrescue.img']}.map"], out["ddrescue.img"]),
        "raw": written(rescue_cmd("image", device, out["rescue.img"]), out["rescue.img"]),
    })
    if not same_bytes(device, out["rescue.img"], size):
        raise SystemExit("the raw image differs from the device")
    remove(out["dd.img"], out["ddrescue.img"], out["rescue.img"])
    table.add("raw image vs dd bs=4M iflag=direct conv=fsync", times["dd"] / times["raw"],
              ">= 1.0x", f"x  ({times['raw']:.2f} s vs {times['dd']:.2f} s)")
    table.add("raw image vs ddrescue -d", times["ddrescue"] / times["raw"], ">= 1.0x",
              f"x  ({times['raw']:.2f} s vs {times['ddrescue']:.2f} s)")
    sizes: dict[str, int] = {}

    def sized(name: str, cmd: list[str]) -> Callable[[], float]:
        def run() -> float:
            seconds = written(cmd, out[name])()
            sizes[name] = os.path.getsize(out[name])
            remove(out[name])
            return seconds
        return run

    times = best(rounds, {
        "zstd": sized("z.zst", sh(f"zstd -q -T0 -3 < {device} > {out['z.zst']}")),
        "qcow2": sized("r.qcow2", rescue_cmd("image", device, out["r.qcow2"])),
        "zst": sized("r.img.zst", rescue_cmd("image", device, out["r.img.zst"])),
    })
    table.add(".qcow2 vs zstd -T0 -3", times["zstd"] / times["qcow2"], ">= 1.0x",
              f"x  ({times['qcow2']:.2f} s vs {times['zstd']:.2f} s)")
    table.add(".qcow2 size vs zstd -T0 -3, percent", 100 * (sizes["r.qcow2"] /
                                                           sizes["z.zst"] - 1), "<= 3",
              f"%  ({sizes['r.qcow2'] / MiB:.1f} MiB vs {sizes['z.zst'] / MiB:.1f} MiB)")
    table.add(".img.zst vs zstd -T0 -3", times["zstd"] / times["zst"], ">= 1.0x",
              f"x  ({times['zst']:.2f} s vs {times['zstd']:.2f} s)")


def restoring(table: Table, disk: str, device: str, work: str, size: int, rounds: int,
              target_dir: str) -> None:
    """A zstd qcow2 restored onto a loop device against qemu-img convert. The target's backing
    file is in `target_dir` (the work folder, on a real disk, by default) and is written again
    before each run, as bench_restore does; the loop device is attached with direct I/O, so
    each tool's bytes reach that disk and neither run is timed against the other's leftover
    page cache (on a tmpfs backing, qemu-img's time varied threefold by page state alone)."""
    image, maps = os.path.join(work, "restore.qcow2"), os.path.join(work, "maps")
    timed(rescue_cmd("image", device, image), drop=False)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix="bench-throughput-") as targets:
        backing = os.path.join(targets, "target")
        allocate([backing], size)
        with loop_device(backing, direct_io=True) as target:
            def fresh(cmd: list[str]) -> Callable[[], float]:
                def run() -> float:
                    allocate([backing], size)
                    seconds = timed(cmd)
                    if not same_bytes(disk, target, size):
                        raise SystemExit(f"{cmd[:3]}: the target differs from the disk")
                    return seconds
                return run

            times = best(rounds, {
                "qemu": fresh(["qemu-img", "convert", "-O", "raw", "-n", image, target]),
                "restore": fresh(restore_cmd(image, [target], maps, "--no-verify")),
                "verify": fresh(restore_cmd(image, [target], maps)),
                "during": fresh(restore_cmd(image, [target], maps, "--read-back", "during")),
            })
            spinning = rotational(target)
    remove(image)
    table.add("restore qcow2 vs qemu-img convert -O raw -n", times["qemu"] / times["restore"],
              ">= 1.1x", f"x  ({times['restore']:.2f} s vs {times['qemu']:.2f} s)")
    table.add("restore + read-back verify vs qemu-img", times["qemu"] / times["verify"],
              ">= 0.7x", f"x  ({times['verify']:.2f} s vs {times['qemu']:.2f} s; "
                         f"{'after, rotational' if spinning else 'during'})")
    table.add("restore + --read-back during vs qemu-img", times["qemu"] / times["during"],
              ">= 0.7x", f"x  ({times['during']:.2f} s vs {times['qemu']:.2f} s)")


def presenters(table: Table, work: str, rounds: int, quick: bool) -> None:
    """TUI against headless (bench_tui), a 220x64 map frame (bench_map), start-up time."""
    dest = os.path.join(work, "tui.img")
    source = "sim:size=256M" if quick else "sim:size=1G"
    script = TUI_SCRIPT.format(repo=str(REPO), source=source, dest=dest)
    headless = rescue_cmd("image", source, dest, "--json")
    jobs = best(rounds, {
        "headless": lambda: (remove(dest), job_seconds(headless, str(REPO)))[1][0],
        "tui": lambda: (remove(dest), job_seconds([sys.executable, "-c", script], str(REPO)))[1][0],
    })
    remove(dest)
    table.add(f"TUI / headless throughput ({source})", jobs["headless"] / jobs["tui"],
              ">= 0.95")
    big_map = os.path.join(work, "big.map")
    write_big_map(big_map, 100_000 if quick else 1_000_000)
    first, live = widget_frames(big_map, (220, 64))
    table.add("sector-map live frame 220x64, ms", 1000 * live, "<= 20",
              f"ms  ({'100,000' if quick else '1,000,000'} areas; the first frame, every cell "
              f"drawn: {1000 * first:.1f} ms)")
    os.unlink(big_map)
    starts = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run(rescue_cmd("--version"), check=True, capture_output=True)
        starts.append(time.perf_counter() - started)
    table.add("rescue --version start-up, s (best of 7)", min(starts), "<= 0.15", "s")


def used_blocks(table: Table, work: str, size: int) -> None:
    """--mode used against full imaging on an ext4 30 % full (bench_used's disk, 2 GiB as
    there; 1 GiB with --quick)."""
    image = os.path.join(work, "ext4.img")
    build(image, size, 0.3, work)
    full_out, used_out = os.path.join(work, "full.img"), os.path.join(work, "used.img")
    with loop_device(image, direct_io=True, read_only=True) as device:
        remove(full_out, used_out)
        full, _ = timed_rescue("image", device, full_out, "--order", "sequential")
        used, _ = timed_rescue("image", device, used_out, "--mode", "used")
    remove(full_out, used_out, image)
    table.add("used-blocks / full imaging, wall", used / full, "<= 0.4",
              f"  ({used:.2f} s vs {full:.2f} s)")


def scaling(device: str, work: str, rounds: int) -> list[tuple[str, str]]:
    """`rescue image` to qcow2 with --threads 1, 2 and every core against zstd -T1/-T2/-T0."""
    cores = len(os.sched_getaffinity(0))
    out, zst = os.path.join(work, "scale.qcow2"), os.path.join(work, "scale.zst")
    rows = []
    usage = subprocess.run(rescue_cmd("image", "--help"), capture_output=True).stdout
    for threads, flag in ((1, "-T1"), (2, "-T2"), (cores, "-T0")):
        if b"--threads" not in usage:
            rows.append((f"--threads {threads} vs zstd {flag} -3", "n/a (no --threads)"))
            continue
        ours = rescue_cmd("image", device, out, "--threads", str(threads))
        times = best(rounds, {
            "zstd": written(sh(f"zstd -q {flag} -3 < {device} > {zst}"), zst),
            "rescue": written(ours, out),
        })
        remove(out, zst)
        rows.append((f"--threads {threads} vs zstd {flag} -3",
                     f"{times['zstd'] / times['rescue']:.2f}x  ({times['rescue']:.2f} s vs "
                     f"{times['zstd']:.2f} s)"))
    return rows


def compile_bytecode() -> None:
    """Compile rescue's modules, and let every child process use and keep bytecode."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "rescue")],
                   check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--quick", action="store_true",
                        help="one round of each run, a smaller TUI source and map")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of each timed comparison, the best kept (default 2)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--target-dir", default=None,
                        help="where the restore target's backing file lives (default: the "
                             "work folder)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (may be given again; default: all)")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    rounds = 1 if args.quick else args.rounds
    os.chdir(REPO)
    table = Table()
    print(f"== {args.size // MiB} MiB mixed-content loop device, best of {rounds}, "
          f"{len(os.sched_getaffinity(0))} cores", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-throughput-") as work, \
            ExitStack() as stack:
        compile_bytecode()
        disk = os.path.join(work, "mixed.disk")
        make_mixed_disk(disk, args.size)
        device = stack.enter_context(loop_device(disk, read_only=True))
        if "imaging" in parts:
            imaging(table, device, work, args.size, rounds)
        if "restore" in parts:
            restoring(table, disk, device, work, args.size, rounds, args.target_dir or work)
        if "presenters" in parts:
            presenters(table, work, rounds, args.quick)
        if "used" in parts:
            used_blocks(table, work, 1 << 30 if args.quick else 2 << 30)
        scale = scaling(device, work, rounds) if "scaling" in parts else []
    table.print()
    if scale:
        print("\n== qcow2 compression by --threads (best of each)")
        for what, figure in scale:
            print(f"  {what:<44} {figure}")


if __name__ == "__main__":
    main()
