"""Rescue against GNU ddrescue on real failure patterns (dead heads, scratches, scattered and
weak sectors), each tool on the same simulated geometry.

rescue reads the `sim:` model itself (rescue/sim) into a writer that keeps nothing. ddrescue
reads a sparse file of the model's size in test mode (`-H` with the model's truth map), so it
fails exactly where the model does. A weak zone, whose sectors fail only their first reads, is
no map, so ddrescue does not run on it (the FUSE fault device fails as the model does, but at
some 25 reads a second it would take hours). ddrescue's reads log is replayed through the model
until its last good byte, so both tools are timed on the same virtual clock.

The figures are read errors (each costs seconds and wears a dying disk) until every good byte
was read and in all, and virtual hours; the ratio is ddrescue's over rescue's.

Run as root: python bench/bench_patterns.py [--quick] [--only NAME] [--no-1t]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

from common import report, rescue_model

from rescue.engine.rescue import RescueOptions
from rescue.formats import mapfile
from rescue.formats.readlog import ReadsLog, load_reads
from rescue.io.reader import Unreadable
from rescue.rangemap import FINISHED, RangeMap
from rescue.sim.faulty import GOOD_READ_RATE, FaultySource, FaultySpec, write_truth_map

HOUR = 3600.0
PUBLISHED_1T_ERRORS = 283  # GNU ddrescue 1.30 on a 1 TB disk with one dead head of four
TERABYTE = "sim:size=1T,head=1/4"


@dataclass(frozen=True)
class Pattern:
    name: str
    spec: str
    quick: str  # the same pattern on a smaller disk
    retries: int = 0  # retry passes for both tools
    ddrescue: bool = True  # its test mode can model the pattern


SCRATCH = "scratch=100M+64k/37M*80"
QUICK_SCRATCH = "scratch=10M+64k/3M*80"
PATTERNS = [
    Pattern("dead-head", "sim:size=4G,head=1/4", "sim:size=256M,head=1/4"),
    Pattern("two-heads", "sim:size=4G,head=1/4,head=2/4", "sim:size=256M,head=1/4,head=2/4"),
    Pattern("eight-heads", "sim:size=8G,head=2/8,zones=24", "sim:size=512M,head=2/8,zones=24"),
    Pattern("scratch", f"sim:size=4G,{SCRATCH}", f"sim:size=256M,{QUICK_SCRATCH}"),
    Pattern("scattered", "sim:size=4G,scatter=300", "sim:size=256M,scatter=300"),
    Pattern("weak-zone", "sim:size=4G,weak=1G+64M", "sim:size=256M,weak=64M+8M", retries=1,
            ddrescue=False),
    Pattern("mixed", f"sim:size=4G,head=3/4,{SCRATCH},scatter=100",
            f"sim:size=256M,head=3/4,{QUICK_SCRATCH},scatter=100"),
]


@dataclass
class Figures:
    """One tool's run on one pattern."""

    errors_to_all_good: int | None
    errors: int
    hours_to_all_good: float | None
    hours: float
    wall: float
    bad_areas: list[tuple[int, int]] | None  # not finished in the final map; None: not compared


def not_finished(rmap: RangeMap, size: int) -> list[tuple[int, int]]:
    """Merged (pos, length) of what a map does not call finished, up to `size` (ddrescue's
    test-mode map stops short of a bad last sector: the rest counts as not finished)."""
    areas: list[tuple[int, int]] = []
    for pos, length, state in [*rmap.areas(), (rmap.size, size - rmap.size, "?")]:
        if state == FINISHED or length <= 0:
            continue
        if areas and areas[-1][0] + areas[-1][1] == pos:
            areas[-1] = (areas[-1][0], areas[-1][1] + length)
        else:
            areas.append((pos, length))
    return areas


def run_rescue(spec: str, retries: int, until_all_good: bool) -> Figures:
    options = RescueOptions(checkpoint_interval=1e9, retries=retries)
    wall, source, rmap = rescue_model(spec, options, until_all_good=until_all_good)
    tally = source.tally
    return Figures(tally.failed_reads_to_all_good, tally.failed_reads,
                   hours(tally.seconds_to_all_good), tally.seconds / HOUR, wall,
                   None if until_all_good else not_finished(rmap, source.size))


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / HOUR


def run_ddrescue(text: str, retries: int, workdir: str) -> Figures:
    """ddrescue in test mode: a sparse file of the model's size read against its truth map
    (`-d` would mean nothing on a sparse file), the image thrown away."""
    spec = FaultySpec.parse(text)
    names = ("input", "truth.map", "reads.log", "out.map")
    infile, truth, reads_log, out_map = (os.path.join(workdir, name) for name in names)
    subprocess.run(["truncate", "-s", str(spec.size), infile], check=True)
    write_truth_map(spec, truth)
    started = time.perf_counter()
    subprocess.run(["ddrescue", "-H", truth, f"-r{retries}", f"--log-reads={reads_log}", "-f",
                    infile, "/dev/null", out_map],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    log = load_reads(reads_log)
    to_all_good, total = replay(log, text)
    final = not_finished(mapfile.load(out_map).rmap, spec.size)
    return Figures(log.read_errors_until_last_good(), log.read_errors(), hours(to_all_good),
                   total / HOUR, wall, final)


def replay(log: ReadsLog, spec: str) -> tuple[float | None, float]:
    """Virtual seconds of ddrescue's reads until its last good byte and in all: its reads
    replayed through the model until every good byte was served (the model's clock, as
    rescue's), the rest counted as failed reads x cost + bytes read / the good read rate.
    A replayed read that ends otherwise than ddrescue's did means the two disks differ."""
    source = FaultySource(spec)
    tally = source.tally
    rest = log.reads
    for index, read in enumerate(log.reads):
        if tally.seconds_to_all_good is not None:
            rest = log.reads[index:]
            break
        try:
            source.read(read.pos, read.size)
            failed = False
        except Unreadable:
            failed = True
        if failed != read.failed:
            raise SystemExit(f"the model and ddrescue disagree on the read of {read.size} "
                             f"bytes at {read.pos:#x}: {spec}")
    else:
        rest = []
    rate = source.spec.rate or GOOD_READ_RATE
    after = sum(r.failed * source.spec.cost + r.copied / rate for r in rest)
    return tally.seconds_to_all_good, tally.seconds + after


def ratio(theirs: float | None, ours: float | None) -> str:
    if theirs is None or ours is None:
        return "n/a"
    return f"{theirs / ours:.1f}x" if ours else ("1.0x" if not theirs else "inf")


def number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def compare(pattern: Pattern, spec: str, workdir: str) -> list[str]:
    """Both tools on one pattern: the table's row."""
    print(f"-- {pattern.name}: {spec}", flush=True)
    ours = run_rescue(spec, pattern.retries, until_all_good=False)
    print(f"   rescue   {ours.errors_to_all_good} errors to all good, {ours.errors} in all, "
          f"{ours.wall:.0f} s", flush=True)
    truth = FaultySource(spec).bad_ranges()
    if not pattern.ddrescue:
        print("   ddrescue not run: its test mode has no sectors that fail only their first "
              "reads", flush=True)
        return [pattern.name, *row(ours), *row(None), "n/a", "n/a", "n/a",
                "yes" if ours.bad_areas == truth else "NO"]
    theirs = run_ddrescue(spec, pattern.retries, workdir)
    print(f"   ddrescue {theirs.errors_to_all_good} errors to all good, {theirs.errors} in all, "
          f"{theirs.wall:.0f} s", flush=True)
    same = ours.bad_areas == theirs.bad_areas == truth
    return [pattern.name, *row(ours), *row(theirs),
            ratio(theirs.errors_to_all_good, ours.errors_to_all_good),
            ratio(theirs.errors, ours.errors), ratio(theirs.hours_to_all_good,
                                                     ours.hours_to_all_good),
            "yes" if same else "NO"]


def row(figures: Figures | None) -> list[str]:
    if figures is None:
        return ["n/a"] * 5
    return [number(figures.errors_to_all_good), str(figures.errors),
            number(figures.hours_to_all_good, 2), f"{figures.hours:.1f}", f"{figures.wall:.0f}"]


HEADER = ["pattern", "r err>good", "r err", "r h>good", "r h", "r wall s",
          "dd err>good", "dd err", "dd h>good", "dd h", "dd wall s",
          "x err>good", "x err", "x h>good", "same map"]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                     for line in [HEADER, *rows])


def terabyte() -> list[tuple[str, str]]:
    print(f"-- 1 TB: {TERABYTE}, rescue until every good byte was read", flush=True)
    ours = run_rescue(TERABYTE, 0, until_all_good=True)
    return [("model", TERABYTE),
            ("rescue: errors until every good byte read", number(ours.errors_to_all_good)),
            ("rescue: virtual hours until then", number(ours.hours_to_all_good, 2)),
            ("rescue: wall seconds", f"{ours.wall:.0f}"),
            ("GNU ddrescue 1.30, published", f"{PUBLISHED_1T_ERRORS} errors"),
            ("ratio (ddrescue 1.30 / rescue)",
             ratio(PUBLISHED_1T_ERRORS, ours.errors_to_all_good)),
            ("GNU ddrescue 1.27 here", "not run: scraping 256 GiB of bad sectors one at a "
                                       "time takes hours")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each pattern on a smaller disk")
    parser.add_argument("--only", metavar="NAME", choices=[p.name for p in PATTERNS],
                        help="run one pattern only")
    parser.add_argument("--no-1t", action="store_true", help="skip the 1 TB dead-head model")
    args = parser.parse_args()
    machine = [("cores", str(os.cpu_count())), ("date", time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime())),
               ("ddrescue", subprocess.run(["ddrescue", "--version"], capture_output=True,
                                           text=True).stdout.splitlines()[0])]
    report("machine", machine)
    rows = []
    for pattern in PATTERNS:
        if args.only in (None, pattern.name):
            with tempfile.TemporaryDirectory(prefix="bench-patterns-") as workdir:
                rows.append(compare(pattern, pattern.quick if args.quick else pattern.spec,
                                    workdir))
    print("\n== read errors (err) and virtual hours (h), until every good byte was read "
          "(>good) and in all; r = rescue, dd = GNU ddrescue, x = ddrescue / rescue")
    print(table(rows))
    print("virtual time: failed reads x 2 s + bytes read / 150 MB/s (+ a weak zone's 0.05 s "
          "per read); ddrescue's reads replayed through the model")
    print("same map: both final maps and the truth have the same bad areas, to the sector "
          "(weak zone: rescue's and the truth)")
    if not args.no_1t:
        report("1 TB, one dead head of four", terabyte())


if __name__ == "__main__":
    main()
