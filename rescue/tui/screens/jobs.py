"""The jobs list: every job of this session, running or done; enter opens one."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.widgets.option_list import Option

from rescue.tui.host import JobHost, host_of
from rescue.tui.widgets.toggles import OptionList


class JobsScreen(Screen):
    """The app's base screen; jobs keep running while it shows."""

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("Jobs (enter opens one)", id="title")
        yield OptionList(id="jobs")
        yield Footer()

    @property
    def rescue_app(self) -> JobHost:
        return host_of(self)

    def on_mount(self) -> None:
        self._timer = self.set_interval(1.0, self.refresh_list)

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.refresh_list()

    def on_screen_suspend(self) -> None:
        """Under a job's screen the list waits: every wake-up of the app's thread takes the
        interpreter from the job for a moment."""
        self._timer.pause()

    def refresh_list(self) -> None:
        """Rebuild the list only when a line changed: over a serial line every redraw costs."""
        if self.app.screen is not self:
            return
        lines = [f"{running.title}  [{running.state}]  {running.summary()}"
                 for running in self.rescue_app.jobs]
        options = self.query_one("#jobs", OptionList)
        options.focus()
        if lines == self._shown and options.option_count:
            return
        self._shown = lines
        highlighted = options.highlighted
        options.clear_options()
        for index, line in enumerate(lines):
            options.add_option(Option(Text(line), id=str(index)))
        if not lines:
            options.add_option(Option(Text("no jobs — d shows the disks, q quits"),
                                      disabled=True))
        else:
            options.highlighted = min(highlighted or 0, len(lines) - 1)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.rescue_app.open_job(self.rescue_app.jobs[int(event.option.id)])
