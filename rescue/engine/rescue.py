"""The rescue algorithm: the good data first, at the fewest read errors.

On a dying disk every failed read costs seconds and wears the disk, so the passes are ordered by
how likely they are to find good data per read error (after GNU ddrescue 1.30):

1. **Copying, pass 1** reads forward in growing reads. When a read fails, its sectors are read
   one by one up to the first failing one, so the bad area's leading edge is known to the
   sector; a lone bad sector costs no more. A run of bad sectors is a bad area: single-sector
   probes at doubling distances (or at the length of the last band, when one is known) find
   where it ends, and a backward walk delimits its trailing edge to the sector. Bad areas
   delimited exactly teach a `BandLearner` the period of a dead head's bands or a scratch's
   spots; predicted bad bands are left for the end, unread, so the good bands of the healthy
   heads come first at no read error.
2. **Copying, pass 2** reads the areas left behind that border good data, inward from that
   side until a read fails (skipped slow areas, predictions that turned out wrong).
3. **Sweeping** reads what is still untried (predicted bands, the insides of bad areas) from
   both sides until a read fails; what lies between becomes non-trimmed.
4. **Trimming** reads sector by sector inward from each non-trimmed area's edges that border
   good data; **scraping** reads every sector left; **retry** passes go over the bad sectors.

No sector is read more than twice before trimming. `--reverse` and `--no-trim` run ddrescue's
classic copy passes instead (skip ahead of trouble doubling the skip, a reverse pass, a pass
without skipping), since learning needs sector-exact edges read forward.

Durability: data goes to the writer before the map says '+', and the map is saved only after
`writer.sync()`, so the saved map never claims data that is not on disk. A source that goes
away is not a bad disk (`SourceWatch`): the rescue stops at once and the failures since the
source last proved alive are taken back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial

from rescue.engine.copying import SWEEP_PASS, LearningCopy
from rescue.engine.jobs import JobControl, Phase, Progress, RateMeter
from rescue.engine.reads import MapReads, ReadSettings, Stopped, chunk
from rescue.errors import DestinationError, ExitCode, SourceLostError, UsageError
from rescue.formats.base import ImageWriter
from rescue.formats.mapfile import Mapfile, MapSaveError
from rescue.formats.readlog import ReadObserver, phase_text
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

# The initial skip of the classic passes and of a slow area: this fraction of the source, as
# GNU ddrescue 1.30 does (at least the skip_size floor).
SKIP_FRACTION = 32768
MIN_SKIP = 64 * 1024


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
    skip_size: int | None = None  # default: the size / 32768, at least 64 KiB
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
        if self.skip_size is not None and self.skip_size < 512:
            raise UsageError("--skip-size must be at least 512")
        if self.max_skip_size is not None and self.max_skip_size < (self.skip_size or MIN_SKIP):
            raise UsageError("--max-skip-size must be at least --skip-size, and at least 64k")
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
        self.mapfile, self.rmap = mapfile, mapfile.rmap
        self.observer = observer  # told of every read and phase (--log-reads, --log-events)
        self.opt = options or RescueOptions()
        self.control = control or JobControl()
        self.domain = domain
        self.sector = source.sector_size
        size = self.rmap.size
        cluster = self.opt.cluster_size
        self.opt.max_read = max(self.opt.max_read // cluster, 1) * cluster
        auto_skip = max(size // SKIP_FRACTION // self.sector * self.sector, MIN_SKIP)
        skip = self.opt.skip_size or min(auto_skip, self.opt.max_skip_size or auto_skip)
        max_skip = self.opt.max_skip_size or min(max(size // 100, skip), 1 << 30)
        # skips land on sector boundaries: an unaligned read would mark part of a sector
        self.skip_size = max(skip // self.sector, 1) * self.sector
        self.max_skip = max(max_skip // self.sector * self.sector, self.skip_size)
        self._outside = self._outside_domain_totals()  # never changes: we never read there
        self.domain_size = size - sum(self._outside.values())
        settings = ReadSettings(self.opt.checkpoint_interval, self.opt.timeout,
                                self.opt.min_read_rate)
        self.reads = MapReads(source, writer, mapfile, save_map, settings, self.control, meter,
                              domain, observer)
        self.copying = LearningCopy(self.reads, cluster, self.opt.max_read, self.skip_size,
                                    self.max_skip, self._enter)
        self._phase, self._pass = Phase.of_status(mapfile.current_status), 1
        if self._phase is Phase.FINISHED:  # a finished map is run again from the top
            self._phase = Phase.COPYING
        self._ended: float | None = None  # job time when run() returned: progress stays put

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
        with self.reads.lock:
            totals = self.rmap.totals()
        return {key: n - self._outside[key] for key, n in totals.items()}

    def progress(self) -> Progress:
        clock, meter = self.reads.clock, self.reads.meter
        now = clock.now() if self._ended is None else self._ended
        totals = self.totals()
        average = meter.average(now)
        return Progress(
            size=self.rmap.size, phase=self._phase, pass_no=self._pass, position=self.reads.pos,
            totals=totals, domain_size=self.domain_size,
            current_rate=meter.current(now), average_rate=average,
            elapsed=now - meter.started, since_last_good=meter.since_last(now),
            read_errors=self.reads.read_errors,
            eta=self.eta(totals, average),
            paused=self.control.paused)

    def eta(self, totals: dict[str, int], copy_rate: float) -> float | None:
        """Seconds for all the work still to come, not only this pass: the untried bytes at
        the copy rate, plus every sector read still to come (trimming, scraping, each retry
        of the bad areas) at the rate sector reads have gone so far. None when some of that
        work has no observed rate to go by, and once the rescue is finished (nothing is left
        to estimate, though bad sectors may be). Once the job has ended its inputs stand
        still, and so does the estimate."""
        if self._phase is Phase.FINISHED:
            return None
        seconds = 0.0
        if totals[NON_TRIED]:
            if copy_rate <= 0:
                return None
            seconds += totals[NON_TRIED] / copy_rate
        sector_bytes = self._sector_bytes_to_come(totals)
        if sector_bytes:
            sector_rate = self.reads.meter.sector_reads.rate()
            if sector_rate <= 0:
                return None
            seconds += sector_bytes / sector_rate
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
        with self.reads.lock:
            return self.rmap.snapshot()

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> Outcome:
        try:
            return self._run()
        finally:
            self._ended = self.reads.clock.now()

    def _run(self) -> Outcome:
        try:
            self._run_passes()
        except Stopped as stop:
            self.reads.checkpoint()
            return Outcome.TIMEOUT if stop.timeout else Outcome.INTERRUPTED
        except SourceLostError as lost:
            with self.reads.lock:
                if self.reads.watch.take_back():
                    self.reads.pos = self.mapfile.current_pos
                    self._pass = self.mapfile.current_pass
                    self._phase = Phase.of_status(self.mapfile.current_status)
            self.reads.save_after_failure()
            raise SourceLostError(f"{lost}; reconnect it and run the same command again: the "
                                  "rescue resumes from the map") from None
        except DestinationError as error:
            if not isinstance(error, MapSaveError):  # that one has saved what it could
                self.reads.save_after_failure()
            raise
        self._phase, self.mapfile.current_status = Phase.FINISHED, Phase.FINISHED.status
        self.reads.checkpoint()
        rescued = self.totals()[FINISHED] == self.domain_size
        return Outcome.RESCUED if rescued else Outcome.UNREADABLE

    def _run_passes(self) -> None:
        steps = self._steps(not self.opt.reverse)
        status, passno = self.mapfile.current_status, self.mapfile.current_pass
        recorded = [i for i, (s, n, _) in enumerate(steps) if (s, n) == (status, passno)]
        first = recorded[0] if recorded else 0  # a finished map, or another plan's: from the top
        for _, _, step in steps[first:]:
            step()

    def _steps(self, forward: bool) -> list[tuple[str, int, Callable[[], None]]]:
        """The passes in order, each with the map status and pass number it records, so a
        resumed rescue continues with the pass it was in."""
        resume = self.mapfile.current_pos
        steps: list[tuple[str, int, Callable[[], None]]]
        if forward and self.opt.trim:
            steps = [(NON_TRIED, 1, partial(self.copying.learning_pass, resume)),
                     (NON_TRIED, 2, self.copying.bordering_pass),
                     (NON_TRIED, SWEEP_PASS, self.copying.sweep)]
        else:  # ddrescue's classic copy passes: skip, reverse, then all
            steps = [(NON_TRIED, 1, partial(self._copy_pass, 1, forward, True, resume)),
                     (NON_TRIED, 2, partial(self._copy_pass, 2, not forward, True, None)),
                     (NON_TRIED, 3, partial(self._copy_pass, 3, forward, False, None))]
        if self.opt.trim:
            steps.append((NON_TRIMMED, 1, self._trim))
        if self.opt.scrape:
            steps.append((NON_SCRAPED, 1, partial(self._scrape, forward)))
        for retry in range(1, self.opt.retries + 1):
            steps.append((BAD, retry, partial(self._retry, retry, forward == (retry % 2 == 0))))
        return steps

    def _enter(self, phase: Phase, passno: int, forward: bool = True) -> None:
        if self.observer is not None:
            self.observer.phase(phase_text(phase.value, passno, forward))
        self._phase, self._pass = phase, passno
        self.mapfile.current_status, self.mapfile.current_pass = phase.status, passno
        self.reads.checkpoint()

    # ---- copying: ddrescue's classic passes (--reverse, --no-trim) ------------------------------

    def _copy_pass(self, number: int, forward: bool, skipping: bool, start: int | None) -> None:
        """Forward or backward in growing reads; after a failure skip ahead, doubling the skip
        while failures go on. A failed large read is read again cluster by cluster."""
        if self.reads.next_block(NON_TRIED, 0, True) is None:
            return
        self._enter(Phase.COPYING, number, forward)
        pos = start if start is not None else (0 if forward else self.rmap.size)
        skip = self.skip_size
        read_size = self.opt.cluster_size
        while (block := self.reads.next_block(NON_TRIED, pos, forward)) is not None:
            begin, length, _ = block
            part = chunk(begin, begin + length, forward, read_size, self.opt.cluster_size)
            ok, slow = self.reads.read_timed(*part)
            if not ok and part[1] - part[0] > self.opt.cluster_size:
                ok = self.reads.read_clusters(*part, self.opt.cluster_size)
            elif not ok:
                self.reads.mark(part[0], part[1] - part[0], NON_TRIMMED)
            pos = part[1] if forward else part[0]
            if ok and not (slow and number == 1):
                skip = self.skip_size
                read_size = min(read_size * 2, self.opt.max_read)
                continue
            read_size = self.opt.cluster_size
            if skipping:
                skip = skip // self.sector * self.sector
                pos = min(pos + skip, self.rmap.size) if forward else max(pos - skip, 0)
                skip = min(skip * 2, self.max_skip)

    # ---- trimming, scraping, retrying ----------------------------------------------------------

    def _trim(self) -> None:
        """Each non-trimmed area: sectors inward from an edge that borders good data until one
        fails, from the leading edge, then from the trailing one (an edge that borders a bad
        area is not trimmed: the bad area is delimited as a whole); the middle is left for
        scraping."""
        self._enter(Phase.TRIMMING, 1)
        reads = self.reads
        pos = 0
        while (block := reads.next_block(NON_TRIMMED, pos, True)) is not None:
            begin, length, _ = block
            end = begin + length
            front = begin
            if reads.state_at(begin - 1) == FINISHED:
                while front < end and reads.read_sector(front):
                    front += self.sector
                front = min(front + self.sector, end)
            back = end
            if reads.state_at(end) == FINISHED:
                while back > front and reads.read_sector(back - self.sector):
                    back -= self.sector
                back = max(back - self.sector, front)
            if back > front:
                reads.mark(front, back - front, NON_SCRAPED)
            pos = end

    def _scrape(self, forward: bool) -> None:
        self._enter(Phase.SCRAPING, 1, forward)
        self._sector_pass(NON_SCRAPED, forward)

    def _retry(self, number: int, forward: bool) -> None:
        self._enter(Phase.RETRYING, number, forward)
        self._sector_pass(BAD, forward)

    def _sector_pass(self, state: str, forward: bool) -> None:
        pos = 0 if forward else self.rmap.size
        while (block := self.reads.next_block(state, pos, forward)) is not None:
            begin, length, _ = block
            offset = begin if forward else begin + length - 1
            offset = offset // self.sector * self.sector
            offset = max(offset, begin)
            self.reads.read_sector(offset)
            pos = min(offset + self.sector, begin + length) if forward else offset
