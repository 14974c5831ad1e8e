"""`rescue extract` of a folder from a zstd-compressed qcow2 image vs `cp -a` from the
kernel-mounted original file system, both from cold caches, in one run.

The folder holds mixed content (text, random, zeros, patterns) in large and small files, is
written by the kernel's ext4 driver, and imaged with `rescue image` (qcow2, zstd clusters).

Run as root: python bench/bench_extract.py [--size 500M] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from common import REPO, drop_caches, report, timed

from rescue.sim.faulty import content
from rescue.units import human_rate, human_size, parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20
SMALL_FILES = 400  # 16 KiB each: per-file costs count too
SMALL_SIZE = 16 << 10
BIG_SIZE = 8 * MiB
# `rescue` with the explore commands registered, whether or not the CLI lists them yet
RESCUE = [sys.executable, "-c", "import sys, rescue.cli as c\n"
          "if 'explore' not in c.COMMANDS: c.COMMANDS += ('explore',)\n"
          "raise SystemExit(c.main(sys.argv[1:]))"]


def make_folder(root: str, size: int) -> None:
    os.makedirs(os.path.join(root, "small"))
    offset = 0
    for index in range(SMALL_FILES):
        with open(os.path.join(root, "small", f"note-{index:04d}.txt"), "wb") as f:
            f.write(content(offset, SMALL_SIZE, 7))
        offset += SMALL_SIZE
    index = 0
    while offset < size:
        length = min(BIG_SIZE, size - offset)
        with open(os.path.join(root, f"big-{index:03d}.bin"), "wb") as f:
            f.write(content(offset, length, 7))
        offset += length
        index += 1


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=500 * MiB)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-extract-") as work:
        fs = os.path.join(work, "fs.img")
        with open(fs, "wb") as f:
            f.truncate(args.size * 5 // 4 + 64 * MiB)
        run("mkfs.ext4", "-q", "-F", fs)
        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        with loop_device(fs) as device:
            run("mount", device, mnt)
            try:
                make_folder(os.path.join(mnt, "folder"), args.size)
            finally:
                run("umount", mnt)
        image = os.path.join(work, "fs.qcow2")
        subprocess.run([sys.executable, "-m", "rescue", "image", fs, image], check=True,
                       capture_output=True, cwd=REPO)
        with loop_device(fs, read_only=True) as device:
            run("mount", "-o", "ro,noload", device, mnt)
            try:
                cp = timed(["cp", "-a", os.path.join(mnt, "folder"), os.path.join(work, "cp")])
            finally:
                run("umount", mnt)
        drop_caches()
        ours = timed([*RESCUE, "extract", image, "/folder", os.path.join(work, "ours")],
                     env={**os.environ, "PYTHONPATH": str(REPO)})
        same = subprocess.run(["diff", "-r", os.path.join(work, "cp"),
                               os.path.join(work, "ours", "folder")]).returncode == 0
        stored = os.stat(image).st_blocks * 512
    report(f"extract a {human_size(args.size)} folder ({SMALL_FILES} small files, the rest "
           f"in {human_size(BIG_SIZE)} files)", [
               ("cp -a from the mounted original", f"{cp:6.2f} s  "
                                                    f"{human_rate(args.size / cp)}"),
               ("rescue extract from zstd qcow2", f"{ours:6.2f} s  "
                                                   f"{human_rate(args.size / ours)}"),
               ("ratio (rescue / cp)", f"{ours / cp:.2f}x the time"),
               ("qcow2 image stored", human_size(stored)),
               ("identical content", "yes" if same else "NO"),
           ])
    if not same:
        raise SystemExit("extracted folder differs from the original")


if __name__ == "__main__":
    main()
