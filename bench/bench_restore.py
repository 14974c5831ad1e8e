"""Restoring a zstd qcow2 image onto loop devices, against `qemu-img convert -O raw -n`.

In one run, caches dropped before each: a 2 GiB mixed-content disk is imaged with
`rescue image` into a zstd qcow2; then it is written onto a loop device by
`qemu-img convert -O raw -n` and by `rescue restore --no-verify` (like for like: qemu-img does
not read back), by `rescue restore` with its read-back verification, and onto three loop
devices at once. Prints times and the ratios the targets are set in: rescue's speed against
qemu-img's, and each of three targets' throughput against a single target's.

The targets' backing files live in --target-dir, /dev/shm by default: on a shared VM disk, the
write-back of three file-backed loop devices is bound by the disk (three concurrent
`dd oflag=direct conv=fsync` runs there take over twice as long as one), which would measure
the machine's disk, not the restore.

Run as root: python bench/bench_restore.py [--size 2G] [--workdir DIR] [--target-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from contextlib import ExitStack

from common import REPO, make_mixed_disk, report, rescue_cmd, timed

from rescue.io.faulty import parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20


def restore_cmd(image: str, devices: list[str], map_dir: str, *options: str) -> list[str]:
    cmd = rescue_cmd("restore", image, *devices, "--yes", "--map-dir", map_dir, *options)
    # the restore command may not be in the CLI's list yet: add it when missing
    return [cmd[0], "-c", "import sys, rescue.cli as c; c.COMMANDS += tuple(x for x in "
            "('restore',) if x not in c.COMMANDS); raise SystemExit(c.main(sys.argv[1:]))",
            *cmd[3:]]


def same_bytes(first: str, second: str, length: int) -> bool:
    return subprocess.run(["cmp", "-n", str(length), first, second],
                          capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=2 << 30)
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
        devices = []
        for index in range(3):
            backing = os.path.join(target_dir, f"target{index}")
            with open(backing, "wb") as f:
                f.truncate(args.size)
            devices.append(stack.enter_context(loop_device(backing)))
        first = devices[:1]
        runs = {
            "qemu-img convert -O raw -n": ["qemu-img", "convert", "-O", "raw", "-n", image,
                                           first[0]],
            "rescue restore --no-verify": restore_cmd(image, first, maps, "--no-verify"),
            "rescue restore (verify)": restore_cmd(image, first, maps),
            "rescue restore 3 targets --no-verify": restore_cmd(image, devices, maps,
                                                                "--no-verify"),
        }
        seconds = {}
        for name, cmd in runs.items():
            seconds[name] = timed(cmd)
            for device in devices if "3 targets" in name else first:
                if not same_bytes(disk, device, args.size):
                    raise SystemExit(f"{name}: {device} differs from the source disk")
        size_mib = args.size / MiB
        rows = [(name, f"{t:6.2f} s  {size_mib / t:7.1f} MiB/s per target") for name, t in
                seconds.items()]
        qemu, single = seconds["qemu-img convert -O raw -n"], seconds["rescue restore --no-verify"]
        three = seconds["rescue restore 3 targets --no-verify"]
        rows += [("speed vs qemu-img (target >= 1.0x)", f"{qemu / single:.2f}x"),
                 ("3 targets, each vs 1 target (target >= 0.8x)", f"{single / three:.2f}x")]
        report(f"restore of a {size_mib:.0f} MiB mixed-content zstd qcow2 onto loop devices",
               rows)


if __name__ == "__main__":
    main()
