"""The image wizard refuses a format that its destination's name contradicts, on the options
step, instead of failing when the job starts."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from tests.tui.helpers import drive
from tests.tui.test_wizards import home_app, options_step, shown


def test_a_format_the_name_contradicts_is_refused_on_the_options_step(tmp_path: Path) -> None:
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await options_step(pilot, str(tmp_path / "x.zst"), "raw")
        await pilot.press("ctrl+n")
        assert wizard.step_id == "options"
        assert "pick a name that ends" in shown(app)
        await pilot.press("escape")
        assert not app.jobs

    drive(app, scenario)
