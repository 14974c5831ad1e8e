"""Telling a bad disk from a vanished one.

After a run of failed reads the source is asked whether it is still there (its device node,
size, backing file) and a sector it read before is read again, since a bad disk still reads its
good sectors and a vanished one reads nothing. The marks the failures made since the source last
proved alive are journalled, so that when it turns out gone they are taken back and those areas
are read again on resume instead of being scraped as bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rescue.errors import SourceLostError
from rescue.formats.mapfile import Mapfile
from rescue.formats.readlog import ReadObserver
from rescue.io.reader import Unreadable
from rescue.io.source import Source
from rescue.rangemap import FINISHED, RangeMap

# After this many reads in a row have failed, check that the source is still there; while they
# go on failing, check again each time their number doubles, and at least every PROBE_SPACING
# failures. A check reads at most PROBE_READS sectors that were read before: all of them
# failing means the source is gone.
PROBE_AFTER_FAILURES = 4
PROBE_SPACING = 1024
PROBE_READS = 2
# With no sector read yet to read again, a check can only ask the source itself; until it
# answers, the failures stay ready to be taken back, up to this many marks.
UNDECIDED_MARKS = 1 << 16


@dataclass
class _Journal:
    """The map's areas and position before the marks made since the source last proved alive,
    so a source that turns out gone leaves no trace of its failures."""

    position: tuple[int, str, int]  # current_pos, current_status, current_pass
    areas: list[tuple[int, int, str]] = field(default_factory=list)

    def record(self, rmap: RangeMap, begin: int, end: int) -> None:
        """Remember the areas of [begin, end) as they are now, before a mark changes them."""
        while begin < end:
            start, length, state = rmap.area_at(begin)
            stop = min(start + length, end)
            self.areas.append((begin, stop - begin, state))
            begin = stop

    def restore(self, mapfile: Mapfile) -> None:
        for begin, length, state in reversed(self.areas):
            mapfile.rmap.set(begin, length, state)
        mapfile.current_pos, mapfile.current_status, mapfile.current_pass = self.position


class SourceWatch:
    """Counts the reads failed in a row and journals what they changed in the map; checks the
    source after a run of them. Costs nothing while reads succeed, and a few sector reads per
    thousand failed ones."""

    def __init__(self, source: Source, mapfile: Mapfile,
                 observer: ReadObserver | None = None) -> None:
        self.source, self.mapfile, self.observer = source, mapfile, observer
        self.sector = source.sector_size
        self.last_good: int | None = None  # offset of the last good read
        self._failures = 0
        self._next_probe = PROBE_AFTER_FAILURES
        self._since_alive: _Journal | None = None

    def before_mark(self, begin: int, end: int) -> None:
        """Journal [begin, end) before a mark changes it, while failures are undecided."""
        if self._since_alive is not None:
            self._since_alive.record(self.mapfile.rmap, begin, end)

    def read_failed(self) -> None:
        """Count it; the first failure since the source proved alive starts a journal of what
        the failures change, from the map's position now."""
        self._failures += 1
        if self._since_alive is None:
            m = self.mapfile
            self._since_alive = _Journal((m.current_pos, m.current_status, m.current_pass))

    def read_good(self, offset: int) -> None:
        """After a good read: nothing to take back, and the next failure starts a new run."""
        self.last_good = offset
        self._alive()

    def check(self) -> None:
        """After a run of failed reads: raise SourceLostError if the source is gone."""
        if self._failures < self._next_probe:
            return
        self._next_probe = min(2 * self._failures, self._failures + PROBE_SPACING)
        path = self.source.path
        reason = self.source.vanished()
        if reason is not None:
            raise SourceLostError(f"source {path} vanished: {reason}")
        probes = self._rescued_sectors()
        if probes and not any(self._reads_again(offset) for offset in probes):
            raise SourceLostError(f"source {path} stopped answering: sectors it read before "
                                  "fail now too")
        journal = self._since_alive
        if probes or (journal is not None and len(journal.areas) > UNDECIDED_MARKS):
            self._since_alive = None  # the failures were bad sectors

    def take_back(self) -> bool:
        """Put back the map as it was when the source last proved alive: the areas that
        failed since then were not bad, the source was gone. False when nothing changed."""
        journal = self._since_alive
        if journal is None:
            return False
        journal.restore(self.mapfile)
        self._alive()
        return True

    def _alive(self) -> None:
        self._failures = 0
        self._next_probe = PROBE_AFTER_FAILURES
        self._since_alive = None

    def _rescued_sectors(self) -> list[int]:
        """Up to PROBE_READS sectors read before: the last good read and the first one."""
        first = self.mapfile.rmap.find(FINISHED, 0, True)
        offsets = (self.last_good, first[0] if first else None)
        found = {o // self.sector * self.sector: None for o in offsets if o is not None}
        return list(found)[:PROBE_READS]

    def _reads_again(self, offset: int) -> bool:
        length = min(self.sector, self.mapfile.rmap.size - offset)
        try:
            self.source.read(offset, length)
        except Unreadable:
            good = False
        else:
            good = True
        if self.observer is not None:  # a read of the source like any other, for the logs
            self.observer.read(offset, length, length if good else 0, 0 if good else length)
        return good
