"""A job as the app keeps it: the engine's ImageJob, its worker, its outcome and its log.

The imaging itself runs in a Textual thread worker owned by the app, so it keeps running when
its screen is closed; screens only read `progress()` and `snapshot()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual.worker import Worker

from rescue.engine.imaging import ImageJob
from rescue.engine.jobs import Progress
from rescue.engine.rescue import Outcome
from rescue.errors import RescueError


def one_line(error: BaseException) -> str:
    """The one line a user sees for a failed job; unexpected errors name their type."""
    if isinstance(error, RescueError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass
class RunningJob:
    """One imaging job in the app, running or done."""

    job: ImageJob
    title: str
    worker: Worker[Outcome] | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    cancelling: bool = False
    # phase changes and user actions: a few dozen lines per job
    log: list[str] = field(default_factory=list)
    _last_phase: tuple[str, int] | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None or self.error is not None

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if self.outcome is not None:
            return self.outcome.value
        if self.cancelling:
            return "cancelling"
        return "paused" if self.job.control.paused else "running"

    def note(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def poll(self) -> Progress:
        """The job's progress now; phase and pass changes go to the log."""
        progress = self.job.progress()
        phase = (progress.phase, progress.pass_no)
        if phase != self._last_phase and not self.done:
            self._last_phase = phase
            self.note(f"{progress.phase}, pass {progress.pass_no}")
        return progress

    def toggle_pause(self) -> None:
        control = self.job.control
        if control.paused:
            control.resume()
            self.note("resumed")
        else:
            control.pause()
            self.note("paused")

    def cancel(self) -> None:
        """Ask the job to stop; it saves its map and ends as interrupted."""
        if not self.done and not self.cancelling:
            self.cancelling = True
            self.job.control.cancel()
            self.note("cancelling: saving the map")

    def finished(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.note(f"{outcome.value}; map saved to {self.job.request.mapfile_path}")

    def failed(self, error: BaseException) -> None:
        self.error = error
        self.note(f"error: {one_line(error)}")
