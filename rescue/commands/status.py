"""Text and JSON presenters of a job's progress: they poll snapshots, the job never prints."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

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


class StatusPrinter:
    """Prints progress while a job runs: a redrawn block on a terminal, one line a second
    otherwise, or one JSON object per update with --json."""

    def __init__(self, poll: Callable[[], Progress], stream: TextIO = sys.stdout,
                 json_lines: bool = False) -> None:
        self.poll, self.stream, self.json_lines = poll, stream, json_lines
        self.live = stream.isatty() and not json_lines
        self.interval = 0.25 if self.live else 1.0
        self._drawn = 0

    def update(self) -> None:
        progress = self.poll()
        if self.json_lines:
            self.stream.write(json.dumps({"type": "progress", **progress.as_dict()}) + "\n")
        elif self.live:
            lines = status_lines(progress)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.stream.write(" | ".join(status_lines(progress)[:3]) + "\n")
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
                  present: Callable[[], None], interval: float) -> Result:
    """Run `work` in a worker thread while this thread presents it every `interval` seconds
    and once more at a successful end; signals cancel through `control`; the worker's error
    is raised here, in place of the final presentation."""
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
