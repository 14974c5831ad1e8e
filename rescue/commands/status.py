"""The one presenter of a running job on the command line: it polls snapshots and prints them
as text or JSON; the job never prints."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TextIO, TypeVar

from rescue.engine.jobs import JobControl, Progress
from rescue.units import human_duration, human_rate, human_size


def status_lines(p: Progress) -> list[str]:
    """The live status block, ddrescue's fields, 80 columns wide at most."""
    pct = 100 * p.rescued / p.domain_size if p.domain_size else 100.0
    state = " (paused)" if p.paused else ""
    return [
        f"rescued: {human_size(p.rescued):>10} ({pct:5.1f}%)   bad: {human_size(p.bad):>10}"
        f"   read errors: {p.read_errors}",
        f"non-tried: {human_size(p.non_tried):>10}   non-trimmed: {human_size(p.non_trimmed):>10}"
        f"   non-scraped: {human_size(p.non_scraped):>10}",
        f"rate: {human_rate(p.current_rate):>12} now {human_rate(p.average_rate):>12} average"
        f"   pos: {human_size(p.position)}",
        f"{p.phase} pass {p.pass_no}{state}   elapsed: {human_duration(p.elapsed)}"
        f"   since last good read: {human_duration(p.since_last_good)}"
        f"   remaining: {human_duration(p.eta)}",
    ]


class Reportable(Protocol):
    """A job's progress at one moment, as --json prints it."""

    def as_dict(self) -> dict[str, object]: ...


P = TypeVar("P", bound=Reportable)


class ProgressReporter(Generic[P]):
    """Prints a job's progress while it runs, in one of three forms: with --json one JSON
    object per update; on a terminal `lines` redrawn in place; otherwise `plain` (by default
    the same lines) once a second. `redraw=False` keeps to plain lines even on a terminal."""

    def __init__(self, poll: Callable[[], P], json_lines: bool,
                 lines: Callable[[P], list[str]], plain: Callable[[P], list[str]] | None = None,
                 stream: TextIO | None = None, redraw: bool = True) -> None:
        self.poll, self.json_lines = poll, json_lines
        self.lines, self.plain = lines, plain or lines
        self.stream = stream or sys.stdout
        self.live = redraw and self.stream.isatty() and not json_lines
        self.interval = 0.25 if self.live else 1.0
        self._drawn = 0

    def update(self) -> None:
        progress = self.poll()
        if self.json_lines:
            self.stream.write(json.dumps({"type": "progress", **progress.as_dict()}) + "\n")
        elif self.live:
            lines = self.lines(progress)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.stream.write("".join(f"{line}\n" for line in self.plain(progress)))
        self.stream.flush()


def status_line(p: Progress) -> list[str]:
    """The status block on one line, for logs: the first three lines of it."""
    return [" | ".join(status_lines(p)[:3])]


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
