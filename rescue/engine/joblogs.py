"""The reads and events logs of one imaging job (`--log-reads`, `--log-events`), in GNU
ddrescue's formats, so a job can be compared with a ddrescue run read by read.

The job's rescues tell the logs of each read and phase (they are their ReadObserver); the job
tells them how the run ended. Opened when the job starts running and closed when it ends, so a
job built but never run (a wizard's preview) leaves no trace in them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

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

    def __enter__(self) -> JobLogs:
        if self.reads_path:
            self._reads = ReadsLogWriter(self.reads_path, self._command_line)
        if self.events_path:
            try:
                self._events = EventsLogWriter(self.events_path, self._command_line)
            except RescueError:
                self.close()
                raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
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
