"""Where the next bad band lies, learned from the bad areas delimited so far.

A disk with a dead head fails in bands: its platters are laid out serpentine, each head owning
one contiguous band per turn, so the bad bands of one head repeat at a fixed period (the number
of heads times the band length) until the zone ends and the band length changes. A scratched
ring fails the same way at a smaller scale. Once two bad areas of the same length have been
delimited exactly (both edges read to the sector), the next one is predicted at the same
distance; once a period is known in bands, a band of a new length predicts its period from the
same ratio. The copy pass reads every predicted good band and leaves the predicted bad ones for
the end, so the good data of the healthy heads comes first at no read error.

Every prediction follows from the map: the bands it comes from are the exactly delimited bad
areas that the map shows, and a wrong prediction costs no data, only order: a band left for
later is read in the sweeping phase like any skipped area.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Band:
    """A bad area whose both edges were read to the sector: [begin, end)."""

    begin: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.begin


class BandLearner:
    """Observes exactly delimited bad areas in the order the copy pass meets them and predicts
    the next one; forgets the pattern when a band does not fit it."""

    def __init__(self, sector: int) -> None:
        self.sector = sector
        self.bands: list[Band] = []
        self._ratio: Fraction | None = None  # period / band length of the last pattern seen

    def observe(self, begin: int, end: int) -> None:
        """A bad area [begin, end) delimited exactly."""
        band = Band(begin, end)
        if self.bands and band.begin <= self.bands[-1].begin:
            self.bands.clear()  # the pass went back: start over from here
        self.bands.append(band)
        del self.bands[:-2]
        if len(self.bands) == 2:
            first, second = self.bands
            spacing = second.begin - first.begin
            if first.length == second.length and spacing > second.length:
                self._ratio = Fraction(spacing, second.length)

    def forget(self) -> None:
        """The pattern did not hold: predict nothing until two bands agree again."""
        self.bands.clear()
        self._ratio = None

    def period(self) -> int | None:
        """The distance from one bad band to the next, if the bands seen so far tell it."""
        if not self.bands:
            return None
        last = self.bands[-1]
        if len(self.bands) == 2:
            first = self.bands[0]
            spacing = last.begin - first.begin
            if first.length == last.length and spacing > last.length:
                return spacing
        if self._ratio is None:
            return None
        period = self._ratio * last.length
        if period.denominator != 1 or int(period) % self.sector:
            return None
        return int(period)

    def length_hint(self) -> int | None:
        """The length the next band is likely to have: the last one's."""
        return self.bands[-1].length if self.bands else None

    def predict(self, pos: int) -> tuple[int, int] | None:
        """The first predicted bad band that ends after `pos`, as [begin, end)."""
        period = self.period()
        if period is None:
            return None
        last = self.bands[-1]
        turns = max(-(-(pos - last.end + 1) // period), 1)
        begin = last.begin + turns * period
        return begin, begin + last.length


class Predicted:
    """The bands the copy pass left unread because they were predicted bad, kept sorted so
    later passes can tell a predicted band from an area skipped for another reason."""

    def __init__(self) -> None:
        self._begins: list[int] = []
        self._ends: list[int] = []

    def add(self, begin: int, end: int) -> None:
        i = bisect_right(self._begins, begin)
        self._begins.insert(i, begin)
        self._ends.insert(i, end)

    def overlaps(self, begin: int, end: int) -> bool:
        i = bisect_right(self._begins, end - 1) - 1
        return i >= 0 and self._ends[i] > begin

    def forget_after(self, pos: int) -> list[tuple[int, int]]:
        """The prediction went wrong near `pos`: the bands left since are no longer taken as
        bad (they may hold good data). Returns them."""
        keep = bisect_right(self._begins, pos)
        forgotten = list(zip(self._begins[keep:], self._ends[keep:], strict=True))
        del self._begins[keep:], self._ends[keep:]
        return forgotten

    def __len__(self) -> int:
        return len(self._begins)
