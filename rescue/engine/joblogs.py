"""The reads and events logs of one imaging job (`--log-reads`, `--log-events`), in GNU
ddrescue's formats, so a job can be compared with a ddrescue run read by read.

The job's rescues tell the logs of each read and phase (they are their ReadObserver); the job
tells them how the run ended.
"""

from __future__ import annotations

from collections.abc import Callable

from rescue.engine.jobs import Progress
from rescue.engine.rescue import Outcome
from rescue.errors import RescueError
from rescue.formats.readlog import EventsLogWriter, ReadsLogWriter, format_percent

# why a run stopped before its end, in ddrescue's words
_STOPPED = {Outcome.INTERRUPTED: "Interrupted by user", Outcome.TIMEOUT: "Timeout expired"}


class JobLogs:
    """Both logs, either of them optional; `progress` gives the job's rescued percentage."""

    def __init__(self, reads_path: str | None, events_path: str | None, command_line: str,
                 progress: Callable[[], Progress]) -> None:
        self.reads_path, self.events_path = reads_path, events_path
        self._command_line = command_line
        self._progress = progress
        self._reads: ReadsLogWriter | None = None
        self._events: EventsLogWriter | None = None

    @property
    def wanted(self) -> bool:
        return bool(self.reads_path or self.events_path)

    def open(self) -> None:
        """Open the logs asked for (appending), each with its header; if one fails, the
        caller closes what was opened."""
        if self.reads_path:
            self._reads = ReadsLogWriter(self.reads_path, self._command_line)
        if self.events_path:
            self._events = EventsLogWriter(self.events_path, self._command_line)

    def close(self) -> None:
        """Each open log ends with its end time; closing twice does nothing."""
        for log in (self._reads, self._events):
            if log is not None:
                log.close()
        self._reads = self._events = None

    # ---- ReadObserver, on the rescue's thread --------------------------------------------------

    def read(self, pos: int, size: int, copied: int, error_size: int) -> None:
        if self._reads is not None:
            self._reads.read(pos, size, copied, error_size)

    def phase(self, text: str) -> None:
        if self._reads is not None:
            self._reads.phase(text)
        if self._events is not None:
            self._events.event(text, self._rescued(self._progress()))

    # ---- the end of the run --------------------------------------------------------------------

    def around(self, run: Callable[[], Outcome]) -> Outcome:
        """Run the rescues; then log why they stopped, if early, and how the run ended."""
        try:
            outcome = run()
        except RescueError as error:
            self._end(str(error))
            raise
        self._end(_STOPPED.get(outcome))
        return outcome

    def _end(self, reason: str | None) -> None:
        if self._events is None:
            return
        if reason:
            self._events.message(reason)
        p = self._progress()
        self._events.end(self._rescued(p), p.position, p.phase.value, p.average_rate,
                         p.read_errors)

    @staticmethod
    def _rescued(p: Progress) -> str:
        return format_percent(p.rescued, p.domain_size)
