"""Pictures of the sector map, compared with the SVGs under __snapshots__/: 80x24 and 132x43,
in colour and in the ASCII monochrome look of a serial console.

Kept deterministic: a fixed hand-written map, a fixed modification time shown in UTC, a path
relative to a fixed working folder, no job running (so no clock and no spinner).
Regenerate after a deliberate change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the new pictures before keeping them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.tui.app import make_app
from rescue.tui.widgets.sector_map import MapLook, SectorMap
from tests.fixtures.mapfiles import MIB, write_map

pytest.importorskip("pytest_textual_snapshot")

BAD_RUN = 40 * MIB + 68 * 1024
SAVED_AT = 1_700_000_000  # 2023-11-14 22:13:20 UTC
LOOKS = {"colour": MapLook(), "mono": MapLook(ascii=True, monochrome=True)}


@pytest.fixture
def fixed_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    write_map(tmp_path / "disk.map")
    os.utime(tmp_path / "disk.map", (SAVED_AT, SAVED_AT))
    yield "disk.map"
    monkeypatch.undo()
    time.tzset()


async def cursor_on_the_bad_run(pilot: Pilot) -> None:
    """Put the cursor on the cell holding the bad run at 40 MiB (what `end`/`home` and the
    arrows do, in one step), so the cursor line shows exact counts of several states."""
    widget = pilot.app.screen.query_one(SectorMap)
    widget.action_jump((BAD_RUN - widget.view[0]) // widget.cell_bytes)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (132, 43)], ids=["80x24", "132x43"])
@pytest.mark.parametrize("look", sorted(LOOKS))
def test_map_viewer_picture(snap_compare, fixed_map: str, look: str,
                            size: tuple[int, int]) -> None:
    app = make_app(map_path=fixed_map, look=LOOKS[look])
    assert snap_compare(app, terminal_size=size, run_before=cursor_on_the_bad_run)
