"""Where a simulated disk fails: the geometry of its failure patterns, and the one answer to
"does a read of [a, b) fail, and how slow is it" that the simulated source and the FUSE fault
device both ask.

A dead head, after H. Wong, "Discovering Hard Disk Physical Geometry through
Microbenchmarking" (2014), the layout GNU ddrescuelog's --make-test models too: the disk is cut
into zones; inside a zone every head owns bands of one length in turn (head 0, 1, .., N-1, then
0 again), and bands shrink from the outer zones to the inner ones. Every band of a dead head is
unreadable, so a dead head leaves a comb of bad bands across the whole disk.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator

from rescue.sim.spec import SECTOR, FaultySpec, band_length

WEAK_GROUP = 16  # one sector in each group of 16 of a weak zone needs retries
WEAK_FAILURES = 2  # reads it fails before it reads fine


class Ranges:
    """Sorted, merged byte ranges with an attribute; answers 'which touch [a, b)' quickly."""

    def __init__(self, ranges: list[tuple[int, int, float]]) -> None:
        merged: list[tuple[int, int, float]] = []
        for start, length, value in sorted(r for r in ranges if r[1] > 0):
            if merged and start <= merged[-1][0] + merged[-1][1]:  # overlaps: one range
                first, span, other = merged[-1]
                end = max(first + span, start + length)
                merged[-1] = (first, end - first, max(value, other))
            else:
                merged.append((start, length, value))
        self.starts = [r[0] for r in merged]
        self.ranges = merged

    def touching(self, begin: int, end: int) -> list[tuple[int, int, float]]:
        if not self.ranges:
            return []
        i = max(bisect_right(self.starts, begin) - 1, 0)
        hits = []
        while i < len(self.ranges) and self.ranges[i][0] < end:
            start, length, value = self.ranges[i]
            if start + length > begin:
                hits.append((start, length, value))
            i += 1
        return hits


def zones(size: int, count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of `count` zones of equal, sector-aligned length; the last takes the rest."""
    length = size // count // SECTOR * SECTOR
    for zone in range(count):
        yield zone * length, size if zone == count - 1 else (zone + 1) * length


def head_bands(spec: FaultySpec) -> Iterator[tuple[int, int]]:
    """(pos, length) of every band of a dead head, zone by zone; a zone's last period may be
    cut short by the zone's end."""
    heads = spec.heads
    if heads is None:
        return
    for zone, (start, end) in enumerate(zones(spec.size, heads.zones)):
        band = band_length(heads, zone)
        for head in heads.dead:
            for pos in range(start + head * band, end, band * heads.count):
                yield pos, min(band, end - pos)


def scratch_spots(spec: FaultySpec) -> Iterator[tuple[int, int]]:
    for pos, length, stride, count in spec.scratch:
        for spot in range(count):
            yield pos + spot * stride, length


def scattered_sectors(spec: FaultySpec) -> Iterator[int]:
    """Each scatter setting's distinct sectors, drawn from the whole sectors of its range with
    a generator that `seed` and the setting's place in the spec fix."""
    for number, (count, pos, length) in enumerate(spec.scatter):
        rng = random.Random(spec.seed * 1_000_003 + number)
        yield from rng.sample(range(-(-pos // SECTOR), (pos + length) // SECTOR), count)


def bad_ranges(spec: FaultySpec) -> list[tuple[int, int]]:
    """Every unreadable byte of the disk as merged, sorted (pos, length) ranges of whole
    sectors: a read touching any byte of a bad sector fails."""
    pieces: list[tuple[int, int]] = [(pos, length) for pos, length, _ in spec.bad]
    pieces += head_bands(spec)
    pieces += scratch_spots(spec)
    pieces += ((sector * SECTOR, SECTOR) for sector in scattered_sectors(spec))
    return merge_sectors(pieces, spec.size)


def merge_sectors(pieces: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Byte ranges widened to whole sectors, clipped to the disk, sorted and merged."""
    merged: list[tuple[int, int]] = []
    for pos, length in sorted(pieces):
        start, end = pos // SECTOR * SECTOR, min(-(-(pos + length) // SECTOR) * SECTOR, size)
        if start >= end:
            continue
        if merged and start <= merged[-1][0] + merged[-1][1]:
            first, span = merged[-1]
            merged[-1] = (first, max(first + span, end) - first)
        else:
            merged.append((start, end - start))
    return merged


def weak_sector(group: int, seed: int) -> int:
    """The sector of 16-sector group `group` that needs retries in a weak zone."""
    mixed = ((group + seed * 0x632BE59BD9B4E019) * 0x9E3779B97F4A7C15) & (1 << 64) - 1
    return group * WEAK_GROUP + (mixed >> 60)


class Faults:
    """What a read of [offset, end) meets: failures (counting the reads of flaky and weak
    sectors, which fail only their first few reads) and delays."""

    def __init__(self, spec: FaultySpec) -> None:
        self.spec = spec
        self.bad = bad_ranges(spec)
        self.bad_bytes = sum(length for _, length in self.bad)
        self._starts = array("q", (pos for pos, _ in self.bad))
        self._ends = array("q", (pos + length for pos, length in self.bad))
        self._slow = Ranges(spec.slow)
        self._flaky = Ranges(spec.flaky)
        self._weak = Ranges(spec.weak)
        self._reads_of: dict[int, int] = {}  # flaky or weak sector -> times read

    def is_bad(self, offset: int, end: int) -> bool:
        """Does [offset, end) touch a sector that never reads."""
        i = bisect_right(self._ends, offset)  # the first bad range ending after offset
        return i < len(self._starts) and self._starts[i] < end

    def slow_delay(self, offset: int, end: int) -> float:
        return sum(delay for _, _, delay in self._slow.touching(offset, end))

    def weak_delay(self, offset: int, end: int) -> float:
        return sum(delay for _, _, delay in self._weak.touching(offset, end))

    def failure(self, offset: int, end: int) -> str | None:
        """Why a read of [offset, end) fails, or None. Every read touching a flaky or weak
        sector counts as one of its reads, also when a bad sector fails the read."""
        failing = False
        for sector, times in self._retried_sectors(offset, end).items():
            seen = self._reads_of.get(sector, 0)
            failing = failing or seen < times
            self._reads_of[sector] = seen + 1
        if self.is_bad(offset, end):
            return "simulated bad sector"
        return "simulated flaky sector" if failing else None

    def _retried_sectors(self, offset: int, end: int) -> dict[int, int]:
        """Sectors of [offset, end) that fail their first reads -> how many reads they fail."""
        needed: dict[int, int] = {}
        for start, span, _ in self._weak.touching(offset, end):
            first = max(offset, start) // SECTOR
            last = -(-min(end, start + span) // SECTOR)
            for group in range(first // WEAK_GROUP, -(-last // WEAK_GROUP)):
                sector = weak_sector(group, self.spec.seed)
                if first <= sector < last:
                    needed[sector] = WEAK_FAILURES
        for start, span, times in self._flaky.touching(offset, end):
            first = max(offset, start) // SECTOR
            last = -(-min(end, start + span) // SECTOR)
            for sector in range(first, last):
                needed[sector] = max(needed.get(sector, 0), int(times))
        return needed
