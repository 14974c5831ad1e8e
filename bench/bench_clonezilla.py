"""Restoring a Clonezilla archive onto a loop device: rescue against Clonezilla's own way.

In one run: a GPT disk with one ext4 partition, filled with mixed content (text, random,
zeros, patterns) through the kernel's ext4, is saved as Clonezilla saves it (sfdisk's dump,
`partclone.ext4 -c | gzip` or `| zstd`, split into 64 MiB pieces). Then it is written onto a
loop device by Clonezilla's own steps (`sfdisk < sda-pt.sf`, then `cat pieces | zcat |
partclone.ext4 -r -s - -o /dev/loopNp1`), by `rescue restore --no-verify` (like for like:
partclone does not read back) and by `rescue restore` with its read-back. The set is repeated
`--repeat` times, interleaved, and medians reported; caches are not dropped (the machine is
shared), so every run reads the archive from the page cache.

Run as root: python bench/bench_clonezilla.py [--size 2G] [--fill 1G] [--compression gz]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from contextlib import ExitStack

from common import CHUNK, content, report, rescue_cmd, timed

from rescue.units import parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20
COMPRESS = {"gz": ("gzip -c -1", "zcat"), "zst": ("zstd -q -c -T0", "zstd -dc")}


def saved_archive(work: str, size: int, fill: int, compression: str) -> str:
    """The disk built and saved as Clonezilla saves it; the archive's folder."""
    disk = os.path.join(work, "source.img")
    with open(disk, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", disk], input="label: gpt\n,,\n", text=True, check=True)
    archive = os.path.join(work, "archive")
    os.mkdir(archive)
    with loop_device(disk, partitions=True) as device, ExitStack() as stack:
        part = f"{device}p1"
        subprocess.run(["mkfs.ext4", "-q", "-F", part], check=True)
        mnt = tempfile.mkdtemp(dir=work)
        subprocess.run(["mount", part, mnt], check=True)
        stack.callback(subprocess.run, ["umount", mnt], check=True)
        with open(os.path.join(mnt, "content.bin"), "wb") as f:
            for offset in range(0, fill, CHUNK):
                f.write(content(offset, min(CHUNK, fill - offset), 3))
        stack.close()
        dump = subprocess.run(["sfdisk", "-d", device], capture_output=True, text=True,
                              check=True).stdout
        dump = dump.replace(f"{device}p", "/dev/sda").replace(device, "/dev/sda")
        for name, text in (("disk", "sda\n"), ("parts", "sda1\n"), ("sda-pt.sf", dump),
                           ("clonezilla-img", "")):
            with open(os.path.join(archive, name), "w") as f:
                f.write(text)
        subprocess.run(f"dd if={device} of={archive}/sda-gpt-1st bs=512 count=34 && "
                       f"dd if={device} of={archive}/sda-gpt-2nd bs=512 "
                       f"skip=$(( $(blockdev --getsz {device}) - 33 ))", shell=True,
                       check=True, capture_output=True)
        squeeze = COMPRESS[compression][0]
        subprocess.run(f"partclone.ext4 -c -s {part} -o - -L /dev/null | {squeeze} | "
                       f"split -b 64M - {archive}/sda1.ext4-ptcl-img.{compression}.",
                       shell=True, check=True, capture_output=True)
    os.unlink(disk)
    return archive


def clonezilla_way(archive: str, device: str, compression: str) -> list[str]:
    unpack = COMPRESS[compression][1]
    return ["sh", "-c", f"sfdisk -q {device} < {archive}/sda-pt.sf; partx -a {device}; "
            f"cat {archive}/sda1.ext4-ptcl-img.{compression}.* | {unpack} | "
            f"partclone.ext4 -r -s - -o {device}p1 -L /dev/null; status=$?; "
            f"partx -d {device}; exit $status"]


def check_restored(device: str, fill: int, work: str) -> None:
    """The last restore's file, read by debugfs, is the one written: no figure of a restore
    that wrote something else is printed."""
    subprocess.run(["partx", "-a", device], capture_output=True)
    try:
        out = os.path.join(work, "restored.bin")
        subprocess.run(["debugfs", "-R", f"dump /content.bin {out}", f"{device}p1"],
                       check=True, capture_output=True)
        with open(out, "rb") as f:
            for offset in range(0, fill, CHUNK):
                if f.read(CHUNK) != content(offset, min(CHUNK, fill - offset), 3):
                    raise SystemExit(f"the restored file differs at {offset}")
    finally:
        subprocess.run(["partx", "-d", device], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="the disk's size")
    parser.add_argument("--fill", default="1G", help="data written into its ext4")
    parser.add_argument("--compression", choices=sorted(COMPRESS), default="gz")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the disk and archive live")
    args = parser.parse_args()
    size, fill = parse_size(args.size), parse_size(args.fill)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-cz-") as work:
        archive = saved_archive(work, size, fill, args.compression)
        stored = sum(os.path.getsize(os.path.join(archive, n)) for n in os.listdir(archive))
        backing = os.path.join(work, "target.img")
        with open(backing, "wb") as f:
            f.truncate(size)
        runs: dict[str, list[float]] = {}
        maps = os.path.join(work, "maps")
        with loop_device(backing) as device:
            for _ in range(args.repeat):
                for name, cmd in (
                        ("Clonezilla: sfdisk, zcat | partclone -r",
                         clonezilla_way(archive, device, args.compression)),
                        ("rescue restore --no-verify",
                         rescue_cmd("restore", archive, device, "--yes", "--no-verify",
                                    "--map-dir", maps)),
                        ("rescue restore (read back)",
                         rescue_cmd("restore", archive, device, "--yes", "--map-dir", maps))):
                    subprocess.run(["rm", "-rf", maps])
                    runs.setdefault(name, []).append(timed(cmd, drop=False))
            check_restored(device, fill, work)
    report(f"{args.size} disk, {args.fill} of data in ext4, archive {stored / MiB:.0f} MiB "
           f"({args.compression}), median of {args.repeat}",
           [(name, f"{statistics.median(times):.2f} s") for name, times in runs.items()])


if __name__ == "__main__":
    main()
