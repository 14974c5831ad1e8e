"""The job screens: what following a job takes (JobScreenBase), and the imaging job's screen
with its live sector map, counters and log; pause and cancel, and a tall log on demand."""

from __future__ import annotations

import os
import sys
import termios
from typing import Any, ClassVar, Generic, TextIO

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import RichLog

from rescue.engine.jobs import Progress
from rescue.tui.host import host_of
from rescue.tui.jobs import BackgroundJob, RunningJob, Shown
from rescue.tui.screens.map_screen import MapScreen
from rescue.tui.widgets.counters import progress_text
from rescue.tui.widgets.sector_map import MapLook
from rescue.units import human_duration

FRAMES_PER_SECOND = 5  # what an eye follows; more only costs snapshots
FRAME_BYTES = 1500  # a typical frame of changed rows (counters, a few map rows), escapes included
SERIAL_PREFIXES = ("/dev/ttyS", "/dev/ttyUSB", "/dev/ttyACM", "/dev/ttyAMA", "/dev/hvc")
_BAUD = {getattr(termios, name): int(name[1:]) for name in dir(termios)
         if name.startswith("B") and name[1:].isdigit()}


def serial_line_speed(stream: TextIO | None = None) -> int | None:
    """Bits per second of the serial line the app draws on, or None for anything else (a
    pseudo-terminal reports a speed too, but nothing slows it down)."""
    stream = stream or sys.__stdout__
    try:
        descriptor = stream.fileno() if stream is not None else -1
        if not os.isatty(descriptor) or not os.ttyname(descriptor).startswith(SERIAL_PREFIXES):
            return None
        return _BAUD.get(termios.tcgetattr(descriptor)[5])
    except (OSError, ValueError, termios.error):
        return None


def frame_interval(frames_per_second: float, speed: int | None = None) -> float:
    """Seconds between frames: at most half of a slow serial line goes to redraws, so keys
    still get through (9600 baud: one frame every 3 s; 115200: about 4 a second)."""
    speed = serial_line_speed() if speed is None else speed
    fastest = 1 / frames_per_second
    if not speed:
        return fastest
    return max(fastest, 2 * FRAME_BYTES / (speed / 10))


def job_log(log_id: str) -> RichLog:
    """A job's log: long lines (a map's path) wrap instead of hiding behind a scroll bar."""
    return RichLog(id=log_id, max_lines=200, wrap=True, markup=False, highlight=False)


class JobScreenBase(Screen, Generic[Shown]):
    """What the job and restore screens share: the job followed frame by frame, its log,
    pause and cancel. Closing the screen leaves the job running. Subclasses draw the progress
    (`draw`) and keep their own key bindings."""

    LOG_ID: ClassVar[str] = "log"

    def __init__(self, running: BackgroundJob[Any, Shown], *args: Any) -> None:
        super().__init__(*args)
        self.running = running
        self._log_shown = 0
        # the footer is composed with the job as it is now: rebuilt only when that changes
        self._actions = (running.done, running.cancelling)

    def draw(self, progress: Shown) -> None:
        """Show `progress`, the running job's progress now."""
        raise NotImplementedError

    def start_following(self) -> None:
        self.set_interval(frame_interval(FRAMES_PER_SECOND), self.refresh_job)
        self.refresh_job()

    def refresh_job(self) -> None:
        """Pull progress and draw it, add new log lines; only while this screen shows."""
        if self.app.screen is not self:
            return
        running = self.running
        self.draw(running.poll())
        if len(running.log) > self._log_shown:
            log = self.query_one(f"#{self.LOG_ID}", RichLog)
            width = log.scrollable_content_region.width or None  # None: not laid out yet
            for line in running.log[self._log_shown:]:
                log.write(line, width=width)
            self._log_shown = len(running.log)
        actions = (running.done, running.cancelling)
        if actions != self._actions:  # rebuilding the footer restyles the screen: not per frame
            self._actions = actions
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "cancel"):
            return not self.running.done and not self.running.cancelling
        return True

    def action_toggle_pause(self) -> None:
        self.running.toggle_pause()
        self.refresh_job()

    def action_cancel(self) -> None:
        self.running.cancel()
        self.refresh_job()


class JobScreen(JobScreenBase[Progress], MapScreen):
    """Presents one RunningJob: its live sector map, counters and log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("c", "cancel", "Cancel job"),
        Binding("b", "browse", "Browse image"),
        Binding("l", "toggle_log", "Log"),
        Binding("escape", "app.show_jobs", "Jobs"),
    ]

    def __init__(self, running: RunningJob, look: MapLook | None = None) -> None:
        super().__init__(running, look)
        self.running: RunningJob = running
        self._drawn: tuple[int, int, str] | None = None  # map version, position, state

    def compose_extra(self) -> ComposeResult:
        yield job_log(self.LOG_ID)

    def on_mount(self) -> None:
        super().on_mount()
        self.start_following()

    def draw(self, progress: Progress) -> None:
        """Title and counters; the map only when it changed (a snapshot costs)."""
        running = self.running
        self.set_title(f"[{running.state}] {human_duration(progress.elapsed)}  {running.title}")
        self.set_counters(progress_text(progress))
        position = None if running.done else progress.position
        drawn = (running.map_version(), position or -1, running.state)
        if drawn != self._drawn:
            self._drawn = drawn
            self.sector_map.show(running.snapshot(), position)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "browse":  # shown once there is a finished image to look into
            outcome = self.running.outcome
            return outcome is not None and outcome.finished
        return super().check_action(action, parameters)

    def action_toggle_log(self) -> None:
        """The whole screen for the log (its early lines, a long list of affected files) and
        back to the map; the arrows then scroll the log, or move over the map again."""
        self.toggle_class("-tall-log")
        if self.has_class("-tall-log"):
            self.query_one(f"#{self.LOG_ID}").focus()
        else:
            self.sector_map.focus()

    def action_browse(self) -> None:
        host_of(self).open_image(self.running.job.request.dest)
