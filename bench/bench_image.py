"""`rescue image` against dd (healthy disk) and GNU ddrescue (faulty disk), in one run.

(a) a healthy loop device of mixed content: `rescue image` to a raw file vs
    `dd bs=4M iflag=direct conv=fsync`; caches dropped before each run.
(b) a real faulty device (FUSE + loop) with bad, slow and flaky ranges: `rescue image` vs
    `ddrescue -d`; time, rescued and bad bytes. Each tool gets a fresh device, so flaky
    sectors fail the same number of times for both.

Run as root: python bench/bench_image.py [--size 2G] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

from common import REPO, make_mixed_disk, remove, report, rescue_cmd, timed

from rescue.formats import mapfile
from rescue.sim.faulty import parse_size
from tests.fixtures.faultdisk import faulty_device
from tests.fixtures.loop import loop_device

MiB = 1 << 20


def healthy(workdir: str, size: int) -> None:
    disk = os.path.join(workdir, "healthy.disk")
    make_mixed_disk(disk, size)
    out = os.path.join(workdir, "healthy.img")
    with loop_device(disk) as device:
        remove(out)
        dd = timed(["dd", f"if={device}", f"of={out}", "bs=4M", "iflag=direct",
                    "conv=fsync", "status=none"])
        remove(out)
        ours = timed(rescue_cmd("image", device, out))
        same = subprocess.run(["cmp", device, out]).returncode == 0
    remove(out)
    os.unlink(disk)
    report(f"healthy {size // MiB} MiB loop device, raw image", [
        ("dd bs=4M iflag=direct", f"{dd:.2f} s  {size / dd / MiB:.0f} MiB/s"),
        ("rescue image", f"{ours:.2f} s  {size / ours / MiB:.0f} MiB/s"),
        ("throughput ratio", f"{dd / ours:.2f}x dd (target >= 0.95)"),
        ("image equals device", str(same)),
    ])


FAULTS = ("sim:bad=16M+4k,bad=0x2800200+512,bad=70M+2M,bad=100M+96k,slow=120M+4M@0.02,"
          "flaky=90M+64k*2")


def faulty(workdir: str) -> None:
    backing = os.path.join(workdir, "faulty.disk")
    make_mixed_disk(backing, 128 * MiB)
    results = {}
    for tool in ("ddrescue", "rescue"):
        out = os.path.join(workdir, f"{tool}.img")
        remove(out)
        with faulty_device(backing, FAULTS) as device:
            if tool == "ddrescue":
                cmd = ["ddrescue", "-d", "-q", device, out, f"{out}.map"]
            else:
                cmd = rescue_cmd("image", device, out)
            seconds = timed(cmd, drop=False, ok_codes=(0, 1))
        totals = mapfile.load(f"{out}.map").rmap.totals()
        results[tool] = (seconds, totals["+"], totals["-"])
        remove(out)
    os.unlink(backing)
    (d_time, d_good, d_bad), (r_time, r_good, r_bad) = results["ddrescue"], results["rescue"]
    report("faulty 128 MiB device (FUSE + loop): bad, slow and flaky ranges", [
        ("ddrescue -d", f"{d_time:.2f} s  rescued {d_good} B  bad {d_bad} B"),
        ("rescue image", f"{r_time:.2f} s  rescued {r_good} B  bad {r_bad} B"),
        ("time ratio", f"{r_time / d_time:.2f}x ddrescue's time (target <= 1.0)"),
        ("rescued bytes", f"{r_good - d_good:+d} vs ddrescue (target >= 0)"),
    ])
    print(json.dumps({"faulty": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--only", choices=("healthy", "faulty"))
    args = parser.parse_args()
    os.chdir(REPO)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-image-") as workdir:
        if args.only != "faulty":
            healthy(workdir, args.size)
        if args.only != "healthy":
            faulty(workdir)


if __name__ == "__main__":
    main()
