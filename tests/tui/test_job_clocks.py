"""The job screen's clocks as a user sees them at 80x24: paused or finished, the elapsed
time, the rates, the time since the last good read and the ETA stand still, and while work
is left the ETA is never a confident 0."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.engine.imaging import ImageRequest
from rescue.engine.rescue import RescueOptions
from rescue.tui.app import make_app
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.tui import drive, screen_lines, wait_until

# eight seconds of reading: time to pause it on a busy machine
LONG = "sim:size=8M,rate=1M,bad=1M+4k,bad=5M+64k"
FAST = "sim:size=8M,bad=1M+4k,bad=5M+64k"
LOOK = MapLook(ascii=True, monochrome=False)
CLOCKS = re.compile(r"\[(\w+)\] (\S+)|[│|] (.*avg.*)$")  # | in the ASCII look

pytestmark = pytest.mark.timeout(120)


def clocks_shown(lines: list[str]) -> list[str]:
    """The title's state and elapsed time, and the counters' rates, last good read and ETA."""
    return [match.group(0) for line in lines for match in [CLOCKS.search(line)] if match]


def app_for(tmp_path: Path, spec: str):  # -> RescueApp
    request = ImageRequest(source=spec, dest=str(tmp_path / "disk.img"),
                           options=RescueOptions(checkpoint_interval=0.2, retries=1))
    return make_app(request, look=LOOK)


def test_a_paused_job_shows_the_same_clocks_however_long_it_waits(tmp_path: Path) -> None:
    app = app_for(tmp_path, LONG)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.job.progress().rescued > 0)
        await pilot.press("p")
        # the read under way when paused lands first; then a frame shows where it stands
        await wait_until(pilot, lambda: running.job.control.stopped)
        await asyncio.sleep(0.5)
        await pilot.pause()
        before = clocks_shown(screen_lines(app))
        assert "[paused]" in before[0]
        await asyncio.sleep(2.5)  # more than the seconds the title counts in
        await pilot.pause()
        assert clocks_shown(screen_lines(app)) == before
        assert any("ETA" in line for line in before)
        await pilot.press("p")

    drive(app, scenario)


def test_a_finished_job_shows_the_same_clocks_later_and_no_eta(tmp_path: Path) -> None:
    app = app_for(tmp_path, FAST)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.done)
        await wait_until(pilot, lambda: any("finished pass" in line
                                            for line in screen_lines(app)))
        ended = clocks_shown(screen_lines(app))
        await asyncio.sleep(2.5)
        await pilot.pause()
        assert clocks_shown(screen_lines(app)) == ended
        assert any(line.rstrip().endswith("ETA -") for line in ended)

    drive(app, scenario)
