"""Compressed imaging against zstd and qemu-img on a healthy mixed-content loop device.

In one run, caches dropped before each: `rescue image DEV out.qcow2` (zstd level 3),
`rescue image DEV out.img.zst`, `zstd -T0 -3 < DEV > out.zst` and
`qemu-img convert -c -O qcow2 -o compression_type=zstd DEV out.qcow2`. Prints time, size and
ratios against zstd.

Run as root: python bench/bench_formats.py [--size 2G]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from common import REPO, make_mixed_disk, remove, report, rescue_cmd, timed

from rescue.units import parse_size
from tests.fixtures.loop import loop_device

MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    os.chdir(REPO)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-formats-") as workdir:
        disk = os.path.join(workdir, "mixed.disk")
        make_mixed_disk(disk, args.size)
        results: dict[str, tuple[float, int]] = {}
        with loop_device(disk) as device:
            runs = {
                "zstd -T0 -3": ["sh", "-c", f"zstd -q -T0 -3 < {device} > {workdir}/z.zst"],
                "qemu-img convert -c zstd": [
                    "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd",
                    device, f"{workdir}/q.qcow2"],
                "rescue image .qcow2": rescue_cmd("image", device, f"{workdir}/r.qcow2"),
                "rescue image .img.zst": rescue_cmd("image", device, f"{workdir}/r.img.zst"),
            }
            outputs = {"zstd -T0 -3": "z.zst", "qemu-img convert -c zstd": "q.qcow2",
                       "rescue image .qcow2": "r.qcow2", "rescue image .img.zst": "r.img.zst"}
            for name, cmd in runs.items():
                seconds = timed(cmd)
                out = os.path.join(workdir, outputs[name])
                results[name] = (seconds, os.path.getsize(out))
                remove(out)
        base_time, base_size = results["zstd -T0 -3"]
        report(f"healthy {args.size // MiB} MiB mixed-content loop device, zstd level 3", [
            (name, f"{t:6.2f} s  {size / MiB:8.1f} MiB  speed {base_time / t:4.2f}x zstd  "
                   f"size {size / base_size - 1:+.1%} vs zstd")
            for name, (t, size) in results.items()])


if __name__ == "__main__":
    main()
