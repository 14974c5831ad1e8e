"""Restoring a zstd qcow2 image onto loop devices, against `qemu-img convert -O raw -n`.

In one run, caches dropped before each: a 2 GiB mixed-content disk is imaged with
`rescue image` into a zstd qcow2; then it is written onto a loop device by
`qemu-img convert -O raw -n` and by `rescue restore --no-verify` (like for like: qemu-img does
not read back), by `rescue restore` with its read-back verification, and onto three loop
devices at once. Prints times and the ratios the targets are set in: rescue's speed against
qemu-img's, and each of three targets' throughput against a single target's.

What the machine allows is measured beside it, with the same loop devices: `dd` of zeros
(`oflag=direct conv=fsync`) onto three targets at once against one, and three `qemu-img
convert` runs at once against one. When the three loop devices share a couple of cores (their
copies into the backing files are CPU work), even `dd` cannot keep one target's speed on each,
and rescue's ratio is to be judged against that ceiling.

Fair ground for every run: the targets' backing files are fully allocated and written again
before each run, so no run pays for first-touch page allocation (a sparse tmpfs file allocates
and zeroes pages on the first write to them, and qemu-img punches holes where the image is
zero). The
backing files live in --target-dir, /dev/shm by default: on a shared VM disk the write-back of
three loop devices is bound by that disk (three concurrent `dd oflag=direct conv=fsync` there
take over twice as long as one). `--loop-direct-io` attaches the loop devices with
`--direct-io=on` (loop then skips the backing file's page cache), the same for every tool.
The set of runs is repeated `--repeat` times, interleaved, and medians are reported, because
the machines are shared and noisy.

Run as root: python bench/bench_restore.py [--size 2G] [--repeat 3] [--loop-direct-io]
                                            [--workdir DIR] [--target-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile
from contextlib import ExitStack

from common import REPO, make_mixed_disk, report, rescue_cmd, timed

from rescue.units import parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20
QEMU = "qemu-img convert -O raw -n"
SINGLE = "rescue restore --no-verify"
THREE = "rescue restore 3 targets --no-verify"
DD_ONE = "dd zeros oflag=direct, 1 target"
DD_THREE = "dd zeros oflag=direct, 3 targets at once"
QEMU_THREE = "qemu-img convert, 3 targets at once"


def restore_cmd(image: str, devices: list[str], map_dir: str, *options: str) -> list[str]:
    cmd = rescue_cmd("restore", image, *devices, "--yes", "--map-dir", map_dir, *options)
    # the restore command may not be in the CLI's list yet: add it when missing
    return [cmd[0], "-c", "import sys, rescue.cli as c; c.COMMANDS += tuple(x for x in "
            "('restore',) if x not in c.COMMANDS); raise SystemExit(c.main(sys.argv[1:]))",
            *cmd[3:]]


def at_once(cmds: list[list[str]]) -> list[str]:
    """One command that runs `cmds` in parallel and fails if any of them fails."""
    starts = " ".join(f"{shlex.join(cmd)} & pids+=($!);" for cmd in cmds)
    return ["bash", "-c", f"pids=(); {starts} rc=0; for p in ${{pids[@]}}; do wait $p || rc=1; "
            "done; exit $rc"]


def same_bytes(first: str, second: str, length: int) -> bool:
    return subprocess.run(["cmp", "-n", str(length), first, second],
                          capture_output=True).returncode == 0


def allocate(backings: list[str], size: int) -> None:
    """Give every block of the backing files a written page again, as a real disk has its
    sectors: a page fallocate only reserves is cleared on its first write, and a hole punched
    by the last run (qemu-img unmaps zeros) is allocated again, so without the fill each run
    would find the target in the state the previous tool left it in (qemu-img's time onto
    the same loop device varied from 1.9 s to 7 s by that alone)."""
    for backing in backings:
        subprocess.run(["fallocate", "-l", str(size), backing], check=True)
        subprocess.run(["dd", "if=/dev/zero", f"of={backing}", "bs=4M", f"count={size >> 22}",
                        "conv=notrunc", "status=none"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-direct-io", action="store_true",
                        help="attach the target loop devices with --direct-io=on")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--target-dir", default="/dev/shm",
                        help="where the target loop devices' backing files live")
    args = parser.parse_args()
    os.chdir(REPO)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-restore-") as workdir, \
            tempfile.TemporaryDirectory(dir=args.target_dir, prefix="bench-targets-") as \
            target_dir, ExitStack() as stack:
        disk = os.path.join(workdir, "mixed.disk")
        image = os.path.join(workdir, "mixed.qcow2")
        maps = os.path.join(workdir, "maps")
        make_mixed_disk(disk, args.size)
        source = stack.enter_context(loop_device(disk, read_only=True))
        timed(rescue_cmd("image", source, image), drop=False)
        backings = [os.path.join(target_dir, f"target{index}") for index in range(3)]
        allocate(backings, args.size)
        devices = [stack.enter_context(loop_device(b, direct_io=args.loop_direct_io))
                   for b in backings]
        first = devices[:1]
        count = args.size // (4 * MiB)
        dd = [["dd", "if=/dev/zero", f"of={d}", "bs=4M", f"count={count}", "oflag=direct",
               "conv=fsync", "status=none"] for d in devices]
        qemu = [["qemu-img", "convert", "-O", "raw", "-n", image, d] for d in devices]
        runs = {
            QEMU: (qemu[0], first),
            SINGLE: (restore_cmd(image, first, maps, "--no-verify"), first),
            "rescue restore (verify)": (restore_cmd(image, first, maps), first),
            THREE: (restore_cmd(image, devices, maps, "--no-verify"), devices),
            QEMU_THREE: (at_once(qemu), devices),
            DD_ONE: (dd[0], []),
            DD_THREE: (at_once(dd), []),
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, (cmd, written) in runs.items():
                allocate(backings, args.size)
                seconds[name].append(timed(cmd))
                for device in written:
                    if not same_bytes(disk, device, args.size):
                        raise SystemExit(f"{name}: {device} differs from the source disk")
        median = {name: statistics.median(times) for name, times in seconds.items()}
        size_mib = args.size / MiB
        rows = [(name, f"{median[name]:6.2f} s  {size_mib / median[name]:7.1f} MiB/s per "
                 f"target  (runs: {', '.join(f'{t:.2f}' for t in seconds[name])})")
                for name in runs]
        rows += [("speed vs qemu-img (target >= 1.0x)", f"{median[QEMU] / median[SINGLE]:.2f}x"),
                 ("3 targets, each vs 1 target (target >= 0.8x)",
                  f"{median[SINGLE] / median[THREE]:.2f}x"),
                 ("  the machine's ceiling: dd, 3 targets each vs 1",
                  f"{median[DD_ONE] / median[DD_THREE]:.2f}x"),
                 ("  qemu-img, 3 targets each vs 1", f"{median[QEMU] / median[QEMU_THREE]:.2f}x")]
        loops = "direct-io loop devices" if args.loop_direct_io else "loop devices"
        report(f"restore of a {size_mib:.0f} MiB mixed-content zstd qcow2 onto {loops} "
               f"(median of {args.repeat})", rows)


if __name__ == "__main__":
    main()
