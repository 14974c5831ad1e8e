"""`rescue image --mode used` against full imaging and `partclone.ext4 -c`, in one run.

A 2 GiB ext4 file system 30 % full (files of mixed content, some deleted so free blocks hold
stale data) on a loop device; caches dropped before each run. Reported: time, bytes read
(used bytes for the used mode) and the ratio used/full, which should stay at or below 0.4.

Run as root: python bench/bench_used.py [--size 2G] [--fill 0.3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

from common import drop_caches, make_mixed_disk, remove, report, rescue_cmd, timed

from rescue.fs.domain import plan_disk
from rescue.fs.partitions import DiskReader
from rescue.units import human_size, parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20
FILE_SIZE = 64 * MiB


def build(image: str, size: int, fill: float, workdir: str) -> None:
    """An ext4 file system `fill` full: mixed-content files copied in through a mount, on a
    disk whose free blocks hold old data (as a used disk's do), not holes that read free."""
    make_mixed_disk(image, size, seed=3)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", image], check=True)  # keep old data
    content = os.path.join(workdir, "content.bin")
    make_mixed_disk(content, FILE_SIZE, seed=7)
    mnt = tempfile.mkdtemp(dir=workdir)
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    try:
        for i in range(int(size * fill // FILE_SIZE) + 2):
            target = os.path.join(mnt, f"dir{i % 4}", f"file{i}.bin")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(content, "rb") as src, open(target, "wb") as dst:
                dst.write(f"{i}".encode() * 7)
                dst.write(src.read())
        for i in range(0, int(size * fill // FILE_SIZE) + 2, 8):  # free, stale blocks
            os.unlink(os.path.join(mnt, f"dir{i % 4}", f"file{i}.bin"))
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)
        os.unlink(content)


def timed_rescue(*args: str) -> tuple[float, float]:
    """(wall seconds, seconds the rescue itself took): the rest is starting Python and
    planning the domain."""
    drop_caches()
    started = time.perf_counter()
    proc = subprocess.run(rescue_cmd(*args, "--json"), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"rescue {' '.join(args)} failed: {proc.stderr[-500:]!r}")
    return wall, json.loads(proc.stdout.splitlines()[-1])["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--fill", type=float, default=0.3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-used-")
    image = os.path.join(workdir, "ext4.img")
    build(image, args.size, args.fill, workdir)
    with DiskReader(image) as reader:
        plan = plan_disk(reader)
    full_out, used_out = os.path.join(workdir, "full.img"), os.path.join(workdir, "used.img")
    pc_out = os.path.join(workdir, "partclone.img")
    with loop_device(image, direct_io=True, read_only=True) as device:
        remove(full_out, used_out)
        full, full_rescue = timed_rescue("image", device, full_out, "--order", "sequential")
        used, used_rescue = timed_rescue("image", device, used_out, "--mode", "used")
        partclone = timed(["partclone.ext4", "-q", "-c", "-s", device, "-O", pc_out])
    report(f"ext4 {human_size(args.size)}, {human_size(plan.used_bytes)} used "
           f"({plan.used_bytes / args.size:.0%})", [
               ("rescue image (full)", f"{full:.2f} s (rescue {full_rescue:.2f} s)"),
               ("rescue image --mode used", f"{used:.2f} s (rescue {used_rescue:.2f} s)"),
               ("partclone.ext4 -c", f"{partclone:.2f} s"),
               ("used / full, wall", f"{used / full:.2f} (target <= 0.40)"),
               ("used / full, rescue", f"{used_rescue / full_rescue:.2f}"),
               ("used / partclone, wall", f"{used / partclone:.2f}"),
           ])
    remove(full_out, used_out, pc_out)
    if not args.workdir:
        subprocess.run(["rm", "-rf", workdir], check=True)


if __name__ == "__main__":
    main()
