"""A simulated failing disk: bad, slow, flaky and weak areas, dead heads and scratches over
deterministic mixed content, timed on a virtual clock.

It drives the real rescue code through real error paths, for the demo, for tests and for
measuring a rescue against real failure patterns. A spec is `sim:` followed by comma-separated
settings; `bad`, `slow`, `flaky`, `head`, `scratch`, `weak` and `scatter` may repeat:

    sim:size=256M,bad=10M+4k,slow=40M+8M@0.02,flaky=90M+64k*2,rate=64M,map=old.map
    sim:size=1T,head=1/4,scratch=100G+64k/3G*40,weak=700G+2G,scatter=500

- `bad=POS+LEN`        every read touching it fails (EIO)
- `slow=POS+LEN@SEC`   reads touching it take SEC seconds more (really: the source sleeps)
- `flaky=POS+LEN*N`    each sector fails its first N reads, then reads fine
- `rate=BYTES`         overall read speed in bytes per second (0: as fast as possible)
- `gone=BYTES`         once it has served BYTES, every read fails (EIO), as a disk that
                       dropped off the bus while its device node stays
- `map=FILE`           the '-', '*' and '/' areas of a ddrescue mapfile become bad ranges
- `seed=N`             changes the content and where scattered and weak sectors fall
- `head=K/N`           head K (from 0) of N is dead: every band it owns is bad
- `zones=Z`            the heads' layout has Z zones of equal length (default 16)
- `band=OUTER[-INNER]` band length in the first zone, shrinking linearly to INNER in the last
                       (default size/8192 and half of OUTER)
- `scratch=POS+LEN/STRIDE*COUNT`  COUNT bad spots of LEN bytes, STRIDE apart from POS
- `weak=POS+LEN@SEC`   reads touching it cost SEC more on the virtual clock (default 0.05), and
                       one sector in each 16 fails its first 2 reads
- `scatter=COUNT[@POS+LEN]`  COUNT single bad sectors scattered over the disk or the range
- `cost=SEC`           virtual seconds a failed read costs (default 2)

Sizes take K, M, G, T suffixes (powers of 1024) and 0x hex. The geometry is in patterns.py.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from rescue.formats import mapfile
from rescue.io.reader import Unreadable
from rescue.rangemap import BAD, FINISHED, RangeMap
from rescue.sim.content import CHUNK, ContentView, content
from rescue.sim.patterns import Faults
from rescue.sim.spec import PREFIX, SECTOR, FaultySpec

__all__ = ["CHUNK", "DEMO_SPEC", "PREFIX", "SECTOR", "FaultySource", "FaultySpec", "Tally",
           "content", "truth_map", "write_truth_map"]

DEMO_SPEC = ("sim:size=256M,rate=48M,bad=20M+2k,bad=61M+1M,bad=64M+4k,"
             "slow=100M+12M@0.08,bad=150M+160k,flaky=180M+64k*2,bad=200M+8M,bad=230M+512")
GOOD_READ_RATE = 150_000_000  # bytes per virtual second when the spec sets no rate


@dataclass
class Tally:
    """What a source served, on its virtual clock: the figures a benchmark compares rescues
    by. `good_bytes` is the truth (every byte a perfect rescue reads)."""

    good_bytes: int
    reads: int = 0
    failed_reads: int = 0
    seconds: float = 0.0  # virtual: failed reads at their cost, good ones at the read rate
    good_bytes_read: int = 0  # distinct good bytes served at least once
    failed_reads_to_all_good: int | None = None  # failed reads when the last good byte came
    seconds_to_all_good: float | None = None

    def __post_init__(self) -> None:
        self._check_all_good()

    def failed_read(self, seconds: float) -> None:
        self.reads += 1
        self.failed_reads += 1
        self.seconds += seconds

    def good_read(self, seconds: float, good_bytes_read: int) -> None:
        """Count a good read taking `seconds`, after which `good_bytes_read` distinct good bytes
        have been served."""
        self.reads += 1
        self.seconds += seconds
        self.good_bytes_read = good_bytes_read
        self._check_all_good()

    def _check_all_good(self) -> None:
        if self.failed_reads_to_all_good is None and self.good_bytes_read >= self.good_bytes:
            self.failed_reads_to_all_good = self.failed_reads
            self.seconds_to_all_good = self.seconds


class Coverage:
    """Distinct bytes served, as merged intervals: one bisect and an update in place per read
    when reads come in order, so a terabyte of reads costs no more than its reads."""

    def __init__(self) -> None:
        self._starts, self._ends = array("q"), array("q")
        self.total = 0

    def add(self, begin: int, end: int) -> None:
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, begin)  # the first interval touching or after [begin, end)
        j = bisect_right(starts, end, lo=i)  # ... and the first one past it
        if i == j:
            starts.insert(i, begin)
            ends.insert(i, end)
            self.total += end - begin
            return
        low, high = min(begin, starts[i]), max(end, ends[j - 1])
        self.total += high - low - sum(ends[k] - starts[k] for k in range(i, j))
        starts[i:j], ends[i:j] = array("q", [low]), array("q", [high])


class FaultySource:
    """A Source whose failures are scripted; also counts reads so tests can check the
    algorithm never re-reads more than it should, and keeps a `tally` on a virtual clock."""

    physical_sector_size = SECTOR
    sector_size = SECTOR

    def __init__(self, spec: str | FaultySpec,
                 clock: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec if isinstance(spec, FaultySpec) else FaultySpec.parse(spec)
        self.path = spec if isinstance(spec, str) else PREFIX
        self.size = self.spec.size
        self.faults = Faults(self.spec)
        self._sleep = clock  # only rate= and slow= really wait
        self._content = ContentView(self.spec.seed)
        self._good_served = Coverage()
        self.tally = Tally(self.size - self.faults.bad_bytes)
        self.reads: dict[int, int] = {}  # sector -> times read; filled only when tracking
        self.track_reads = False
        self.served = 0  # bytes read successfully

    @property
    def failed_reads(self) -> int:
        return self.tally.failed_reads

    def read(self, offset: int, length: int) -> memoryview:
        length = min(length, self.size - offset)
        if length <= 0:
            return memoryview(b"")
        end = offset + length
        if self.track_reads:
            for sector in range(offset // SECTOR, -(-end // SECTOR)):
                self.reads[sector] = self.reads.get(sector, 0) + 1
        slow = self.faults.slow_delay(offset, end)
        wait = slow + (length / self.spec.rate if self.spec.rate else 0.0)
        if wait:
            self._sleep(wait)
        delay = slow + self.faults.weak_delay(offset, end)
        detail = self._failure(offset, end)
        if detail is not None:
            self.tally.failed_read(delay + self.spec.cost)
            raise Unreadable(offset, length, "media", detail)
        self.served += length
        self._good_served.add(offset, end)
        self.tally.good_read(delay + length / (self.spec.rate or GOOD_READ_RATE),
                             self._good_served.total)
        return self._content.read(offset, length)

    def _failure(self, offset: int, end: int) -> str | None:
        if self.spec.gone is not None and self.served >= self.spec.gone:
            return "simulated disk gone"
        return self.faults.failure(offset, end)

    def bad_ranges(self) -> list[tuple[int, int]]:
        """Merged, sorted (pos, length) of the sectors that can never be read."""
        return list(self.faults.bad)

    def bad_sectors(self) -> set[int]:
        """Sectors that can never be read: what a perfect rescue maps as bad. For small disks;
        a large one has `bad_ranges`."""
        return {s for start, length in self.faults.bad
                for s in range(start // SECTOR, -(-(start + length) // SECTOR))}

    def vanished(self) -> None:
        """A simulated disk has no device node or backing file to look at; whether it is gone
        shows only in its reads."""
        return None

    def close(self) -> None:
        """Nothing to release; present so every source closes the same way."""


def truth_map(spec: FaultySpec) -> mapfile.Mapfile:
    """The disk's truth as a finished rescue would map it: bad sectors '-', the rest '+'."""
    areas, pos = [], 0
    for start, length in Faults(spec).bad:
        if start > pos:
            areas.append((pos, start - pos, FINISHED))
        areas.append((start, length, BAD))
        pos = start + length
    if pos < spec.size:
        areas.append((pos, spec.size - pos, FINISHED))
    return mapfile.Mapfile(RangeMap.from_areas(spec.size, areas), current_status=FINISHED)


def write_truth_map(spec: FaultySpec, path: str, command_line: str = "") -> mapfile.Mapfile:
    """Write the truth as a GNU ddrescue mapfile, for `ddrescue --test-mode` on the same
    geometry, and return it; an OSError is the caller's to report."""
    truth = truth_map(spec)
    with open(path, "w", encoding="ascii") as out:
        out.write(mapfile.render(truth, command_line))
    return truth
