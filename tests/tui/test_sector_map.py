"""The sector map: weighting, exact cursor counts, zoom, and drawing without colour or blocks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.formats import mapfile
from rescue.rangemap import BAD, FINISHED, JOURNAL_SPANS, NON_TRIED, STATES, RangeMap
from rescue.tui.app import make_app
from rescue.tui.widgets.sector_map import (
    ASCII_GLYPHS,
    EMPTY,
    PRIORITY,
    SECTOR,
    UNICODE_GLYPHS,
    MapLook,
    SectorMap,
    cell_bytes_for,
    cell_states,
    refreshed_cells,
)
from tests.fixtures.mapfiles import AREAS, MAP_SIZE, write_map
from tests.fixtures.tui import drive

GIB = 1 << 30
MIB = 1 << 20


def reference_cells(rmap: RangeMap, begin: int, end: int, cell_bytes: int,
                    count: int) -> bytes:
    """The weighting, spelled out: per cell, the most severe state with any bytes in it."""
    out = bytearray(count)
    for k in range(count):
        lo = begin + k * cell_bytes
        if lo >= end:
            break
        counts = rmap.state_bytes(lo, min(lo + cell_bytes, end))
        out[k] = ord(next(state for state in PRIORITY if counts[state]))
    return bytes(out)


def random_map(seed: int, size: int, areas: int) -> RangeMap:
    rng = random.Random(seed)
    rmap = RangeMap(size, FINISHED)
    for _ in range(areas):
        length = rng.choice((SECTOR, 4096, 65536, MIB))
        rmap.set(rng.randrange(0, size - length) // SECTOR * SECTOR, length, rng.choice(STATES))
    return rmap


def test_one_bad_sector_in_a_gibibyte_cell_shows_as_bad() -> None:
    rmap = RangeMap(64 * GIB, FINISHED)
    rmap.set(37 * GIB + 123 * SECTOR, SECTOR, BAD)
    cells = cell_states(rmap.snapshot(), 0, rmap.size, GIB, 64)
    assert cells[37] == ord(BAD)
    assert cells.count(ord(FINISHED)) == 63


def test_severity_order_decides_each_cell() -> None:
    rmap = RangeMap(5 * MIB, FINISHED)
    # cell k holds every state ranked below PRIORITY[k], plus PRIORITY[k] itself
    for k in range(len(PRIORITY)):
        for offset, weaker in enumerate(PRIORITY[k:]):
            rmap.set(k * MIB + offset * 4096, 4096, weaker)
    assert cell_states(rmap.snapshot(), 0, rmap.size, MIB, 5) == "".join(PRIORITY).encode()


@pytest.mark.parametrize("seed", range(6))
def test_cells_match_the_per_cell_definition(seed: int) -> None:
    rmap = random_map(seed, 512 * MIB, 400)
    snapshot = rmap.snapshot()
    for begin, end, count in ((0, rmap.size, 1360), (3 * MIB + 512, 77 * MIB, 333),
                              (0, rmap.size, 7)):
        cell_bytes = cell_bytes_for(end - begin, count)
        expected = reference_cells(rmap, begin, end, cell_bytes, count)
        assert cell_states(snapshot, begin, end, cell_bytes, count) == expected


@pytest.mark.parametrize("seed", range(3))
def test_cells_match_the_definition_where_areas_crowd_into_a_few_cells(seed: int) -> None:
    """Most areas in a few cells, a few over the rest: the bisect's first guess (twice the
    average areas per cell) misses in the crowded cells and overshoots everywhere else."""
    rng = random.Random(seed)
    rmap = random_map(seed, 512 * MIB, 20)
    for _ in range(3000):
        crowd = rng.choice((3 * MIB, 300 * MIB))
        rmap.set(crowd + rng.randrange(2048) * SECTOR, SECTOR, rng.choice(STATES))
    snapshot = rmap.snapshot()
    for count in (1360, 333, 7):
        cell_bytes = cell_bytes_for(rmap.size, count)
        expected = reference_cells(rmap, 0, rmap.size, cell_bytes, count)
        assert cell_states(snapshot, 0, rmap.size, cell_bytes, count) == expected


def job_like_changes(rng: random.Random, rmap: RangeMap, count: int) -> None:
    """What a job does between two frames: forward reads in a row, a backward walk, and
    scattered single sectors (trimming, scraping, retries), states of every kind."""
    pos = rng.randrange(0, rmap.size // SECTOR) * SECTOR
    for _ in range(count):
        kind = rng.random()
        length = rng.choice((SECTOR, 4096, 65536, MIB))
        if kind < 0.5:  # reading on from where the last read ended
            pos = min(pos, rmap.size - length)
        elif kind < 0.7:  # walking backward
            pos = max(pos - 2 * length, 0)
        else:  # somewhere else
            pos = rng.randrange(0, (rmap.size - length) // SECTOR) * SECTOR
        rmap.set(pos, length, rng.choice(STATES))
        pos += length


@pytest.mark.parametrize("seed", range(8))
def test_refreshed_cells_equal_cells_computed_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    rmap = random_map(seed, 512 * MIB, 300)
    views = ((0, rmap.size, 1360), (3 * MIB + 512, 77 * MIB, 333), (0, rmap.size, 7),
             (100 * MIB, 100 * MIB + 8 * SECTOR, 80))
    older = rmap.snapshot()
    drawn = {view: cell_states(older, view[0], view[1], cell_bytes_for(view[1] - view[0],
                                                                        view[2]), view[2])
             for view in views}
    for _ in range(12):
        job_like_changes(rng, rmap, rng.choice((1, 10, 100)))
        snapshot = rmap.snapshot()
        spans = snapshot.changed_since(older)
        assert spans is not None
        for (begin, end, count), cells in drawn.items():
            cell_bytes = cell_bytes_for(end - begin, count)
            fresh = cell_states(snapshot, begin, end, cell_bytes, count)
            assert refreshed_cells(cells, snapshot, begin, end, cell_bytes, spans) == fresh
            drawn[begin, end, count] = fresh
        older = snapshot


def test_changes_are_known_only_within_the_journal_and_the_same_map() -> None:
    rmap = RangeMap(64 * MIB, FINISHED)
    first = rmap.snapshot()
    assert first.changed_since(first) == []
    rmap.set(MIB, SECTOR, BAD)
    rmap.set(MIB + SECTOR, SECTOR, BAD)  # touching: one span
    assert rmap.snapshot().changed_since(first) == [(MIB, MIB + 2 * SECTOR)]
    for k in range(JOURNAL_SPANS + 1):  # scattered: one span each, the oldest forgotten
        rmap.set(2 * MIB + 2 * k * SECTOR, SECTOR, BAD)
    recent = rmap.snapshot()
    assert recent.changed_since(first) is None
    rmap.set(0, SECTOR, NON_TRIED)
    assert rmap.snapshot().changed_since(recent) == [(0, SECTOR)]
    other = RangeMap(64 * MIB, FINISHED).snapshot()
    assert recent.changed_since(other) is None and other.changed_since(first) is None


def test_a_forward_pass_changes_only_what_it_read_since_the_last_snapshot() -> None:
    """A copy pass reads on and on: each frame redraws what it read since the frame before,
    not everything since the pass began."""
    rmap = RangeMap(64 * MIB)
    older = rmap.snapshot()
    pos = 0
    for _ in range(5):
        begin = pos
        for _ in range(16):
            rmap.set(pos, 65536, FINISHED)
            pos += 65536
        snapshot = rmap.snapshot()
        assert snapshot.changed_since(older) == [(begin, pos)]
        older = snapshot


def test_cells_past_the_end_are_empty() -> None:
    rmap = RangeMap(10 * SECTOR)
    cells = cell_states(rmap.snapshot(), 0, rmap.size, 4 * SECTOR, 5)
    assert cells == bytes([ord(NON_TRIED)] * 3 + [EMPTY] * 2)


def test_cell_size_is_whole_sectors_and_covers_the_span() -> None:
    for span, cells in ((8 * MIB, 1360), (10**12 + 7, 1360), (4096, 1360), (100, 7)):
        size = cell_bytes_for(span, cells)
        assert size * cells >= span
        assert span < SECTOR or size % SECTOR == 0


@pytest.mark.parametrize(("env", "look"), [
    ({"TERM": "xterm-256color"}, MapLook(ascii=False, monochrome=False)),
    ({"TERM": "vt220"}, MapLook(ascii=True, monochrome=True)),
    ({"TERM": "linux"}, MapLook(ascii=True, monochrome=False)),
    ({"TERM": "xterm", "NO_COLOR": "1"}, MapLook(ascii=False, monochrome=True)),
])
def test_look_follows_the_terminal(env: dict[str, str], look: MapLook) -> None:
    assert MapLook.from_environment(env) == look


def test_every_state_has_its_own_character() -> None:
    for glyphs in (UNICODE_GLYPHS, ASCII_GLYPHS):
        assert sorted(glyphs) == sorted(STATES)
        assert len(set(glyphs.values())) == len(STATES)
    assert all(glyph.isascii() and glyph.isprintable() for glyph in ASCII_GLYPHS.values())


# ---- the widget, in the map viewer on a hand-written map -----------------------------------

def expected_counts(begin: int, end: int) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for pos, length, state in AREAS:
        counts[state] += max(0, min(end, pos + length) - max(begin, pos))
    return counts


def map_widget(pilot: Pilot) -> SectorMap:
    return pilot.app.screen.query_one(SectorMap)


def test_cursor_shows_exact_bytes_per_state_and_zoom_narrows_the_view(tmp_path: Path) -> None:
    path = tmp_path / "disk.map"
    write_map(path)

    async def scenario(pilot: Pilot) -> None:
        widget = map_widget(pilot)
        columns, rows = widget.size
        cell = cell_bytes_for(MAP_SIZE, columns * rows)
        assert widget.cell_bytes == cell and widget.view == (0, MAP_SIZE)
        target = (40 * MIB + 68 * 1024) // cell  # the cell holding the 1 KiB bad run
        for _ in range(target // columns):
            await pilot.press("down")
        for _ in range(target % columns):
            await pilot.press("right")
        begin = target * cell
        assert widget.cursor_range() == (begin, begin + cell)
        assert widget.cursor_counts() == expected_counts(begin, begin + cell)
        line = str(pilot.app.screen.query_one("#cursor").render())
        assert line.startswith(f"{begin:#x}–{begin + cell:#x}") and "bad 1 KiB" in line

        await pilot.press("enter")  # zoom into that cell
        assert widget.view == (begin, begin + cell)
        assert widget.cell_bytes == cell_bytes_for(cell, columns * rows) < cell
        assert widget.cursor_range()[0] == begin
        await pilot.press("end")
        last_begin, last_end = widget.cursor_range()
        assert last_end == begin + cell
        assert widget.cursor_counts() == expected_counts(last_begin, last_end)
        while widget.can_zoom_in():
            await pilot.press("enter")
        assert widget.cell_bytes == SECTOR

        await pilot.press("backspace")
        await pilot.press("backspace")
        await pilot.press("escape")
        await pilot.press("escape")  # already unzoomed: nothing more to undo
        assert widget.view == (0, MAP_SIZE)
        assert widget.cursor_range() == (begin, begin + cell)

    drive(make_app(map_path=str(path), look=MapLook()), scenario)


def glyphs_on_screen(widget: SectorMap) -> set[str]:
    return {char for y in range(widget.size.height) for char in widget.render_line(y).text}


@pytest.mark.parametrize("look", [MapLook(ascii=True, monochrome=True), MapLook()])
def test_map_characters_per_look(tmp_path: Path, look: MapLook) -> None:
    path = tmp_path / "disk.map"
    write_map(path)

    async def scenario(pilot: Pilot) -> None:
        widget = map_widget(pilot)
        drawn = glyphs_on_screen(widget)
        glyphs = look.glyphs
        # bad is drawn (the single bad sector at 10 MiB alone would do), and the '@' marks
        # the current position at 40 MiB in a cell that holds worse states
        assert {glyphs[BAD], glyphs[FINISHED], glyphs["?"], "@"} <= drawn
        assert drawn <= set(glyphs.values()) | {"@", " "}
        bad_cell = 10 * MIB // widget.cell_bytes
        row = widget.render_line(bad_cell // widget.size.width)
        assert row.text[bad_cell % widget.size.width] == glyphs[BAD]
        legend = str(pilot.app.screen.query_one("#legend").render())
        assert all(f"{glyphs[state]} " in legend for state in STATES)
        if look.monochrome:
            colours = {seg.style.color for seg in row if seg.style is not None}
            assert colours == {None}

    drive(make_app(map_path=str(path), look=look), scenario)


def sample_map(tmp_path: Path) -> tuple[Path, RangeMap]:
    """The sample mapfile, and its map loaded for a test to change as a job would."""
    path = tmp_path / "disk.map"
    write_map(path)
    return path, mapfile.load(str(path)).rmap


def test_live_frames_draw_what_a_fresh_frame_draws(tmp_path: Path) -> None:
    """Frames after changes, each drawn only where the map changed, show every cell as a
    widget drawing that snapshot from scratch does."""
    path, rmap = sample_map(tmp_path)
    look = MapLook(ascii=True, monochrome=True)

    def cells_on_screen(widget: SectorMap) -> list[str]:
        return [widget.render_line(y).text for y in range(widget.size.height)]

    async def scenario(pilot: Pilot) -> None:
        widget = map_widget(pilot)
        rng = random.Random(5)
        widget.show(rmap.snapshot())
        for _ in range(10):
            job_like_changes(rng, rmap, rng.choice((1, 20, 200)))
            snapshot = rmap.snapshot()
            widget.show(snapshot)
            columns, rows = widget.size
            count = columns * rows
            fresh = cell_states(snapshot, 0, rmap.size, cell_bytes_for(rmap.size, count), count)
            expected = "".join(look.glyphs[chr(code)] if code else " " for code in fresh)
            assert "".join(cells_on_screen(widget)) == expected  # the cursor: same glyph

    drive(make_app(map_path=str(path), look=look), scenario)


def test_the_cursor_line_follows_changes_under_the_cursor(tmp_path: Path) -> None:
    """The cursor's exact counts are told again when the job writes under the cursor; a
    change elsewhere leaves them as they are."""
    path, rmap = sample_map(tmp_path)

    async def scenario(pilot: Pilot) -> None:
        widget = map_widget(pilot)
        cursor_line = pilot.app.screen.query_one("#cursor")
        widget.show(rmap.snapshot())
        await pilot.pause()
        begin, end = widget.cursor_range()
        rmap.set(end - 3 * SECTOR, 3 * SECTOR, BAD)  # under the cursor
        widget.show(rmap.snapshot())
        await pilot.pause()
        assert widget.cursor_counts() == rmap.state_bytes(begin, end)
        assert "bad 1.5 KiB" in str(cursor_line.render())
        rmap.set(end + 7 * SECTOR, SECTOR, BAD)  # next cell: the cursor's counts stay
        widget.show(rmap.snapshot())
        await pilot.pause()
        assert "bad 1.5 KiB" in str(cursor_line.render())

    drive(make_app(map_path=str(path), look=MapLook()), scenario)
