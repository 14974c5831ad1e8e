"""Job control and progress as data: presenters poll snapshots; the algorithm never prints."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from rescue.formats.mapfile import PHASES
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED
from rescue.units import human_duration

if TYPE_CHECKING:
    from rescue.fs.chosen import FileState


class JobClock:
    """Seconds a job has run: a pause holds the clock, so that elapsed time, rates and the
    time since a good read mean the same paused or not. Job-time 0 is the clock's start."""

    def __init__(self, time_source: Callable[[], float] = time.monotonic) -> None:
        self._source = time_source
        self._lock = threading.Lock()
        self._start = time_source()
        self._held_since: float | None = None
        self._held_total = 0.0

    def now(self) -> float:
        with self._lock:
            moment = self._source() if self._held_since is None else self._held_since
            return moment - self._start - self._held_total

    def hold(self) -> None:
        with self._lock:
            if self._held_since is None:
                self._held_since = self._source()

    def release(self) -> None:
        with self._lock:
            if self._held_since is not None:
                self._held_total += self._source() - self._held_since
                self._held_since = None


class JobControl:
    """Cancel and pause, shared between a job's thread and whoever presents it; its clock
    stands still while the job is paused."""

    def __init__(self, clock: JobClock | None = None) -> None:
        self.cancelled = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._waiting = threading.Event()  # set while the job's thread waits out a pause
        self.clock = clock or JobClock()

    def cancel(self) -> None:
        self.cancelled.set()
        self._running.set()  # a paused job must wake up to notice

    def pause(self) -> None:
        self.clock.hold()
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        self.clock.release()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopped(self) -> bool:
        """Paused, and the read the job was in when paused has ended: from now on nothing
        it shows changes until it resumes."""
        return self._waiting.is_set()

    def wait_if_paused(self) -> None:
        if self._running.is_set():
            return
        self._waiting.set()
        try:
            while not self._running.wait(0.2):
                pass
        finally:
            self._waiting.clear()


class Phase(StrEnum):
    """Where a rescue is, as the map's status line records it (GNU ddrescue's phases; filling
    and generating appear only in maps ddrescue wrote). The values are what --json shows."""

    COPYING = "copying"
    SWEEPING = "sweeping"  # reading the areas the copy passes left (status '?', pass 3)
    TRIMMING = "trimming"
    SCRAPING = "scraping"
    RETRYING = "retrying"
    FILLING = "filling"
    GENERATING = "generating"
    FINISHED = "finished"

    @classmethod
    def of_status(cls, status: str) -> Phase:
        """The phase of a map's status character ('?' copying, '*' trimming, ...)."""
        return cls(PHASES.get(status, cls.COPYING))

    @property
    def status(self) -> str:
        """The map's status character for this phase (sweeping reads non-tried blocks)."""
        if self is Phase.SWEEPING:
            return "?"
        return next(code for code, name in PHASES.items() if name == self.value)


@dataclass(frozen=True)
class FirstProgress:
    """The chosen files at one moment: how many there are and those settled so far, in the
    order they settled (the last stage may still recover bytes of the damaged ones)."""

    stage: str  # "metadata" (still to come), "files", or "done"
    total: int  # files under the chosen paths, 0 until they are looked up
    settled: tuple[FileState, ...]
    notes: tuple[str, ...]  # chosen paths that unreadable metadata may hide

    @property
    def complete(self) -> int:
        return sum(state.complete for state in self.settled)

    @property
    def headline(self) -> str:
        """How many chosen files are complete, in the words every presenter shows."""
        if self.stage == "metadata":
            return "first files: looked up once the metadata is in"
        return f"first files: {self.complete} of {self.total} complete"

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "files": self.total, "complete": self.complete,
                "damaged": len(self.settled) - self.complete,
                "pending": self.total - len(self.settled), "notes": list(self.notes)}


@dataclass(frozen=True)
class Progress:
    """One moment of a rescue, everything a status line or a TUI panel shows."""

    size: int
    phase: Phase
    pass_no: int
    position: int
    totals: dict[str, int]
    domain_size: int
    current_rate: float
    average_rate: float
    elapsed: float
    since_last_good: float
    read_errors: int
    eta: float | None
    paused: bool = False
    first: FirstProgress | None = None  # the chosen files' stage of an image job (--first)

    @property
    def eta_text(self) -> str:
        """The ETA in the words every presenter shows: '-' once the rescue is finished,
        'unknown' while it cannot be estimated."""
        return "-" if self.phase is Phase.FINISHED else human_duration(self.eta)

    @property
    def rescued(self) -> int:
        return self.totals[FINISHED]

    @property
    def bad(self) -> int:
        return self.totals[BAD]

    @property
    def non_tried(self) -> int:
        return self.totals[NON_TRIED]

    @property
    def non_trimmed(self) -> int:
        return self.totals[NON_TRIMMED]

    @property
    def non_scraped(self) -> int:
        return self.totals[NON_SCRAPED]

    def as_dict(self) -> dict[str, object]:
        return {
            "size": self.size, "phase": self.phase.value, "pass": self.pass_no,
            "position": self.position, "rescued": self.rescued, "bad": self.bad,
            "non_tried": self.non_tried, "non_trimmed": self.non_trimmed,
            "non_scraped": self.non_scraped, "domain_size": self.domain_size,
            "current_rate": round(self.current_rate), "average_rate": round(self.average_rate),
            "elapsed": round(self.elapsed, 3), "since_last_good": round(self.since_last_good, 3),
            "read_errors": self.read_errors,
            "eta": None if self.eta is None else round(self.eta, 1), "paused": self.paused,
            **({"first": self.first.as_dict()} if self.first is not None else {}),
        }


@dataclass
class SectorRate:
    """Sector reads (trimming, scraping, retrying, the edges of bad areas): bytes tried and job
    time spent, good or failed, the rate that work still to come can be estimated at."""

    nbytes: int = 0
    seconds: float = 0.0

    def add(self, nbytes: int, seconds: float) -> None:
        self.nbytes += nbytes
        self.seconds += seconds

    def rate(self) -> float:
        return self.nbytes / self.seconds if self.nbytes and self.seconds > 0 else 0.0


@dataclass
class RateMeter:
    """Bytes per second over the last few seconds, and since `started`; and when bytes last
    came. Times are a job clock's. Shared by a job's rescues (the metadata first, the chosen
    files, the rest), with the rate of their sector reads, so each estimates from all."""

    started: float = 0.0
    window: float = 3.0
    total: int = 0
    last: float | None = None  # when bytes were last added
    sector_reads: SectorRate = field(default_factory=SectorRate)
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, nbytes: int, now: float) -> None:
        self.total += nbytes
        self.last = now
        self._samples.append((now, self.total))
        while len(self._samples) > 1 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def current(self, now: float) -> float:
        if not self._samples:
            return 0.0
        first_time, first_total = self._samples[0]
        span = max(now - first_time, 1e-3)
        return (self.total - first_total) / span if now - first_time <= self.window * 2 else 0.0

    def since_last(self, now: float) -> float:
        """Seconds since bytes last came, or since the start when none came yet."""
        return now - (self.started if self.last is None else self.last)

    def average(self, now: float) -> float:
        return self.total / max(now - self.started, 1e-3)
