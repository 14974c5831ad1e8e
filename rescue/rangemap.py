"""The single record of what is known about a disk: an interval map of ddrescue's five states.

Areas are kept as two parallel arrays (area starts, one state byte each) so that splitting and
merging are C-speed slice operations and "next area in state S" is `bytearray.find`, which keeps
a map of a million areas fast. Adjacent areas never share a state.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from operator import sub

NON_TRIED = "?"
NON_TRIMMED = "*"
NON_SCRAPED = "/"
BAD = "-"
FINISHED = "+"
STATES = (NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD, FINISHED)
# the recent changes a map remembers for its presenters (spans, neighbours merged); a presenter
# whose last snapshot is older than these redraws everything
JOURNAL_SPANS = 256


def _lengths(starts: array, size: int) -> Iterator[int]:
    """Each area's length: the distance from its start to the next one (or to the end)."""
    return map(sub, chain(islice(starts, 1, None), (size,)), starts)


def _areas(starts: array, states: bytes | bytearray, size: int
           ) -> Iterator[tuple[int, int, str]]:
    # iterators chained in C: a million areas take milliseconds, not a Python loop each
    return zip(starts, _lengths(starts, size), states.decode("ascii"), strict=True)


def _state_bytes(starts: array, states: bytes | bytearray, size: int, begin: int, end: int
                 ) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    i = bisect_right(starts, begin) - 1
    n = len(states)
    while i < n and starts[i] < end:
        area_end = starts[i + 1] if i + 1 < n else size
        counts[chr(states[i])] += min(end, area_end) - max(begin, starts[i])
        i += 1
    return counts


@dataclass(frozen=True)
class MapSnapshot:
    """An immutable copy of the map for presenters; taking one costs two memory copies. It
    carries the map's recent changes, so a presenter redraws only where they fell."""

    size: int
    starts: array
    states: bytes
    totals: dict[str, int]
    version: int = 0
    journal: tuple[tuple[int, int, int], ...] = ()  # (version, begin, end), oldest first
    journal_floor: int = 0  # every change after this version is in the journal
    lineage: object = None  # the map it was taken from

    def changed_since(self, older: MapSnapshot) -> list[tuple[int, int]] | None:
        """The [begin, end) spans outside which this snapshot's states equal `older`'s; None
        when that is not known (another map, or changes the journal no longer holds)."""
        if (self.lineage is None or older.lineage is not self.lineage
                or not self.journal_floor <= older.version <= self.version):
            return None
        return [(begin, end) for version, begin, end in self.journal if version > older.version]

    def areas(self) -> Iterator[tuple[int, int, str]]:
        return _areas(self.starts, self.states, self.size)

    def state_bytes(self, begin: int, end: int) -> dict[str, int]:
        """Bytes of each state inside [begin, end): what a sector-map cell summarises."""
        return _state_bytes(self.starts, self.states, self.size, begin, end)


class RangeMap:
    """States over [0, size); every byte has exactly one state."""

    def __init__(self, size: int, state: str = NON_TRIED) -> None:
        if size <= 0:
            raise ValueError("a range map needs a positive size")
        self.size = size
        self._starts = array("q", [0])
        self._states = bytearray(state.encode())
        self._totals = dict.fromkeys(STATES, 0)
        self._totals[state] = size
        self.version = 0  # bumped on every change so presenters can skip unchanged frames
        self._journal: list[tuple[int, int, int]] = []  # what MapSnapshot.journal copies
        self._journal_floor = 0
        self._journal_seen = 0  # the version of the last snapshot: spans seen are not grown
        self._lineage = object()

    @classmethod
    def from_areas(cls, size: int, areas: Iterable[tuple[int, int, str]]) -> RangeMap:
        """Build from contiguous (pos, length, state) areas covering [0, size) exactly."""
        starts, states = array("q"), bytearray()
        expected = 0
        for pos, length, state in areas:
            if pos != expected or length <= 0 or state not in STATES:
                raise ValueError(f"area at {pos:#x} is not contiguous or has a bad state")
            if not states or states[-1] != ord(state):
                starts.append(pos)
                states.append(ord(state))
            expected += length
        if expected != size:
            raise ValueError(f"areas cover {expected:#x} bytes, not {size:#x}")
        return cls.from_arrays(size, starts, states)

    @classmethod
    def from_arrays(cls, size: int, starts: array, states: bytearray,
                    lengths: Iterable[int] | None = None) -> RangeMap:
        """Adopt ready area arrays (starts ascending from 0, no two neighbours alike). A caller
        that already holds the areas' lengths passes them to spare computing them again."""
        rmap = cls(size)
        rmap._starts, rmap._states = starts, states
        if lengths is None:
            lengths = _lengths(starts, size)
        totals = dict.fromkeys(STATES, 0)
        for length, state in zip(lengths, states.decode("ascii"), strict=True):
            totals[state] += length
        rmap._totals = totals
        return rmap

    def __len__(self) -> int:
        return len(self._states)

    def _end(self, i: int) -> int:
        return self._starts[i + 1] if i + 1 < len(self._starts) else self.size

    def areas(self) -> Iterator[tuple[int, int, str]]:
        """(pos, length, state) for every area, in order."""
        return _areas(self._starts, self._states, self.size)

    def state_bytes(self, begin: int, end: int) -> dict[str, int]:
        return _state_bytes(self._starts, self._states, self.size, begin, end)

    def totals(self) -> dict[str, int]:
        return dict(self._totals)

    def state_at(self, pos: int) -> str:
        return chr(self._states[bisect_right(self._starts, pos) - 1])

    def area_at(self, pos: int) -> tuple[int, int, str]:
        i = bisect_right(self._starts, pos) - 1
        return self._starts[i], self._end(i) - self._starts[i], chr(self._states[i])

    def set(self, pos: int, length: int, state: str) -> None:
        """Give [pos, pos+length) the state, splitting and merging areas as needed."""
        end = min(pos + length, self.size)
        if pos < 0 or pos >= end:
            return
        starts, states = self._starts, self._states
        first = bisect_right(starts, pos) - 1
        last = bisect_right(starts, end - 1) - 1
        for i in range(first, last + 1):
            covered = min(end, self._end(i)) - max(pos, starts[i])
            self._totals[chr(states[i])] -= covered
        self._totals[state] += end - pos
        code = ord(state)
        new_starts = array("q")
        new_states = bytearray()
        if starts[first] < pos:
            new_starts.append(starts[first])
            new_states.append(states[first])
        new_starts.append(pos)
        new_states.append(code)
        last_end = self._end(last)
        if end < last_end:
            new_starts.append(end)
            new_states.append(states[last])
        lo, hi = first, last + 1
        # merge with the neighbours outside the replaced slice
        if lo > 0 and states[lo - 1] == new_states[0]:
            lo -= 1
            new_starts[0] = starts[lo]
        if hi < len(states) and states[hi] == new_states[-1]:
            hi += 1
        merged_starts = array("q", new_starts[:1])
        merged_states = bytearray(new_states[:1])
        for s, st in zip(new_starts[1:], new_states[1:], strict=True):
            if st != merged_states[-1]:
                merged_starts.append(s)
                merged_states.append(st)
        starts[lo:hi] = merged_starts
        states[lo:hi] = merged_states
        self.version += 1
        self._note_change(pos, end)

    def _note_change(self, begin: int, end: int) -> None:
        """Journal [begin, end) as changed at the current version, merged into the last span
        when they touch and no snapshot has seen that span yet (a pass reading forward adds
        one span per snapshot, each only as long as what it read since the one before); past
        JOURNAL_SPANS spans the older half is forgotten."""
        journal = self._journal
        if journal:
            last_version, last_begin, last_end = journal[-1]
            if last_version > self._journal_seen and begin <= last_end and end >= last_begin:
                journal[-1] = (self.version, min(begin, last_begin), max(end, last_end))
                return
        journal.append((self.version, begin, end))
        if len(journal) > JOURNAL_SPANS:
            forget = JOURNAL_SPANS // 2
            self._journal_floor = journal[forget - 1][0]
            del journal[:forget]

    def find(self, states: str, pos: int, forward: bool = True) -> tuple[int, int, str] | None:
        """The nearest area whose state is in `states`, starting at `pos` going forward, or
        ending at `pos` going backward; clipped to `pos`. None when there is none."""
        if forward:
            if pos >= self.size:
                return None
            i = bisect_right(self._starts, pos) - 1
            best = -1
            for st in states:
                j = self._states.find(st.encode(), i)
                if j >= 0 and (best < 0 or j < best):
                    best = j
            if best < 0:
                return None
            begin = max(pos, self._starts[best])
            return begin, self._end(best) - begin, chr(self._states[best])
        if pos <= 0:
            return None
        i = bisect_right(self._starts, pos - 1) - 1
        best = -1
        for st in states:
            j = self._states.rfind(st.encode(), 0, i + 1)
            if j > best:
                best = j
        if best < 0:
            return None
        end = min(pos, self._end(best))
        return self._starts[best], end - self._starts[best], chr(self._states[best])

    def snapshot(self) -> MapSnapshot:
        self._journal_seen = self.version
        return MapSnapshot(self.size, array("q", self._starts), bytes(self._states),
                           dict(self._totals), self.version, tuple(self._journal),
                           self._journal_floor, self._lineage)
