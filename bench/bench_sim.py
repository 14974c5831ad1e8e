"""The simulated disk at full size: a 1 TB dead-head model read through `FaultySource.read` alone,
then rescued through the engine into a writer that discards, until the source's tally says
every good byte was read.

The first figure is the simulation's own cost (what a benchmark of the rescue algorithm pays
on top of the algorithm); the second shows what the engine sees on the model: failed reads and
virtual seconds until the last good byte, and the wall time of the run.

Run: python bench/bench_sim.py [--spec sim:size=1T,head=1/4] [--skip-engine]
"""

from __future__ import annotations

import argparse
import time

from common import report, rescue_model

from rescue.engine.rescue import RescueOptions
from rescue.sim.faulty import CHUNK, FaultySource
from rescue.units import human_duration, human_rate, human_size


def good_ranges(source: FaultySource) -> list[tuple[int, int]]:
    ranges, pos = [], 0
    for start, length in [*source.bad_ranges(), (source.size, 0)]:
        if start > pos:
            ranges.append((pos, start - pos))
        pos = start + length
    return ranges


def read_every_good_byte(spec: str) -> tuple[float, float, FaultySource]:
    """Wall and CPU seconds of reading every good byte in 1 MiB reads (the CPU time is the
    steadier figure on a shared machine)."""
    source = FaultySource(spec)
    started, cpu = time.perf_counter(), time.process_time()
    for start, length in good_ranges(source):
        for offset in range(start, start + length, CHUNK):
            source.read(offset, min(CHUNK, start + length - offset))
    return time.perf_counter() - started, time.process_time() - cpu, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="sim:size=1T,head=1/4", help="the model to read")
    parser.add_argument("--skip-engine", action="store_true", help="only FaultySource.read")
    args = parser.parse_args()

    seconds, cpu, source = read_every_good_byte(args.spec)
    tally = source.tally
    report(f"FaultySource.read over every good byte of {args.spec}", [
        ("good bytes", human_size(tally.good_bytes)),
        ("bad ranges", str(len(source.bad_ranges()))),
        ("reads", str(tally.reads)),
        ("wall time", f"{seconds:.1f} s"),
        ("CPU time", f"{cpu:.1f} s"),
        ("speed", human_rate(tally.good_bytes / seconds)),
        ("CPU per read", f"{cpu / tally.reads * 1e6:.1f} us"),
        ("virtual time", human_duration(tally.seconds)),
    ])
    if args.skip_engine:
        return
    # default passes, stopped once every good byte was read (the bytes beside a bad band need
    # trimming: copy passes alone never get them all)
    seconds, source, _ = rescue_model(args.spec, RescueOptions(), until_all_good=True)
    tally = source.tally
    report(f"engine on {args.spec}, until every good byte was read", [
        ("all good read", "yes" if tally.failed_reads_to_all_good is not None else "NO"),
        ("failed reads until then", str(tally.failed_reads_to_all_good)),
        ("virtual time until then", human_duration(tally.seconds_to_all_good)),
        ("reads", f"{tally.reads} ({tally.failed_reads} failed)"),
        ("wall time", f"{seconds:.1f} s"),
    ])


if __name__ == "__main__":
    main()
