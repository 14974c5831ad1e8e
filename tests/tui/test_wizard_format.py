"""The image wizard refuses a format that its destination's name contradicts, on the options
step, instead of failing when the job starts."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from rescue.tui.screens.image_wizard import ImageWizard
from tests.tui.helpers import drive
from tests.tui.test_wizards import SIM, home_app, set_field, shown


def test_a_format_the_name_contradicts_is_refused_on_the_options_step(tmp_path: Path) -> None:
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("i")
        wizard = app.screen
        assert isinstance(wizard, ImageWizard)
        await set_field(pilot, "#source-path", SIM)
        await pilot.press("enter")
        await set_field(pilot, "#dest-path", str(tmp_path / "x.zst"))
        await pilot.press("enter")
        wizard.query_one("#format").value = "raw"
        await pilot.pause()
        await pilot.press("ctrl+n")
        assert wizard.step_id == "options"
        assert "pick a name that ends" in shown(app)
        await pilot.press("escape")
        assert not app.jobs

    drive(app, scenario)
