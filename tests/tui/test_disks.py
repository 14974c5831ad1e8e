"""The Disks screen on real loop devices: listed with their backing file, a loop attached while
the screen shows appears through the hotplug stream, inspect shows its facts, and one that
goes away leaves the list."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.tui.app import make_home_app
from rescue.tui.screens.disks import DisksScreen, InspectScreen
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.loop import loop_device
from tests.fixtures.tui import drive, make_file, screen_lines, wait_until

MIB = 1 << 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_disks_lists_loops_and_follows_hotplug(tmp_path: Path) -> None:
    first = make_file(str(tmp_path / "first.bin"), 4 * MIB)
    second = make_file(str(tmp_path / "second.bin"), 6 * MIB)
    with loop_device(first) as first_loop:
        app = make_home_app(MapLook(ascii=True, monochrome=True))

        async def scenario(pilot: Pilot) -> None:
            screen = app.screen
            assert isinstance(screen, DisksScreen)
            await wait_until(pilot, lambda: first_loop in screen.paths())
            await wait_until(pilot, lambda: screen.hotplug_note.startswith("hotplug: "))
            row = next(line for line in screen_lines(app) if first_loop in line)
            assert "4 MiB" in row and "loop" in row and "no SMART" in row
            events = screen.events_seen
            with loop_device(second) as second_loop:  # nobody presses g: hotplug must do it
                await wait_until(pilot, lambda: second_loop in screen.paths())
                assert screen.events_seen > events
                screen.table.move_cursor(row=screen.paths().index(second_loop))
                await pilot.press("v")
                inspect = app.screen
                assert isinstance(inspect, InspectScreen)
                assert f"backing   {second}" in inspect.text
                await pilot.pause()
                text = "\n".join(screen_lines(app))
                assert "6 MiB (6291456 bytes)" in text and "no SMART data" in text
                await pilot.press("escape")
            await wait_until(pilot, lambda: second_loop not in screen.paths())
            assert first_loop in screen.paths()

        drive(app, scenario)
