"""The one presenter of a running job on the command line: it polls snapshots and prints them
as text or JSON; the job never prints."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, Protocol, TextIO, TypeVar

if TYPE_CHECKING:
    from rescue.engine.jobs import JobControl


class Reportable(Protocol):
    """A job's progress at one moment, as --json prints it."""

    def as_dict(self) -> dict[str, object]: ...


P = TypeVar("P", bound=Reportable)
News = list[tuple[str, dict[str, object]]]  # lines printed once: as text, and as JSON


class ProgressReporter(Generic[P]):
    """Prints a job's progress while it runs, in one of three forms: with --json one JSON
    object per update; on a terminal `lines` redrawn in place; otherwise `plain` (by default
    the same lines) once a second. `redraw=False` keeps to plain lines even on a terminal.
    `news` tells what happened since the last update, printed once above the live lines."""

    def __init__(self, poll: Callable[[], P], json_lines: bool,
                 lines: Callable[[P], list[str]], plain: Callable[[P], list[str]] | None = None,
                 stream: TextIO | None = None, redraw: bool = True,
                 news: Callable[[P], News] | None = None) -> None:
        self.poll, self.json_lines = poll, json_lines
        self.lines, self.plain = lines, plain or lines
        self.news = news
        self.stream = stream or sys.stdout
        self.live = redraw and self.stream.isatty() and not json_lines
        self.interval = 0.25 if self.live else 1.0
        self._drawn = 0

    def update(self) -> None:
        progress = self.poll()
        news = self.news(progress) if self.news else []
        if self.json_lines:
            self.stream.write("".join(json.dumps(item) + "\n" for _, item in news))
            self.stream.write(json.dumps({"type": "progress", **progress.as_dict()}) + "\n")
        elif self.live:
            # the news take the place of the old live lines, which are drawn again below
            lines = [text for text, _ in news] + self.lines(progress)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines) - len(news)
        else:
            lines = [text for text, _ in news] + self.plain(progress)
            self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()


Result = TypeVar("Result")


@contextmanager
def cancel_on_signals(control: JobControl) -> Iterator[None]:
    """SIGINT and SIGTERM cancel the job; it then saves its state and stops."""
    previous = {sig: signal.signal(sig, lambda *_: control.cancel())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_presented(work: Callable[[], Result], control: JobControl,
                  reporter: ProgressReporter) -> Result:
    """Run `work` in a worker thread while this thread reports its progress every interval
    and once more at a successful end; signals cancel through `control`; the worker's error
    is raised here, in place of the final report."""
    present, interval = reporter.update, reporter.interval
    outcome: list[Result] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except Exception as exc:  # handed to the presenting thread
            failure.append(exc)

    worker = threading.Thread(target=target, name="rescue-job")
    with cancel_on_signals(control):
        worker.start()
        worker.join(interval)
        while worker.is_alive():
            present()
            worker.join(interval)
    if failure:
        raise failure[0]
    present()
    return outcome[0]
