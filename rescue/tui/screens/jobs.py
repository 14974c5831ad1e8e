"""The jobs list: every job of this session, running or done; enter opens one."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from rescue.units import human_size

if TYPE_CHECKING:
    from rescue.tui.app import RescueApp


class JobsScreen(Screen):
    """The app's base screen; jobs keep running while it shows."""

    def compose(self) -> ComposeResult:
        yield Static("Jobs (enter opens one)", id="title")
        yield OptionList(id="jobs")
        yield Footer()

    @property
    def rescue_app(self) -> RescueApp:
        return cast("RescueApp", self.app)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh_list)

    def on_screen_resume(self) -> None:
        self.refresh_list()

    def refresh_list(self) -> None:
        if self.app.screen is not self:
            return
        options = self.query_one("#jobs", OptionList)
        highlighted = options.highlighted
        options.clear_options()
        jobs = self.rescue_app.jobs
        for index, running in enumerate(jobs):
            totals = running.job.rescue.totals()
            options.add_option(Option(Text(
                f"{running.title}  [{running.state}]  rescued {human_size(totals['+'])}  "
                f"bad {human_size(totals['-'])}"), id=str(index)))
        if not jobs:
            options.add_option(Option(Text("no jobs — q quits"), disabled=True))
        else:
            options.highlighted = min(highlighted or 0, len(jobs) - 1)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.rescue_app.open_job(self.rescue_app.jobs[int(event.option.id)])
