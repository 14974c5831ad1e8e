"""`rescue map`: GNU ddrescue's own mapfiles, hand-written maps with bad areas, following a
file that changes, and bad input refused with one line before the screen is taken over."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.commands import map as map_command
from rescue.errors import FormatError
from rescue.rangemap import BAD, FINISHED, STATES
from rescue.tui.app import make_app
from rescue.tui.screens import map_viewer
from rescue.tui.screens.map_viewer import MapViewerScreen
from rescue.tui.widgets.sector_map import MapLook, SectorMap
from tests.fixtures.mapfiles import SAMPLES, write_map
from tests.fixtures.tui import drive, screen_lines, wait_until

needs_ddrescue = pytest.mark.skipif(not shutil.which("ddrescue"), reason="needs GNU ddrescue")

pytestmark = pytest.mark.timeout(60)


def ddrescuelog_bytes(path: Path, state: str) -> int:
    """What ddrescuelog itself counts in `state`, in 512-byte blocks listed one per line."""
    out = subprocess.run(["ddrescuelog", "-b", "512", f"--list-blocks={state}", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return 512 * len(out.split())


def save_as(sample: Path, path: Path) -> None:
    """Put a sample map at `path` as a rescue saves one: whole, by renaming a new file."""
    shutil.copyfile(sample, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def viewer(app_pilot: Pilot) -> MapViewerScreen:
    screen = app_pilot.app.screen
    assert isinstance(screen, MapViewerScreen)
    return screen


@needs_ddrescue
def test_a_ddrescue_mapfile_reads_as_ddrescuelog_counts_it() -> None:
    map_path = SAMPLES["ddrescue-trimming"]  # stopped while trimming: every state but non-tried
    assert "GNU ddrescue" in map_path.read_text()

    async def scenario(pilot: Pilot) -> None:
        screen = viewer(pilot)
        totals = screen.loaded.rmap.totals()
        for state in STATES:
            assert totals[state] == ddrescuelog_bytes(map_path, state)
        widget = screen.query_one(SectorMap)
        await pilot.press("home")
        assert widget.cursor_counts()[FINISHED] == widget.cell_bytes  # the first MiB: read
        lines = screen_lines(pilot.app)
        assert "rescued 7.62 MiB (95.23%)" in lines[1]
        assert "trimming pass 1 at 0x4f0000" in lines[3]

    drive(make_app(map_path=str(map_path), look=MapLook()), scenario)


@needs_ddrescue
def test_hand_written_bad_areas_match_ddrescuelog(tmp_path: Path) -> None:
    path = tmp_path / "bad.map"
    write_map(path)

    async def scenario(pilot: Pilot) -> None:
        totals = viewer(pilot).loaded.rmap.totals()
        assert totals[BAD] == ddrescuelog_bytes(path, BAD) == 512 + 1024
        assert totals[FINISHED] == ddrescuelog_bytes(path, FINISHED)
        lines = screen_lines(pilot.app)
        assert "bad 1.5 KiB" in lines[1] and "trimming pass 1 at 0x2800000" in lines[3]

    drive(make_app(map_path=str(path), look=MapLook()), scenario)


def test_the_viewer_follows_a_changing_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(map_viewer, "POLL_SECONDS", 0.05)
    path = tmp_path / "live.map"
    save_as(SAMPLES["rescue-interrupted"], path)
    app = make_app(map_path=str(path), look=MapLook())

    async def scenario(pilot: Pilot) -> None:
        screen = viewer(pilot)
        widget = screen.query_one(SectorMap)
        assert widget.snapshot is not None and widget.snapshot.totals[FINISHED] == 2_949_120

        save_as(SAMPLES["rescue-finished"], path)  # the same rescue, run to its end
        await wait_until(pilot, lambda: widget.snapshot.totals[FINISHED] == 8_275_456)
        assert widget.snapshot.totals[BAD] == 113_152
        await wait_until(pilot, lambda: "bad 110 KiB" in screen_lines(pilot.app)[1])

        path.write_text("this is not a mapfile\n")
        await wait_until(pilot, lambda: bool(screen.problem))
        await wait_until(pilot, lambda: "cannot reload:" in screen_lines(pilot.app)[3])
        assert widget.snapshot.totals[FINISHED] == 8_275_456  # the last good map stays

    drive(app, scenario)


def test_bad_mapfile_is_one_line_before_the_screen_opens(tmp_path: Path) -> None:
    path = tmp_path / "junk.map"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(FormatError, match="not a ddrescue mapfile"):
        make_app(map_path=str(path))
    with pytest.raises(FormatError, match="cannot read mapfile"):
        make_app(map_path=str(tmp_path / "missing.map"))


def test_map_command_registers_and_refuses_bad_input(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    map_command.add_parser(parser.add_subparsers(dest="command"))
    path = tmp_path / "junk.map"
    path.write_text("0x0 ? 1\n0x0 0x10 Q\n")
    args = parser.parse_args(["map", str(path), "--ascii"])
    assert args.run is map_command.run and args.ascii and not args.mono
    with pytest.raises(FormatError, match="not a mapfile block line"):
        args.run(args)

