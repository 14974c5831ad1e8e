"""`rescue image --base` (an incremental qcow2 overlay) against a full image of the same disk
and against QEMU's `qemu-img convert -B`, in one run.

An ext4 file system half full of mixed-content files is imaged in full (the base); then about
5 % of its files are rewritten and the disk is imaged three ways, caches dropped before each:

- `rescue image DISK full.qcow2` (a new full image),
- `rescue image DISK incr.qcow2 --base base.qcow2` (only the clusters that differ),
- `qemu-img convert -c -o compression_type=zstd -B base.qcow2 -F qcow2 DISK peer.qcow2`
  (QEMU's way of writing only what differs from a backing file).

Reported: wall time, file size and allocated clusters of each, and the ratios. Medians of
`--repeat` interleaved rounds, because the machines are shared.

Run as root: python bench/bench_incremental.py [--size 512M] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile

from common import make_mixed_disk, remove, report, rescue_cmd, timed

from rescue.units import human_size, parse_size

MiB = 1 << 20
FILE_SIZE = 4 * MiB
CHANGED = 0.05  # of the files, rewritten between the base and the new image


def build(disk: str, size: int, workdir: str) -> list[str]:
    """An ext4 file system half full of mixed-content files; their names."""
    make_mixed_disk(disk, size, seed=3)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", disk], check=True)
    names = [f"file{i}.bin" for i in range(size // 2 // FILE_SIZE)]
    fill(disk, workdir, {name: i for i, name in enumerate(names)})
    return names


def fill(disk: str, workdir: str, files: dict[str, int]) -> None:
    """Write each file with the mixed content of its seed, through a mount."""
    content = os.path.join(workdir, "content.bin")
    mnt = tempfile.mkdtemp(dir=workdir)
    subprocess.run(["mount", "-o", "loop", disk, mnt], check=True)
    try:
        for name, seed in files.items():
            make_mixed_disk(content, FILE_SIZE, seed=seed + 100)
            with open(content, "rb") as src, open(os.path.join(mnt, name), "r+b"
                                                  if os.path.exists(os.path.join(mnt, name))
                                                  else "wb") as dst:
                dst.write(src.read())
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)
        os.unlink(content)


def allocated(image: str) -> int:
    done = subprocess.run(["qemu-img", "check", "--output=json", image], capture_output=True,
                          text=True, check=True)
    return int(json.loads(done.stdout)["allocated-clusters"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-incremental-", dir=args.workdir)
    disk, base = os.path.join(work, "disk.raw"), os.path.join(work, "base.qcow2")
    names = build(disk, args.size, work)
    base_seconds = timed(rescue_cmd("image", disk, base))
    changed = names[::round(1 / CHANGED)]
    fill(disk, work, {name: 1000 + i for i, name in enumerate(changed)})
    ways = {
        "full image": lambda out: rescue_cmd("image", disk, out),
        "--base": lambda out: rescue_cmd("image", disk, out, "--base", base),
        "qemu-img convert -B": lambda out: [
            "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd",
            "-B", base, "-F", "qcow2", "-f", "raw", disk, out],
    }
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(args.repeat):
        for way, command in ways.items():
            out = os.path.join(work, "out.qcow2")
            remove(out)
            seconds[way].append(timed(command(out)))
            sizes[way] = (os.stat(out).st_blocks * 512, allocated(out))
    remove(os.path.join(work, "out.qcow2"))
    median = {way: statistics.median(times) for way, times in seconds.items()}
    rows = [("disk", f"{human_size(args.size)} ext4, {len(names)} files of "
                     f"{human_size(FILE_SIZE)}, {len(changed)} rewritten"),
            ("base image", f"{base_seconds:.2f} s, {human_size(os.stat(base).st_blocks * 512)}, "
                           f"{allocated(base)} clusters")]
    rows += [(way, f"{median[way]:.2f} s, {human_size(sizes[way][0])}, "
                   f"{sizes[way][1]} clusters") for way in ways]
    rows += [(f"--base / {peer}", f"time {median['--base'] / median[peer]:.2f}, "
                                  f"size {sizes['--base'][0] / sizes[peer][0]:.3f}")
             for peer in ("full image", "qemu-img convert -B")]
    report(f"incremental image, medians of {args.repeat}", rows)
    remove(disk, base)
    os.rmdir(work)


if __name__ == "__main__":
    main()
