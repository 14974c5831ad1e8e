"""Discovery speed: 8 loop devices with GPT tables and file systems, `discover()` against
`lsblk -J -O` (which probes the same devices with libblkid), in one run.

Run as root: python bench/bench_discover.py [--loops 8] [--rounds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import REPO  # noqa: F401  (puts the repository on sys.path)

from rescue.devices.discover import discover
from tests.fixtures.disks import GPT_FILESYSTEMS, GPT_LAYOUT, partitioned_disk


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        disks = [stack.enter_context(partitioned_disk(Path(workdir) / f"d{index}.img",
                                                      GPT_LAYOUT, GPT_FILESYSTEMS))
                 for index in range(args.loops)]
        found = {disk.path: disk for disk in discover()}
        partitions = sum(len(found[disk.device].partitions) for disk in disks)
        ours = median_seconds(discover, args.rounds)
        kernel_only = median_seconds(lambda: discover(probe_signatures=False), args.rounds)
        lsblk = median_seconds(lambda: subprocess.run(["lsblk", "-J", "-O"], check=True,
                                                      capture_output=True), args.rounds)
    print(f"{args.loops} loop devices, {partitions} partitions, median of {args.rounds}:")
    print(f"  discover()                       {ours * 1000:7.1f} ms")
    print(f"  discover(probe_signatures=False) {kernel_only * 1000:7.1f} ms")
    print(f"  lsblk -J -O                      {lsblk * 1000:7.1f} ms "
          f"(discover is {lsblk / ours:.1f}x its speed)")


if __name__ == "__main__":
    main()
