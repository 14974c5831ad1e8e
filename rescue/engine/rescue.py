"""The rescue algorithm: GNU ddrescue's copy → trim → scrape → retry passes.

Copying reads the easy data first and stays away from bad areas: on a read error the failed
cluster becomes non-trimmed and the reader skips ahead, doubling the skip on each further error;
a reverse pass then finds the far edges of the skipped areas and a third pass reads what is left
without skipping. Trimming reads sector by sector inward from both edges of each non-trimmed
area, scraping reads what remains sector by sector, and retry passes go over the bad sectors.

Beyond ddrescue: after a run of good reads the copy size grows (up to `max_read`) so a healthy
disk streams at full speed; a failed large read is re-read in clusters, so in the copy passes no
sector is read more than twice. Adjacent non-trimmed clusters merge in the map, so trimming one
long bad area costs two failing reads, not two per cluster.

Durability: data goes to the writer before the map says '+', and the map is saved only after
`writer.sync()`, so the saved map never claims data that is not on disk.

A source that goes away is not a bad disk: after a run of failed reads the source is asked
whether it is still there (its device node, size, backing file) and a sector it read before is
read again, since a bad disk still reads its good sectors and a vanished one reads nothing. When
it is gone the rescue stops at once, and the failures since the source last proved alive are
taken back, so those areas are read again on resume instead of being scraped now as bad.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from rescue.engine.jobs import JobControl, Phase, Progress, RateMeter
from rescue.errors import DestinationError, ExitCode, SourceLostError, UsageError
from rescue.formats.base import ImageWriter
from rescue.formats.mapfile import Mapfile, MapSaveError
from rescue.formats.readlog import ReadObserver, phase_text
from rescue.io.reader import Unreadable
from rescue.io.source import Source
from rescue.rangemap import (
    BAD,
    FINISHED,
    NON_SCRAPED,
    NON_TRIED,
    NON_TRIMMED,
    STATES,
    MapSnapshot,
    RangeMap,
)

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


class Outcome(Enum):
    """How an imaging job ended; its value is the word every presenter shows."""

    RESCUED = "rescued"  # every byte of the domain read
    UNREADABLE = "unreadable"  # finished; some sectors could not be read
    TIMEOUT = "timeout"  # nothing read for --timeout seconds
    INTERRUPTED = "interrupted"  # cancelled; map saved

    @property
    def exit_code(self) -> ExitCode:
        """What `rescue image` (and the app, for its first job) exits with."""
        return _OUTCOME_EXIT[self]

    @property
    def finished(self) -> bool:
        """The rescue ran to its end, every sector read or given up on: the image will not
        change again (an interrupted or timed-out one is continued later)."""
        return self in (Outcome.RESCUED, Outcome.UNREADABLE)


_OUTCOME_EXIT = {
    Outcome.RESCUED: ExitCode.OK,
    Outcome.UNREADABLE: ExitCode.UNREADABLE,
    Outcome.TIMEOUT: ExitCode.TIMEOUT,
    Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
}


@dataclass
class RescueOptions:
    cluster_size: int = 64 * 1024
    max_read: int = 1 << 20  # copy reads grow up to this while the disk reads well
    skip_size: int = 64 * 1024
    max_skip_size: int | None = None  # default: 1 % of the size, at least skip_size, <= 1 GiB
    retries: int = 0
    trim: bool = True
    scrape: bool = True
    reverse: bool = False
    min_read_rate: int | None = None  # bytes/s; 0 = auto (a tenth of the average); None = off
    timeout: float | None = None  # seconds without a good read before stopping
    checkpoint_interval: float = 10.0

    def __post_init__(self) -> None:
        """Refuse what no rescue could use, whoever asks (command line or wizard); the
        comparisons are written so that NaN fails them too."""
        if self.cluster_size < 512 or self.cluster_size % 512:
            raise UsageError("--cluster-size must be a multiple of 512")
        if self.skip_size < 512:
            raise UsageError("--skip-size must be at least 512")
        if self.max_skip_size is not None and self.max_skip_size < self.skip_size:
            raise UsageError("--max-skip-size must be at least --skip-size")
        if self.retries < 0:
            raise UsageError("--retries must not be negative")
        if self.min_read_rate is not None and self.min_read_rate < 0:
            raise UsageError("--min-read-rate must not be negative")
        if self.timeout is not None and not self.timeout >= 1:
            raise UsageError("the timeout must be at least 1")
        if not self.checkpoint_interval >= 0:
            raise UsageError("--checkpoint must not be negative")


class Rescue:
    """One rescue of `source` into `writer`, recorded in `mapfile`, resumable at any point."""

    def __init__(self, source: Source, writer: ImageWriter, mapfile: Mapfile,
                 save_map: Callable[[Mapfile], None], options: RescueOptions | None = None,
                 control: JobControl | None = None, domain: RangeMap | None = None,
                 meter: RateMeter | None = None, observer: ReadObserver | None = None) -> None:
        self.source, self.writer, self.mapfile = source, writer, mapfile
        self.observer = observer  # told of every read and phase (--log-reads, --log-events)
        self.rmap = mapfile.rmap
        self.save_map = save_map
        self.opt = options or RescueOptions()
        self.control = control or JobControl()
        self.domain = domain
        self.sector = source.sector_size
        size = self.rmap.size
        cluster = self.opt.cluster_size
        self.opt.max_read = max(self.opt.max_read // cluster, 1) * cluster
        self.max_skip = self.opt.max_skip_size or min(max(size // 100, self.opt.skip_size), 1 << 30)
        self._outside = self._outside_domain_totals()  # never changes: we never read there
        self.domain_size = size - sum(self._outside.values())
        self._lock = threading.Lock()
        self._phase, self._pass = Phase.of_status(mapfile.current_status), 1
        self._pos = mapfile.current_pos
        self._clock = self.control.clock  # job time: stands still while paused
        self._meter = meter or RateMeter(self._clock.now())  # shared by a job's rescues
        self._ended: float | None = None  # job time when run() returned: progress stays put
        self._slow = _SlowReads()
        self._last_save = time.monotonic()
        self._read_errors = 0
        self._last_good_offset: int | None = None
        self._failures = 0  # reads failed in a row
        self._next_probe = PROBE_AFTER_FAILURES
        self._since_alive: _Journal | None = None  # what failures changed since a sign of life

    # ---- progress, for presenters on other threads -------------------------------------------

    def _outside_domain_totals(self) -> dict[str, int]:
        outside = dict.fromkeys(STATES, 0)
        if self.domain is not None:
            for pos, length, state in self.domain.areas():
                if state != FINISHED:
                    for key, n in self.rmap.state_bytes(pos, pos + length).items():
                        outside[key] += n
        return outside

    def totals(self) -> dict[str, int]:
        """Bytes per state inside the domain (the whole source when there is none)."""
        with self._lock:
            totals = self.rmap.totals()
        return {key: n - self._outside[key] for key, n in totals.items()}

    def progress(self) -> Progress:
        now = self._clock.now() if self._ended is None else self._ended
        totals = self.totals()
        average = self._meter.average(now)
        return Progress(
            size=self.rmap.size, phase=self._phase, pass_no=self._pass, position=self._pos,
            totals=totals, domain_size=self.domain_size,
            current_rate=self._meter.current(now), average_rate=average,
            elapsed=now - self._meter.started, since_last_good=self._meter.since_last(now),
            read_errors=self._read_errors,
            eta=None if self._ended is not None else self.eta(totals, average),
            paused=self.control.paused)

    def eta(self, totals: dict[str, int], copy_rate: float) -> float | None:
        """Seconds for all the work still to come, not only this pass: the untried bytes at
        the copy rate, plus every sector read still to come (trimming, scraping, each retry
        of the bad areas) at the rate sector reads have gone so far. None when some of that
        work has no observed rate to go by."""
        seconds = 0.0
        if totals[NON_TRIED]:
            if copy_rate <= 0:
                return None
            seconds += totals[NON_TRIED] / copy_rate
        sector_bytes = self._sector_bytes_to_come(totals)
        if sector_bytes:
            if self._slow.rate() <= 0:
                return None
            seconds += sector_bytes / self._slow.rate()
        return seconds

    def _sector_bytes_to_come(self, totals: dict[str, int]) -> int:
        """Bytes the trimming, scraping and retry passes still have to read, one sector at a
        time; what the copy passes leave unread is not known yet and counts as nothing."""
        phases = list(Phase)
        done_before = phases.index(self._phase)
        trim = self.opt.trim and done_before <= phases.index(Phase.TRIMMING)
        scrape = self.opt.scrape and done_before <= phases.index(Phase.SCRAPING)
        retries_left = self.opt.retries - (self._pass - 1 if self._phase is Phase.RETRYING
                                           else 0)
        nbytes = totals[NON_TRIMMED] if trim else 0
        nbytes += totals[NON_SCRAPED] if scrape else 0
        return nbytes + totals[BAD] * max(retries_left, 0)

    def snapshot(self) -> MapSnapshot:
        with self._lock:
            return self.rmap.snapshot()

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> Outcome:
        try:
            return self._run()
        finally:
            self._ended = self._clock.now()

    def _run(self) -> Outcome:
        try:
            self._run_passes()
        except _Stop as stop:
            self._checkpoint()
            return stop.outcome
        except SourceLostError as lost:
            self._take_back_failures()
            self._save_after_failure()
            raise SourceLostError(f"{lost}; reconnect it and run the same command again: the "
                                  "rescue resumes from the map") from None
        except DestinationError as error:
            if not isinstance(error, MapSaveError):  # that one has saved what it could
                self._save_after_failure()
            raise
        self._phase, self.mapfile.current_status = Phase.FINISHED, Phase.FINISHED.status
        self._checkpoint()
        rescued = self.totals()[FINISHED] == self.domain_size
        return Outcome.RESCUED if rescued else Outcome.UNREADABLE

    def _run_passes(self) -> None:
        forward = not self.opt.reverse
        status, passno = self.mapfile.current_status, self.mapfile.current_pass
        resume_pos = self.mapfile.current_pos if status == NON_TRIED and passno == 1 else None
        # copying: skip ahead of trouble, then read the skipped areas backwards, then all
        for number, (direction, skipping) in enumerate(
                ((forward, True), (not forward, True), (forward, False)), 1):
            if status == NON_TRIED and number < passno:
                continue
            start = resume_pos if number == 1 else None
            self._copy_pass(number, direction, skipping, start)
        if self.opt.trim:
            self._enter(Phase.TRIMMING, 1)
            self._trim()
        if self.opt.scrape:
            self._enter(Phase.SCRAPING, 1, forward)
            self._sector_pass(NON_SCRAPED, forward)
        for retry in range(1, self.opt.retries + 1):
            retry_forward = forward if retry % 2 == 0 else not forward
            self._enter(Phase.RETRYING, retry, retry_forward)
            self._sector_pass(BAD, retry_forward)

    def _enter(self, phase: Phase, passno: int, forward: bool = True) -> None:
        if self.observer is not None:
            self.observer.phase(phase_text(phase.status, passno, forward))
        self._phase, self._pass = phase, passno
        self.mapfile.current_status, self.mapfile.current_pass = phase.status, passno
        self._checkpoint()

    # ---- copying -----------------------------------------------------------------------------

    def _copy_pass(self, number: int, forward: bool, skipping: bool, start: int | None) -> None:
        if self._next_block(NON_TRIED, 0, True) is None:
            return
        self._enter(Phase.COPYING, number, forward)
        pos = start if start is not None else (0 if forward else self.rmap.size)
        skip = self.opt.skip_size
        read_size = self.opt.cluster_size
        while True:
            block = self._next_block(NON_TRIED, pos, forward)
            if block is None:
                return
            begin, length, _ = block
            chunk = self._copy_chunk(begin, begin + length, forward, read_size)
            ok, slow = self._copy_read(*chunk)
            pos = chunk[1] if forward else chunk[0]
            if ok and not slow:
                skip = self.opt.skip_size
                read_size = min(read_size * 2, self.opt.max_read)
                continue
            read_size = self.opt.cluster_size
            if skipping:
                pos = self._skip(pos, skip, forward)
                skip = min(skip * 2, self.max_skip)

    def _copy_chunk(self, begin: int, end: int, forward: bool, size: int) -> tuple[int, int]:
        """The next read inside [begin, end): `size` bytes, ends aligned to clusters."""
        cluster = self.opt.cluster_size  # size is a multiple of it, so the chunk is never empty
        if forward:
            return begin, min(end, (begin + size) // cluster * cluster)
        return max(begin, -(-(end - size) // cluster) * cluster), end

    def _copy_read(self, begin: int, end: int) -> tuple[bool, bool]:
        """Read [begin, end) in the copy phase; returns (all read, too slow)."""
        started = self._clock.now()
        if self._read_into_image(begin, end - begin, on_error=None):
            rate = (end - begin) / max(self._clock.now() - started, 1e-6)
            return True, self._too_slow(rate)
        cluster = self.opt.cluster_size
        if end - begin <= cluster:
            self._mark(begin, end - begin, NON_TRIMMED)
            return False, False
        # a failed large read: read it again cluster by cluster, so only the failing clusters
        # become non-trimmed; no sector is read more than twice in the copy phase
        cluster = self.opt.cluster_size
        failed = False
        for offset in range(begin, end, cluster):
            length = min(cluster, end - offset)
            if not self._read_into_image(offset, length, on_error=None):
                self._mark(offset, length, NON_TRIMMED)
                failed = True
        return not failed, False

    def _too_slow(self, rate: float) -> bool:
        minimum = self.opt.min_read_rate
        if minimum is None or self._pass > 2:
            return False
        if minimum == 0:
            return rate < self._meter.average(self._clock.now()) / 10
        return rate < minimum

    def _skip(self, pos: int, skip: int, forward: bool) -> int:
        skip = skip // self.sector * self.sector
        return min(pos + skip, self.rmap.size) if forward else max(pos - skip, 0)

    # ---- trimming, scraping, retrying ----------------------------------------------------------

    def _trim(self) -> None:
        """Each non-trimmed area: sectors inward from the leading edge until one fails, then
        from the trailing edge; the middle is left for scraping."""
        pos = 0
        while (block := self._next_block(NON_TRIMMED, pos, True)) is not None:
            begin, length, _ = block
            end = begin + length
            front = begin
            while front < end and self._read_sector(front, BAD):
                front += self.sector
            front = min(front + self.sector, end)
            back = end
            while back > front and self._read_sector(back - self.sector, BAD):
                back -= self.sector
            back = max(back - self.sector, front)
            if back > front:
                self._mark(front, back - front, NON_SCRAPED)
            pos = end

    def _sector_pass(self, state: str, forward: bool) -> None:
        pos = 0 if forward else self.rmap.size
        while (block := self._next_block(state, pos, forward)) is not None:
            begin, length, _ = block
            offset = begin if forward else begin + length - self.sector
            offset = offset // self.sector * self.sector
            offset = max(offset, begin)
            self._read_sector(offset, BAD)
            pos = min(offset + self.sector, begin + length) if forward else offset

    def _read_sector(self, offset: int, failed_state: str) -> bool:
        length = min(self.sector, self.rmap.size - offset)
        started = self._clock.now()
        good = self._read_into_image(offset, length, on_error=failed_state)
        self._slow.add(length, self._clock.now() - started)
        return good

    # ---- reading and recording ----------------------------------------------------------------

    def _read_into_image(self, offset: int, length: int, on_error: str | None) -> bool:
        """Read, write what was read, record it. On a read error mark `on_error` (if given)."""
        self.control.wait_if_paused()
        if self.control.cancelled.is_set():
            raise _Stop(Outcome.INTERRUPTED)
        self._pos = offset
        self.mapfile.current_pos = offset
        try:
            data = self.source.read(offset, length)
        except Unreadable:
            self._observe(offset, length, good=False)
            self._read_errors += 1
            self._failed_read()
            if on_error is not None:
                self._mark(offset, length, on_error)
            self._check_source()
            self._after_read()
            return False
        self._observe(offset, length, good=True)
        self.writer.write(offset, data)
        self._last_good_offset = offset
        self._meter.add(length, self._clock.now())
        self._source_alive()
        self._mark(offset, length, FINISHED)
        self._after_read()
        return True

    def _mark(self, offset: int, length: int, state: str) -> None:
        with self._lock:
            if self._since_alive is not None:
                self._since_alive.record(self.rmap, offset, offset + length)
            self.rmap.set(offset, length, state)

    # ---- telling a bad disk from a vanished one -----------------------------------------------

    def _failed_read(self) -> None:
        """Count it; the first failure since the source proved alive starts a journal of what
        the failures change, from the map's position now."""
        self._failures += 1
        if self._since_alive is None:
            m = self.mapfile
            self._since_alive = _Journal((m.current_pos, m.current_status, m.current_pass))

    def _check_source(self) -> None:
        """After a run of failed reads: raise SourceLostError if the source is gone. Costs
        nothing while reads succeed, and a few sector reads per thousand failed ones."""
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

    def _rescued_sectors(self) -> list[int]:
        """Up to PROBE_READS sectors read before: the last good read and the first one."""
        first = self.rmap.find(FINISHED, 0, True)
        offsets = (self._last_good_offset, first[0] if first else None)
        found = {o // self.sector * self.sector: None for o in offsets if o is not None}
        return list(found)[:PROBE_READS]

    def _reads_again(self, offset: int) -> bool:
        length = min(self.sector, self.rmap.size - offset)
        try:
            self.source.read(offset, length)
        except Unreadable:
            self._observe(offset, length, good=False)
            return False
        self._observe(offset, length, good=True)
        return True

    def _observe(self, offset: int, length: int, good: bool) -> None:
        if self.observer is not None:
            self.observer.read(offset, length, length if good else 0, 0 if good else length)

    def _source_alive(self) -> None:
        """After a good read (or the failures taken back): nothing to take back, and the next
        failure starts a new run."""
        self._failures = 0
        self._next_probe = PROBE_AFTER_FAILURES
        self._since_alive = None

    def _take_back_failures(self) -> None:
        """Put back the map as it was when the source last proved alive: the areas that
        failed since then were not bad, the source was gone."""
        journal = self._since_alive
        if journal is None:
            return
        with self._lock:
            journal.restore(self.mapfile)
        self._pos, self._pass = self.mapfile.current_pos, self.mapfile.current_pass
        self._phase = Phase.of_status(self.mapfile.current_status)
        self._source_alive()

    def _after_read(self) -> None:
        timeout = self.opt.timeout
        if timeout is not None and self._meter.since_last(self._clock.now()) > timeout:
            raise _Stop(Outcome.TIMEOUT)
        if time.monotonic() - self._last_save >= self.opt.checkpoint_interval:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Make the image durable, then save the map that describes it."""
        self.writer.sync()
        with self._lock:
            self.save_map(self.mapfile)
        self._last_save = time.monotonic()

    def _save_after_failure(self) -> None:
        """Keep the job resumable after the source or destination failed: save the map only
        if the image could still be synced; otherwise the last saved map stays valid."""
        try:
            self.writer.sync()
        except DestinationError:
            return
        with self._lock:
            self.save_map(self.mapfile)

    def _next_block(self, state: str, pos: int, forward: bool) -> tuple[int, int, str] | None:
        """The nearest area in `state` from `pos`, clipped to the domain."""
        while True:
            area = self.rmap.find(state, pos, forward)
            if area is None or self.domain is None:
                return area
            begin, length, found = area
            end = begin + length
            if forward:
                inside = self.domain.find(FINISHED, begin, True)
                if inside is None:
                    return None
                if inside[0] < end:
                    return inside[0], min(end, inside[0] + inside[1]) - inside[0], found
                pos = inside[0]
            else:
                inside = self.domain.find(FINISHED, end, False)
                if inside is None:
                    return None
                inside_end = inside[0] + inside[1]
                if inside_end > begin:
                    first = max(begin, inside[0])
                    return first, inside_end - first, found
                pos = inside_end


@dataclass
class _SlowReads:
    """Sector reads (trimming, scraping, retrying): bytes tried and job time spent, good or
    failed, the rate that work still to come can be estimated at."""

    nbytes: int = 0
    seconds: float = 0.0

    def add(self, nbytes: int, seconds: float) -> None:
        self.nbytes += nbytes
        self.seconds += seconds

    def rate(self) -> float:
        return self.nbytes / self.seconds if self.nbytes and self.seconds > 0 else 0.0


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


class _Stop(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome
