"""The restore screen: one line per target (phase, written, read back, rate, ETA), the log,
pause and cancel. Closing it leaves the restore running."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from rescue.engine.restore import RestoreProgress, TargetProgress
from rescue.tui.jobs import RunningRestore
from rescue.tui.screens.job import JobScreenBase, job_log
from rescue.tui.widgets.text import show_text
from rescue.units import human_duration, human_percent, human_rate, human_size


def target_line(target: TargetProgress) -> str:
    """One target in two lines that fit 80 columns."""
    line = (f"{target.target}  {target.phase}  written {human_size(target.written)} of "
            f"{human_size(target.size)} ({human_percent(target.written, target.size)}%)  "
            f"read back "
            f"{human_size(target.verified)}\n   {human_rate(target.current_rate)} avg "
            f"{human_rate(target.average_rate)}  ETA {human_duration(target.eta)}")
    if target.mismatches:
        line += f"  {len(target.mismatches)} mismatching ranges"
    if files := target.files_line():
        line += f"\n   {files}"
    if target.error:
        line += f"\n   {target.error}"
    return line


def progress_lines(progress: RestoreProgress) -> str:
    return "\n".join(target_line(target) for target in progress.targets)


class RestoreScreen(JobScreenBase[RestoreProgress]):
    """Presents one RunningRestore."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("c", "cancel", "Cancel restore"),
        Binding("escape", "app.show_jobs", "Jobs"),
    ]
    LOG_ID = "restore-log"

    def __init__(self, running: RunningRestore) -> None:
        super().__init__(running)
        self.running: RunningRestore = running

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        yield Static(id="targets", markup=False)
        yield job_log(self.LOG_ID)
        yield Footer()

    def on_mount(self) -> None:
        self.start_following()

    def draw(self, progress: RestoreProgress) -> None:
        show_text(self.query_one("#title", Static),  # only what changed goes down the line
                  f"[{self.running.state}] {human_duration(progress.elapsed)}  "
                  f"{progress.phase}  {self.running.title}")
        show_text(self.query_one("#targets", Static), progress_lines(progress))
