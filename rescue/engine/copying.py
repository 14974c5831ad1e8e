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

from collections.abc import Callable

from rescue.engine.bands import BandLearner, Predicted
from rescue.engine.jobs import Phase
from rescue.engine.reads import MapReads, chunk
from rescue.rangemap import BAD, FINISHED, NON_TRIED, NON_TRIMMED

# The first probe past a bad run, when no band length is known yet; probes double from it.
FIRST_PROBE = 4096
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

    def learning_pass(self, start: int) -> None:
        """Forward in growing reads; a failed read is delimited to the sector (`_delimit`) and
        bands predicted bad are stepped over, unread."""
        if self.reads.next_block(NON_TRIED, 0, True) is None:
            return
        self.enter(Phase.COPYING, 1)
        self._recall_stepped_over(start)
        pos, read_size, skip = start, self.cluster, self.skip_size
        while (block := self.reads.next_block(NON_TRIED, pos, True)) is not None:
            begin, length, _ = block
            end = begin + length
            band = self.bands.predict(begin)
            if band is not None and band[0] <= begin:
                self.predicted.add(begin, min(band[1], end))
                pos = band[1]
                continue
            limit = min(end, band[0]) if band is not None else end
            part = chunk(begin, limit, True, read_size, self.cluster)
            ok, slow = self.reads.read_timed(*part)
            if ok and not slow:
                pos, skip = part[1], self.skip_size
                read_size = min(read_size * 2, self.max_read)
                continue
            read_size = self.cluster
            if ok:  # too slow: come back to it in pass 2
                pos = min(part[1] + skip, self.reads.rmap.size)
                skip = min(skip * 2, self.max_skip)
            else:
                pos = self._delimit(*part, end)

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

    def _delimit(self, begin: int, end: int, limit: int) -> int:
        """A read of [begin, end) failed. Read it again sector by sector: lone bad sectors cost
        nothing more, a run of two is a bad area, whose end is found with probes and a
        backward walk (teaching the learner when both edges are exact); then the walk goes on
        with the rest of the read. Returns where reading goes on."""
        pos = begin
        while pos < end:
            lead = self._walk_forward(pos, end)
            if lead is None:
                return end
            run_end = lead + 2 * self.reads.sector
            if run_end < end:  # read once by the failed read: probes and walks read it again
                self.reads.mark(run_end, end - run_end, NON_TRIMMED)
            probe = self._probe(lead, run_end, limit)
            if probe is None:
                return limit  # bad up to the next area already known
            good, floor = probe
            trail = self._walk_backward(floor, good, end)
            exact_lead = self._exact_lead(lead)
            if exact_lead is not None and trail is not None:
                self._learn(exact_lead, trail)
            pos = good + self.reads.sector
        return pos

    def _walk_forward(self, begin: int, end: int) -> int | None:
        """Sectors of [begin, end) one by one; the first of two failing in a row, or None."""
        failed_before = False
        for offset in range(begin, end, self.reads.sector):
            if self.reads.read_sector(offset):
                failed_before = False
            elif failed_before:
                return offset - self.reads.sector
            else:
                failed_before = True
        return None

    def _probe(self, lead: int, start: int, limit: int) -> tuple[int, int] | None:
        """Single-sector reads past a bad run at `lead`: first where the last band ended, then
        at doubling distances, until one reads. Returns (the good sector, the end of the last
        failed probe), or None when the bad area reaches `limit`."""
        hint = self.bands.length_hint()
        distance = hint if hint is not None and lead + hint >= start else FIRST_PROBE
        floor = start
        while True:
            offset = lead + distance
            if offset < start:
                distance *= 2
                continue
            if offset >= limit:
                return None
            if self.reads.read_sector(offset):
                return offset, floor
            floor = offset + self.reads.sector
            distance *= 2

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
            for offset in range(pos - self.reads.sector, begin - 1, -self.reads.sector):
                if not self.reads.read_sector(offset):
                    if offset > begin and pos > read_once:  # read once by the failed read
                        self.reads.mark(begin, offset - begin, NON_TRIMMED)
                    return offset + self.reads.sector
            pos = begin  # every sector read this time: go on
        return floor if self.reads.state_at(floor - self.reads.sector) == BAD else None

    def _exact_lead(self, lead: int) -> int | None:
        """The bad area's first sector, if the sector before it is known good. After a band
        stepped over as predicted, the area really began inside that band: read into it from
        the good side to find where (a wrong prediction costs its two reads here)."""
        if lead == 0 or self.reads.state_at(lead - self.reads.sector) == FINISHED:
            return lead
        begin, _, state = self.reads.rmap.area_at(lead - self.reads.sector)
        if state != NON_TRIED or begin == 0 or self.reads.state_at(begin - 1) != FINISHED:
            return None
        self.predicted.forget_after(begin - 1)
        failed = self._read_inward(begin, lead, forward=True)
        return lead if failed is None else failed[0]

    def _learn(self, lead: int, trail: int) -> None:
        """A bad area delimited exactly. One that was not predicted means the prediction went
        wrong nearby: the bands stepped over in the last two periods may hold good data, so
        pass 2 reads them."""
        period = self.bands.period()
        if period is not None:
            self.predicted.forget_after(lead - 2 * period)
        self.bands.observe(lead, trail)

    def bordering_pass(self) -> None:
        """Areas left untried that border good data, read inward from that side until a read
        fails (ddrescue 1.30's pass 2); predicted bands wait for the sweep."""
        self._inward_pass(Phase.COPYING, 2, bordering_only=True)

    def sweep(self) -> None:
        """Every area still untried, read inward from both sides until a read fails; what lies
        between the two failures is left to trimming and scraping."""
        self._inward_pass(Phase.SWEEPING, SWEEP_PASS, bordering_only=False)

    def _inward_pass(self, phase: Phase, number: int, bordering_only: bool) -> None:
        if self.reads.next_block(NON_TRIED, 0, True) is None:
            return
        self.enter(phase, number)
        pos = 0
        while (block := self.reads.next_block(NON_TRIED, pos, True)) is not None:
            begin, length, _ = block
            end = begin + length
            pos = end
            if bordering_only and self.predicted.overlaps(begin, end):
                continue
            after = self.reads.state_at(end) if end < self.reads.rmap.size else None
            before = self.reads.state_at(begin - 1) if begin else None
            if before == FINISHED or not bordering_only:
                failed = self._read_inward(begin, end, forward=True)
                if failed is None:
                    continue
                begin = failed[1]
            if begin < end and (after == FINISHED or not bordering_only):
                failed = self._read_inward(begin, end, forward=False)
                if failed is None:
                    continue
                end = failed[1]
            if not bordering_only and begin < end:
                self.reads.mark(begin, end - begin, NON_TRIMMED)

    def _read_inward(self, begin: int, end: int, forward: bool) -> tuple[int, int] | None:
        """Read [begin, end) from one side: the edge sector, then growing reads until one
        fails; that one sector by sector up to its first failing sector (marked bad, the rest
        of the read non-trimmed). Returns (the failing sector, the far edge of what was read),
        or None when everything read."""
        edge = begin if forward else end - self.reads.sector
        if not self.reads.read_sector(edge):  # the edge alone first: a bad area costs one error
            return edge, edge + self.reads.sector if forward else edge
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
            for offset in sectors:
                if not self.reads.read_sector(offset):
                    rest = (offset + self.reads.sector, last) if forward else (first, offset)
                    if rest[1] > rest[0]:
                        self.reads.mark(rest[0], rest[1] - rest[0], NON_TRIMMED)
                    return offset, last if forward else first
            begin, end = (last, end) if forward else (begin, first)
        return None
