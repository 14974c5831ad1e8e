"""The restore screen: one line per target (phase, written, read back, rate, ETA), the log,
pause and cancel. Closing it leaves the restore running."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Log, Static

from rescue.engine.restore import RestoreProgress, TargetProgress
from rescue.tui.jobs import RunningRestore
from rescue.tui.screens.job import FRAMES_PER_SECOND, frame_interval
from rescue.units import human_duration, human_rate, human_size


def target_line(target: TargetProgress) -> str:
    """One target in two lines that fit 80 columns."""
    percent = 100.0 * target.written / target.size if target.size else 100.0
    line = (f"{target.target}  {target.phase}  written {human_size(target.written)} of "
            f"{human_size(target.size)} ({percent:.1f}%)  read back "
            f"{human_size(target.verified)}\n   {human_rate(target.current_rate)} avg "
            f"{human_rate(target.average_rate)}  ETA {human_duration(target.eta)}")
    if target.mismatches:
        line += f"  {len(target.mismatches)} mismatching ranges"
    if target.error:
        line += f"\n   {target.error}"
    return line


def progress_lines(progress: RestoreProgress) -> str:
    return "\n".join(target_line(target) for target in progress.targets)


class RestoreScreen(Screen):
    """Presents one RunningRestore."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("c", "cancel", "Cancel restore"),
        Binding("escape", "app.show_jobs", "Jobs"),
    ]

    def __init__(self, running: RunningRestore) -> None:
        super().__init__()
        self.running = running
        self._log_shown = 0
        self._drawn = ""
        self._actions: tuple[bool, bool] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        yield Static(id="targets", markup=False)
        yield Log(id="restore-log", max_lines=200)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(frame_interval(FRAMES_PER_SECOND), self.refresh_restore)
        self.refresh_restore()

    def refresh_restore(self) -> None:
        if self.app.screen is not self:
            return
        running = self.running
        progress = running.poll()
        text = (f"[{running.state}] {human_duration(progress.elapsed)}  {progress.phase}  "
                f"{running.title}\n{progress_lines(progress)}")
        if text != self._drawn:  # only what changed goes down the line
            self._drawn = text
            title, _, targets = text.partition("\n")
            self.query_one("#title", Static).update(title)
            self.query_one("#targets", Static).update(targets)
        if len(running.log) > self._log_shown:
            log = self.query_one("#restore-log", Log)
            for line in running.log[self._log_shown:]:
                log.write_line(line)
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
        self.refresh_restore()

    def action_cancel(self) -> None:
        self.running.cancel()
        self.refresh_restore()
