"""The sector map: a whole device (or a zoomed region) in one screen of cells, one state each.

Each cell covers `cell_bytes` bytes and shows the worst state present in it, in the order
bad '-' > non-scraped '/' > non-trimmed '*' > non-tried '?' > finished '+'. An average (or
"most bytes wins") would hide a single bad sector in a cell covering a gigabyte; ranking by
severity never does, and a cell shows finished only when every byte in it is rescued.

A frame is computed from a MapSnapshot with one bisect per cell over the area starts and
`bytes.find` over the state bytes between them, so its cost grows with the number of cells,
not with the number of areas (a million-area map still draws in milliseconds). A live frame
computes only the cells whose bytes the job wrote since the last snapshot (the snapshot's
journal says where). Rows are cached as Strips and only rows whose cells changed are
repainted.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from rescue.rangemap import (
    BAD,
    FINISHED,
    NON_SCRAPED,
    NON_TRIED,
    NON_TRIMMED,
    MapSnapshot,
)
from rescue.units import human_size

SECTOR = 512
# most severe first: the first state found in a cell is the one it shows
PRIORITY = (BAD, NON_SCRAPED, NON_TRIMMED, NON_TRIED, FINISHED)
_PRIORITY_CODES = tuple(ord(state) for state in PRIORITY)
EMPTY = 0  # cell code of cells past the end of the view
_RUNS = re.compile(rb"(.)\1*", re.DOTALL)  # cells of one state in a row

STATE_NAMES = {NON_TRIED: "non-tried", NON_TRIMMED: "non-trimmed", NON_SCRAPED: "non-scraped",
               BAD: "bad", FINISHED: "finished"}
# A distinct character per state, so the map reads without colour too.
UNICODE_GLYPHS = {NON_TRIED: "░", NON_TRIMMED: "▒", NON_SCRAPED: "▓", BAD: "X", FINISHED: "█"}
ASCII_GLYPHS = {NON_TRIED: ".", NON_TRIMMED: "*", NON_SCRAPED: "/", BAD: "X", FINISHED: "#"}
POSITION_GLYPH = "@"
LEGEND_ORDER = (FINISHED, NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD)
# terminals whose fonts or line disciplines cannot be trusted with block characters or colour
ASCII_TERMS = ("linux", "vt100", "vt102", "vt220", "vt320", "dumb", "ansi")
MONO_TERMS = ("vt100", "vt102", "vt220", "vt320", "dumb")


@dataclass(frozen=True)
class MapLook:
    """How the app draws, chosen once from the terminal: ASCII characters only (the map's
    cells, and every screen through rescue.tui.glyphs), and/or no colour."""

    ascii: bool = False
    monochrome: bool = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> MapLook:
        """ASCII on serial and console terminals, monochrome there and when NO_COLOR is set."""
        env = os.environ if env is None else env
        term = env.get("TERM", "")
        return cls(ascii=term in ASCII_TERMS or term.startswith("vt"),
                   monochrome=bool(env.get("NO_COLOR")) or term in MONO_TERMS
                   or term.startswith("vt"))

    @property
    def glyphs(self) -> dict[str, str]:
        return ASCII_GLYPHS if self.ascii else UNICODE_GLYPHS


def cell_bytes_for(span: int, cells: int) -> int:
    """Bytes per cell so `cells` cells cover `span` bytes; whole sectors once span allows."""
    per_cell = max(-(-span // max(cells, 1)), 1)
    if span < SECTOR:
        return per_cell
    return -(-per_cell // SECTOR) * SECTOR


def cell_states(snapshot: MapSnapshot, begin: int, end: int, cell_bytes: int,
                count: int) -> bytes:
    """The state code of `count` cells of `cell_bytes` from `begin`; EMPTY past `end`.

    One bisect per cell finds the areas it overlaps ([lo, hi) in the snapshot's arrays); the
    most severe state among them is found with `bytes.find`, which runs in C. Each bisect is
    first tried over twice the areas an average cell holds, which on a million-area map
    halves its comparisons (each one reads the array and makes an int).
    """
    starts, states = snapshot.starts, snapshot.states
    end = min(end, snapshot.size)
    out = bytearray(count)
    n = len(states)
    lo = bisect_right(starts, begin) - 1
    view_areas = bisect_left(starts, min(end, begin + count * cell_bytes), lo) - lo
    reach = 2 * view_areas // max(count, 1) + 2
    for k in range(count):
        cell_begin = begin + k * cell_bytes
        if cell_begin >= end:
            break
        cell_end = min(cell_begin + cell_bytes, end)
        near = lo + reach
        if near < n and starts[near] >= cell_end:  # areas [lo, hi) start before cell_end
            hi = bisect_left(starts, cell_end, lo, near)
        else:
            hi = bisect_left(starts, cell_end, lo)
        for code in _PRIORITY_CODES:
            if states.find(code, lo, hi) >= 0:
                out[k] = code
                break
        lo = hi if hi < n and starts[hi] == cell_end else hi - 1
    return bytes(out)


def refreshed_cells(cells: bytes, snapshot: MapSnapshot, begin: int, end: int,
                    cell_bytes: int, spans: list[tuple[int, int]]) -> bytes:
    """`cells` of an older snapshot brought up to `snapshot`, which differs from it only
    inside `spans`: only the cells those overlap are computed again."""
    out = bytearray(cells)
    count = len(cells)
    for span_begin, span_end in spans:
        first = max((span_begin - begin) // cell_bytes, 0)
        last = min(-(-(span_end - begin) // cell_bytes), count)
        if first < last:
            out[first:last] = cell_states(snapshot, begin + first * cell_bytes, end, cell_bytes,
                                          last - first)
    return bytes(out)


def describe_counts(counts: Mapping[str, int]) -> str:
    """'finished 1.5 MiB · bad 512 B' for the states present, most severe last."""
    parts = [f"{STATE_NAMES[state]} {human_size(counts[state])}"
             for state in LEGEND_ORDER if counts.get(state)]
    return " · ".join(parts) or "nothing"


class SectorMap(Widget, can_focus=True):
    """The live sector map. Feed it snapshots with `show()`; arrows move the cursor, enter
    zooms into the cursor's cell, backspace or escape zooms back out."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "sector-map--non-tried", "sector-map--non-trimmed", "sector-map--non-scraped",
        "sector-map--bad", "sector-map--finished", "sector-map--cursor",
        "sector-map--position",
    }
    DEFAULT_CSS = """
    SectorMap { height: 1fr; min-height: 3; }
    SectorMap > .sector-map--non-tried { color: ansi_bright_black; }
    SectorMap > .sector-map--non-trimmed { color: ansi_yellow; }
    SectorMap > .sector-map--non-scraped { color: ansi_magenta; }
    SectorMap > .sector-map--bad { color: ansi_bright_red; text-style: bold; }
    SectorMap > .sector-map--finished { color: ansi_green; }
    SectorMap > .sector-map--cursor { text-style: reverse; }
    SectorMap > .sector-map--position { text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1, 0)", "Left", show=False),
        Binding("right", "move(1, 0)", "Right", show=False),
        Binding("up", "move(0, -1)", "Up", show=False),
        Binding("down", "move(0, 1)", "Down", show=False),
        Binding("home", "jump(0)", "First cell", show=False),
        Binding("end", "jump(-1)", "Last cell", show=False),
        Binding("enter", "zoom_in", "Zoom"),
        Binding("backspace", "zoom_out", "Unzoom"),
        Binding("escape", "zoom_out", "Unzoom", show=False),
    ]

    class CursorMoved(Message):
        """The cursor, the zoom or the map under the cursor changed."""

        def __init__(self, sector_map: SectorMap) -> None:
            super().__init__()
            self.sector_map = sector_map

        @property
        def control(self) -> SectorMap:
            return self.sector_map

    def __init__(self, look: MapLook | None = None, *, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.look = look or MapLook.from_environment()
        self.snapshot: MapSnapshot | None = None
        self.position: int | None = None
        self.view = (0, 0)  # [begin, end) of the bytes shown
        self.cursor = 0  # byte offset inside the cursor's cell
        self._zoom_stack: list[tuple[tuple[int, int], int]] = []
        self._cells = b""
        self._columns = 0
        self._cell_bytes = 1
        self._rows: list[Strip | None] = []
        self._styles: dict[int, Style] = {}

    # ---- data in ---------------------------------------------------------------------------

    def show(self, snapshot: MapSnapshot, position: int | None = None) -> None:
        """Draw a new snapshot; only rows whose cells changed are repainted, and CursorMoved
        is posted only when the map under the cursor may have changed."""
        if self.snapshot is None or snapshot.size != self.snapshot.size:
            self.view = (0, snapshot.size)
            self._zoom_stack.clear()
            self.cursor = 0
        old_position_cell = self._position_cell()
        older, self.snapshot, self.position = self.snapshot, snapshot, position
        spans = snapshot.changed_since(older) if older is not None else None
        changed = self._recompute(spans)
        new_position_cell = self._position_cell()
        if old_position_cell != new_position_cell:
            changed.update(self._row_of(c) for c in (old_position_cell, new_position_cell)
                           if c is not None)
        self._invalidate_rows(changed)
        begin, end = self.cursor_range()
        if spans is None or any(b < end and e > begin for b, e in spans):
            self.post_message(self.CursorMoved(self))

    # ---- geometry --------------------------------------------------------------------------

    @property
    def cell_bytes(self) -> int:
        return self._cell_bytes

    @property
    def cell_count(self) -> int:
        """Cells that hold bytes of the view (the last row may be partly empty)."""
        begin, end = self.view
        return -(-(end - begin) // self._cell_bytes) if end > begin else 0

    def _capacity(self) -> tuple[int, int]:
        return max(self.size.width, 1), max(self.size.height, 1)

    def _recompute(self, spans: list[tuple[int, int]] | None = None) -> set[int]:
        """Recompute the cells (only those `spans` overlap, the map having changed only there
        since the last frame, when that was drawn in the same view); return the rows that
        differ from the last frame."""
        if self.snapshot is None:
            return set()
        columns, rows = self._capacity()
        begin, end = self.view
        cell_bytes = cell_bytes_for(end - begin, columns * rows)
        same_cells = (columns, cell_bytes, len(self._cells)) == (
            self._columns, self._cell_bytes, columns * rows)
        if spans is not None and same_cells:
            cells = refreshed_cells(self._cells, self.snapshot, begin, end, cell_bytes, spans)
        else:
            cells = cell_states(self.snapshot, begin, end, cell_bytes, columns * rows)
        if columns != self._columns or cell_bytes != self._cell_bytes:
            self._columns, self._cell_bytes, self._cells = columns, cell_bytes, cells
            self._rows = [None] * rows
            return set(range(rows))
        old, self._cells = self._cells, cells
        if len(self._rows) != rows:
            self._rows = [None] * rows
            return set(range(rows))
        return {y for y in range(rows)
                if old[y * columns:(y + 1) * columns] != cells[y * columns:(y + 1) * columns]}

    def _cell_of(self, pos: int) -> int:
        return (pos - self.view[0]) // self._cell_bytes

    def _row_of(self, cell: int) -> int:
        return cell // max(self._columns, 1)

    def _position_cell(self) -> int | None:
        if self.position is None or not self.view[0] <= self.position < self.view[1]:
            return None
        return self._cell_of(self.position)

    def cursor_cell(self) -> int:
        return self._cell_of(self.cursor)

    def cursor_range(self) -> tuple[int, int]:
        """[begin, end) of the bytes under the cursor."""
        begin = self.view[0] + self.cursor_cell() * self._cell_bytes
        return begin, min(begin + self._cell_bytes, self.view[1])

    def cursor_counts(self) -> dict[str, int]:
        """Bytes of each state under the cursor, exactly (not the cell's weighted state)."""
        if self.snapshot is None:
            return {}
        return self.snapshot.state_bytes(*self.cursor_range())

    def describe_cursor(self) -> str:
        if self.snapshot is None:
            return ""
        begin, end = self.cursor_range()
        zoom = f" zoom {len(self._zoom_stack)}" if self._zoom_stack else ""
        return (f"{begin:#x}–{end:#x} ({human_size(end - begin)}/cell{zoom}): "
                f"{describe_counts(self.cursor_counts())}")

    def legend(self) -> Text:
        """Each state's character in its style, for a legend line under the map."""
        text = Text()
        for state in LEGEND_ORDER:
            text.append(self.look.glyphs[state], self._style_for(ord(state)))
            text.append(f" {STATE_NAMES[state]}  ")
        text.append(POSITION_GLYPH, self._style_for(ord(FINISHED)) + self._extra("position"))
        text.append(" position")
        return text

    # ---- cursor and zoom -------------------------------------------------------------------

    def _move_cursor_to(self, cell: int) -> None:
        count = self.cell_count
        if not count:
            return
        cell = min(max(cell, 0), count - 1)
        old = self.cursor_cell()
        self.cursor = self.view[0] + cell * self._cell_bytes
        self._invalidate_rows({self._row_of(old), self._row_of(cell)})
        self.post_message(self.CursorMoved(self))

    def action_move(self, dx: int, dy: int) -> None:
        self._move_cursor_to(self.cursor_cell() + dx + dy * self._columns)

    def action_jump(self, cell: int) -> None:
        self._move_cursor_to(cell if cell >= 0 else self.cell_count - 1)

    def can_zoom_in(self) -> bool:
        return self.snapshot is not None and self._cell_bytes > SECTOR

    def action_zoom_in(self) -> None:
        if not self.can_zoom_in():
            self.app.bell()
            return
        self._zoom_stack.append((self.view, self.cursor))
        self._set_view(self.cursor_range(), self.cursor_range()[0])

    def action_zoom_out(self) -> None:
        if self._zoom_stack:
            view, cursor = self._zoom_stack.pop()
            self._set_view(view, cursor)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "zoom_out":
            return bool(self._zoom_stack)  # unzoomed, escape belongs to the screen
        return True

    def _set_view(self, view: tuple[int, int], cursor: int) -> None:
        self.view, self.cursor = view, cursor
        self._cell_bytes = 0  # forces a full recompute
        self._invalidate_rows(self._recompute())
        self.refresh_bindings()
        self.post_message(self.CursorMoved(self))

    # ---- drawing ---------------------------------------------------------------------------

    def on_resize(self) -> None:
        if self.snapshot is not None:
            self._cell_bytes = 0
            self._invalidate_rows(self._recompute())
            self.post_message(self.CursorMoved(self))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._rows = [None] * len(self._rows)

    def _extra(self, component: str) -> Style:
        return self.get_component_rich_style(f"sector-map--{component}", partial=True)

    def _style_for(self, code: int) -> Style:
        style = self._styles.get(code)
        if style is None:
            if code == EMPTY:
                style = Style()
            elif self.look.monochrome:
                style = Style(bold=True) if code == ord(BAD) else Style()
            else:
                style = self._extra(STATE_NAMES[chr(code)])
            self._styles[code] = style
        return style

    def _invalidate_rows(self, rows: set[int]) -> None:
        width = self.size.width
        for y in rows:
            if 0 <= y < len(self._rows):
                self._rows[y] = None
                self.refresh(Region(0, y, width, 1))

    def render_line(self, y: int) -> Strip:
        if y >= len(self._rows) or self.snapshot is None:
            return Strip.blank(self.size.width)
        strip = self._rows[y]
        if strip is None:
            strip = self._rows[y] = self._build_row(y)
        return strip

    def _build_row(self, y: int) -> Strip:
        """One row of cells as segments, neighbouring cells of one look joined; runs of one
        state are found by a regular expression, so a row costs per run, not per cell."""
        columns = self._columns
        first = y * columns
        row = self._cells[first:first + columns]
        marked = sorted({cell - first for cell in (self.cursor_cell(), self._position_cell())
                         if cell is not None and first <= cell < first + len(row)})
        glyphs = self.look.glyphs
        pieces: list[tuple[str, Style]] = []
        for run in _RUNS.finditer(row):
            start, stop = run.span()
            code = row[start]
            style = self._style_for(code)
            glyph = glyphs[chr(code)] if code else " "
            for x in marked:
                if start <= x < stop:
                    pieces.append((glyph * (x - start), style))
                    pieces.append(self._marked_cell(first + x, glyph, style))
                    start = x + 1
            pieces.append((glyph * (stop - start), style))
        segments: list[Segment] = []
        for text, style in pieces:
            if not text:
                continue
            if segments and segments[-1].style == style:
                segments[-1] = Segment(segments[-1].text + text, style)
            else:
                segments.append(Segment(text, style))
        return Strip(segments, len(row))

    def _marked_cell(self, cell: int, glyph: str, style: Style) -> tuple[str, Style]:
        """The position's '@' and the cursor's highlight on one cell."""
        if cell == self._position_cell():
            glyph = POSITION_GLYPH
            style = style + self._extra("position")
        if cell == self.cursor_cell():
            style = style + (Style(reverse=True) if self.look.monochrome
                             else self._extra("cursor"))
        return glyph, style
