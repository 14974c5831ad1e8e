"""Pass 1, pass 2 and the sweep: the copying that finds the good data first.

Pass 1 reads forward in growing reads. When a read fails, its sectors are read one by one up to
the first run of two failing ones, so a bad area's leading edge is known to the sector and a
lone bad sector costs nothing more. Single-sector probes at doubling distances (or at the
length of the last band, when one is known) find where the bad area ends, and a backward walk
delimits its trailing edge to the sector. Bad areas delimited exactly teach a `BandLearner` the
period of a dead head's bands or a scratch's spots; predicted bad bands are stepped over,
unread. Pass 2 reads the untried areas that border good data, inward from that side (GNU
ddrescue 1.30's pass 2); the sweep reads every untried area left from both sides until a read
fails. No sector is read more than twice before trimming.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable

from rescue.engine.bands import BandLearner, Predicted
from rescue.engine.jobs import Phase
from rescue.engine.reads import MapReads, chunk
from rescue.rangemap import BAD, FINISHED, NON_TRIED, NON_TRIMMED

# The first probe past a bad run, when no band length is known yet; probes double from it.
FIRST_PROBE = 4096
# A walk sector by sector through a failed read saves read errors while its reads are quick;
# once it has taken this long (job seconds: about one failed read), the rest of that read is
# read cluster by cluster, the failing clusters left to trimming, as ddrescue does.
WALK_SECONDS = 2.0
SWEEP_PASS = 3  # the sweeping phase records status '?' (non-tried blocks) with this pass


class LearningCopy:
    """The copy passes of one rescue, with what pass 1 learned for the passes after it."""

    def __init__(self, reads: MapReads, cluster: int, max_read: int, skip_size: int,
                 max_skip: int, enter: Callable[[Phase, int], None]) -> None:
        self.reads, self.enter = reads, enter
        self.cluster, self.max_read = cluster, max_read
        self.skip_size, self.max_skip = skip_size, max_skip
        self.bands = BandLearner(reads.sector)
        self.predicted = Predicted()  # bands pass 1 stepped over as predicted bad
        self.observed: list[int] = []  # where each bad area delimited exactly began
        self.suspects: list[tuple[int, int]] = []  # stepped-over bands the learner doubts
        self._verified: tuple[int | None, int | None] = (None, None)  # the pattern tried

    def learning_pass(self, start: int) -> None:
        """Forward in growing reads; a failed read is delimited to the sector (`_delimit`) and
        bands predicted bad are stepped over, unread."""
        if self.reads.next_block(NON_TRIED, 0, True) is None:
            return
        self.enter(Phase.COPYING, 1)
        self._recall_stepped_over(start)
        self._scan(start, self.reads.rmap.size, learning=True)

    def _scan(self, start: int, stop: int, learning: bool) -> None:
        """Read the untried areas of [start, stop) forward in growing reads. Learning (pass 1):
        step over predicted bands and slow areas, teach the learner. Otherwise (the sweep)
        the first read is the edge sector alone: inside a bad area it costs one error."""
        pos, read_size, skip = start, self.cluster, self.skip_size
        sector = self.reads.sector
        while (block := self.reads.next_block(NON_TRIED, pos, True)) is not None:
            begin, length, _ = block
            if begin >= stop:
                return
            end = min(begin + length, stop)
            band = self.bands.predict(begin) if learning else None
            if band is not None and band[0] <= begin:
                if not self._trusted(begin):
                    pos = begin + sector  # that sector read: the pattern was wrong
                    continue
                self.predicted.add(begin, min(band[1], end))
                pos = band[1]
                continue
            limit = min(end, band[0]) if band is not None else end
            if not learning and begin == pos == start:
                if not self.reads.read_sector(begin):
                    pos = self._after_failed_edge(begin, limit)
                    continue
                begin = pos = begin + sector
                if begin >= limit:
                    continue
            part = chunk(begin, limit, True, read_size, self.cluster)
            ok, slow = self.reads.read_timed(*part)
            if ok and not (slow and learning):
                pos, skip = part[1], self.skip_size
                read_size = min(read_size * 2, self.max_read)
                continue
            read_size = self.cluster
            if ok:  # too slow: come back to it in pass 2
                pos = min(part[1] + skip, self.reads.rmap.size)
                skip = min(skip * 2, self.max_skip)
            else:
                pos = self._delimit(*part, end, learning)

    def _trusted(self, offset: int) -> bool:
        """A pattern is tried once before it is trusted: the first untried sector of the first
        band it predicts is read (one read error when the pattern is right). If that sector
        reads, the pattern was a coincidence and is dropped."""
        pattern = (self.bands.period(), self.bands.length_hint())
        if pattern == self._verified:
            return True
        if self.reads.read_sector(offset):
            self.bands.forget()
            return False
        self._verified = pattern
        return True

    def _after_failed_edge(self, edge: int, limit: int) -> int:
        """The first sector of an area failed: a lone bad sector if the next one reads, else a
        bad area to delimit."""
        sector = self.reads.sector
        if edge + sector >= limit or self.reads.read_sector(edge + sector):
            return edge + 2 * sector
        return self._past_run(edge, edge + 2 * sector, limit, learning=False)

    def _recall_stepped_over(self, start: int) -> None:
        """On resume, the untried areas pass 1 left between good data behind its position are
        the bands it stepped over (or slow areas): they wait for the sweep as before."""
        pos = 0
        while (block := self.reads.next_block(NON_TRIED, pos, True)) is not None:
            begin, length, _ = block
            end = begin + length
            if end > start:
                return
            if begin and end < self.reads.rmap.size and self.reads.state_at(begin - 1) == FINISHED \
                    and self.reads.state_at(end) == FINISHED:
                self.predicted.add(begin, end)
            pos = end

    def _delimit(self, begin: int, end: int, limit: int, learning: bool) -> int:
        """A read of [begin, end) failed. Read it again sector by sector: lone bad sectors cost
        nothing more, a run of two is a bad area (`_past_run`); then the walk goes on with the
        rest of the read. Returns where reading goes on."""
        pos = begin
        while pos < end:
            lead = self._walk_forward(pos, end)
            if lead is None:
                return end
            run_end = lead + 2 * self.reads.sector
            if run_end < end:  # read once by the failed read: probes and walks read it again
                self.reads.mark(run_end, end - run_end, NON_TRIMMED)
            pos = self._past_run(lead, run_end, limit, learning, read_once=end)
            if pos >= limit:
                return limit
        return pos

    def _past_run(self, lead: int, start: int, limit: int, learning: bool,
                  read_once: int = 0) -> int:
        """A bad area begins at `lead`: probes from `start` find where it ends, a backward walk
        delimits that end to the sector, and the learner is told (in pass 1). Returns where
        reading goes on: past the good probe, or `limit` when the area reaches it."""
        probe = self._probe(lead, start, limit)
        if probe is None:
            return limit
        good, floor = probe
        trail = self._walk_backward(floor, good, max(read_once, floor))
        if learning:
            self._learn(lead, trail)
        return good + self.reads.sector

    def _walk_forward(self, begin: int, end: int) -> int | None:
        """Sectors of [begin, end) one by one; the first of two failing in a row, or None
        (also when the walk ran out of time and read the rest by clusters)."""
        failed_before = False
        walk = self._walk_clock()
        for offset in range(begin, end, self.reads.sector):
            if walk():
                self.reads.read_clusters(offset, end, self.cluster)
                return None
            if self.reads.read_sector(offset):
                failed_before = False
            elif failed_before:
                return offset - self.reads.sector
            else:
                failed_before = True
        return None

    def _walk_clock(self) -> Callable[[], bool]:
        """A walk's budget: True once it has taken WALK_SECONDS."""
        clock = self.reads.clock
        started = clock.now()
        return lambda: clock.now() - started > WALK_SECONDS

    def _first_failing(self, offsets: range) -> tuple[int | None, bool]:
        """Read the sectors at `offsets` in order until one fails. Returns (it or None, whether
        the walk ended in time); out of time, the unread rest of `offsets` is read cluster by
        cluster (every caller walks sectors a failed read covered)."""
        walk = self._walk_clock()
        for i, offset in enumerate(offsets):
            if walk():
                rest = offsets[i:]
                low, high = min(rest[0], rest[-1]), max(rest[0], rest[-1])
                self.reads.read_clusters(low, high + self.reads.sector, self.cluster)
                return None, False
            if not self.reads.read_sector(offset):
                return offset, True
        return None, True

    def _probe(self, lead: int, run_end: int, limit: int) -> tuple[int, int] | None:
        """Single-sector reads past a bad run [lead, run_end): first where the last band
        ended, then at doubling distances, until one reads. Returns (the good sector, the end
        of the nearest failed probe below it or of the run), or None when the bad area
        reaches `limit`."""
        offsets = []
        hint = self.bands.length_hint()
        if hint is not None and run_end <= lead + hint < limit:
            offsets.append(lead + hint)
        distance = FIRST_PROBE
        while lead + distance < limit:
            if lead + distance >= run_end and lead + distance not in offsets:
                offsets.append(lead + distance)
            distance *= 2
        failed: list[int] = []
        for offset in offsets:
            if self.reads.read_sector(offset):
                below = [f + self.reads.sector for f in failed if f < offset]
                return offset, max(below, default=run_end)
            failed.append(offset)
        return None

    def _walk_backward(self, floor: int, good: int, read_once: int) -> int | None:
        """Read backward from `good` down to `floor`, the end of the last failed probe: in
        growing reads, the failing one sector by sector from its end; below `read_once` (the
        end of the failed read, read once already) sector by sector. Returns where the bad
        area ends, to the sector, or None when that is not known."""
        pos, size = good, self.cluster
        while pos > floor:
            if pos <= read_once:
                begin = floor
            else:
                begin = max(floor, read_once, pos - size)
                if self.reads.read(begin, pos - begin, None):
                    pos, size = begin, min(size * 2, self.max_read)
                    continue
            failing, in_time = self._first_failing(range(pos - self.reads.sector, begin - 1,
                                                         -self.reads.sector))
            if failing is not None:
                if failing > begin and pos > read_once:  # read once by the failed read
                    self.reads.mark(begin, failing - begin, NON_TRIMMED)
                return failing + self.reads.sector
            if not in_time:
                return None
            pos = begin  # every sector read this time: go on
        return floor if self.reads.state_at(floor - self.reads.sector) == BAD else None

    def _learn(self, lead: int, trail: int | None) -> None:
        """A bad area found in pass 1. When a period was known, the area was not predicted:
        the prediction went wrong nearby, so the bands stepped over in the last two periods
        become suspects (read before the other predicted bands: they may hold good data).
        When both edges are known to the sector, the learner takes the area in."""
        period = self.bands.period()
        if period is not None:
            for band in self.predicted.forget_after(lead - period):
                insort(self.suspects, band)
        exact_lead = self._exact_lead(lead)
        if exact_lead is not None and trail is not None:
            self.bands.observe(exact_lead, trail)
            insort(self.observed, exact_lead)

    def _exact_lead(self, lead: int) -> int | None:
        """Where the bad area at `lead` begins, to the sector, if that can be known: right at
        `lead` when the sector before it reads. Right after a band stepped over as
        predicted, the band moved: read into it from its good side to find where the bad
        area begins (two read errors, and the learner sees the new pattern at once); if the
        band's first sector is bad, the area at `lead` is another one, and stays unknown."""
        sector = self.reads.sector
        if lead == 0 or self.reads.state_at(lead - sector) == FINISHED:
            return lead
        block = self.reads.next_block(NON_TRIED, lead, False)  # clipped to the domain
        if block is None or block[0] + block[1] != lead:
            return None
        begin = block[0]
        if self.reads.state_at(begin - 1) != FINISHED:
            return None
        self.predicted.forget_after(begin - 1)
        if self._read_inward(begin, lead, forward=True) is None:
            return lead
        if self.reads.state_at(begin) == BAD:
            return None
        found = self.reads.rmap.find(BAD, begin, True)
        return found[0] if found is not None and found[0] < lead else None

    def bordering_pass(self) -> None:
        """Areas left untried that border good data, read inward from that side until a read
        fails (ddrescue 1.30's pass 2); predicted bands wait for the sweep."""
        areas = [a for a in self._untried() if not self.predicted.overlaps(*a)]
        if areas:
            self.enter(Phase.COPYING, 2)
        for begin, end in areas:
            self._read_bordering(begin, end)

    def sweep(self) -> None:
        """The areas still untried. Suspects first (bands stepped over near a wrong
        prediction): scanned like pass 1, since good data may lie inside them. Then every
        area left is read inward from both sides until a read fails, what lies between left
        to trimming and scraping: those that border good data first, the ones farthest from
        any bad area seen first of all (a prediction is least sure there: a scratch that
        ended); the insides of bad areas last."""
        areas = self._untried()
        if not areas:
            return
        self.enter(Phase.SWEEPING, SWEEP_PASS)
        for begin, end in areas:
            if self._suspect(begin, end):
                self._scan(begin, end, learning=False)
        for begin, end in sorted(self._untried(), key=self._sweep_order):
            self._read_both_sides(begin, end)

    def _untried(self) -> list[tuple[int, int]]:
        areas = []
        pos = 0
        while (block := self.reads.next_block(NON_TRIED, pos, True)) is not None:
            begin, length, _ = block
            pos = begin + length
            areas.append((begin, pos))
        return areas

    def _suspect(self, begin: int, end: int) -> bool:
        i = bisect_right(self.suspects, (begin, end))
        return any(b < end and e > begin for b, e in self.suspects[max(i - 1, 0):i + 1])

    def _sweep_order(self, area: tuple[int, int]) -> tuple[bool, int]:
        begin, end = area
        bordering = FINISHED in (self.reads.state_at(begin - 1), self.reads.state_at(end))
        i = bisect_right(self.observed, begin)
        near = [abs(self.observed[j] - begin) for j in (i - 1, i) if 0 <= j < len(self.observed)]
        return not bordering, -min(near, default=0)

    def _read_both_sides(self, begin: int, end: int) -> None:
        """Read an untried area inward from both sides until a read fails; the middle
        becomes non-trimmed."""
        edge = self._read_inward(begin, end, forward=True)
        if edge is None:
            return
        begin = edge
        if begin < end:
            edge = self._read_inward(begin, end, forward=False)
            if edge is None:
                return
            end = edge
        if begin < end:
            self.reads.mark(begin, end - begin, NON_TRIMMED)

    def _read_bordering(self, begin: int, end: int) -> None:
        """Read an untried area inward from each side that borders good data until a read
        fails."""
        if self.reads.state_at(begin - 1) == FINISHED:
            edge = self._read_inward(begin, end, forward=True)
            if edge is None:
                return
            begin = edge
        if begin < end and self.reads.state_at(end) == FINISHED:
            self._read_inward(begin, end, forward=False)

    def _read_inward(self, begin: int, end: int, forward: bool) -> int | None:
        """Read [begin, end) from one side: the edge sector, then growing reads until one
        fails; that one sector by sector up to its first failing sector (marked bad, the rest
        of the read non-trimmed). Returns the far edge of what was read, or None when
        everything read."""
        edge = begin if forward else end - self.reads.sector
        if not self.reads.read_sector(edge):  # the edge alone first: a bad area costs one error
            return edge + self.reads.sector if forward else edge
        begin, end = (edge + self.reads.sector, end) if forward else (begin, edge)
        size = self.cluster
        while begin < end:
            first, last = chunk(begin, end, forward, size, self.cluster)
            if self.reads.read(first, last - first, None):
                begin, end = (last, end) if forward else (begin, first)
                size = min(size * 2, self.max_read)
                continue
            sectors = (range(first, last, self.reads.sector) if forward
                       else range(last - self.reads.sector, first - 1, -self.reads.sector))
            failing, in_time = self._first_failing(sectors)
            if failing is not None:
                rest = (failing + self.reads.sector, last) if forward else (first, failing)
                if rest[1] > rest[0]:
                    self.reads.mark(rest[0], rest[1] - rest[0], NON_TRIMMED)
                return last if forward else first
            if not in_time:  # the rest of the read is left to trimming
                return last if forward else first
            begin, end = (last, end) if forward else (begin, first)
        return None
