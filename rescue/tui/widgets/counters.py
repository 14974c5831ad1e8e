"""The counters above a sector map, as text that fits 80 columns."""

from __future__ import annotations

from collections.abc import Mapping

from rescue.engine.jobs import Progress
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED
from rescue.units import human_duration, human_percent, human_rate, human_size


def totals_text(totals: Mapping[str, int], size: int) -> str:
    """Two lines: rescued and bad with percentages, then what is still to be read."""
    percent = human_percent(totals[FINISHED], size, 2, of_nothing=0.0)
    return (f"rescued {human_size(totals[FINISHED])} ({percent}%)   "
            f"bad {human_size(totals[BAD])}   of {human_size(size)}\n"
            f"non-tried {human_size(totals[NON_TRIED])}   "
            f"non-trimmed {human_size(totals[NON_TRIMMED])}   "
            f"non-scraped {human_size(totals[NON_SCRAPED])}")


def progress_text(progress: Progress) -> str:
    """The totals of a running job, then its phase, rates, time since the last good read
    and ETA; and how many of the files it reads first are complete, when it has some."""
    first = f"\n{progress.first.headline}" if progress.first is not None else ""
    return (f"{totals_text(progress.totals, progress.domain_size)}\n"
            f"{progress.phase} pass {progress.pass_no} │ "
            f"{human_rate(progress.current_rate)} avg {human_rate(progress.average_rate)} │ "
            f"last good {human_duration(progress.since_last_good)} │ "
            f"ETA {progress.eta_text}{first}")
