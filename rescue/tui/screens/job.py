"""The job screen: a running rescue's live sector map, counters and log; pause and cancel."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Log

from rescue.tui.jobs import RunningJob
from rescue.tui.screens.map_screen import MapScreen
from rescue.tui.widgets.counters import progress_text
from rescue.tui.widgets.sector_map import MapLook
from rescue.units import human_duration

FRAMES_PER_SECOND = 5  # what an eye follows; more only costs snapshots


class JobScreen(MapScreen):
    """Presents one RunningJob; closing it leaves the job running."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("c", "cancel", "Cancel job"),
        Binding("escape", "app.show_jobs", "Jobs"),
    ]

    def __init__(self, running: RunningJob, look: MapLook | None = None) -> None:
        super().__init__(look)
        self.running = running
        self._drawn: tuple[int, int, str] | None = None  # map version, position, state
        self._log_shown = 0

    def compose_extra(self) -> ComposeResult:
        yield Log(id="log", max_lines=200)

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(1 / FRAMES_PER_SECOND, self.refresh_job)
        self.refresh_job()

    def refresh_job(self) -> None:
        """Pull progress and, when the map changed, a snapshot; draw only what changed."""
        if self.app.screen is not self:
            return
        running = self.running
        progress = running.poll()
        self.set_title(f"[{running.state}] {human_duration(progress.elapsed)}  {running.title}")
        self.set_counters(progress_text(progress))
        position = None if running.done else progress.position
        drawn = (running.job.rescue.rmap.version, position or -1, running.state)
        if drawn != self._drawn:
            self._drawn = drawn
            self.sector_map.show(running.job.snapshot(), position)
        log = self.query_one("#log", Log)
        for line in running.log[self._log_shown:]:
            log.write_line(line)
        self._log_shown = len(running.log)
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
