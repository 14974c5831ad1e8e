"""A mapfile's sector map as an SVG picture, for a report: drawn by rich, no app started.

The cells are the console's (each shows the worst state in it, so a lone bad sector stays
visible), with the legend and each state's total under them.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.style import Style
from rich.text import Text

from rescue.errors import DestinationError, UsageError
from rescue.formats.mapfile import Mapfile
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED
from rescue.tui.widgets.sector_map import (
    LEGEND_ORDER,
    STATE_NAMES,
    MapLook,
    cell_bytes_for,
    cell_states,
)
from rescue.units import human_size

# the console's colours (the sector map's CSS), as rich names them
COLOURS = {NON_TRIED: Style(color="bright_black"), NON_TRIMMED: Style(color="yellow"),
           NON_SCRAPED: Style(color="magenta"), BAD: Style(color="bright_red", bold=True),
           FINISHED: Style(color="green")}
MIN_WIDTH = 20  # columns the legend needs to stay readable


def picture_lines(mapfile: Mapfile, width: int, height: int, look: MapLook) -> list[Text]:
    """The map in `width` x `height` cells at most, then the legend with each state's bytes
    and share, then the totals."""
    if width < MIN_WIDTH or height < 1:
        raise UsageError(f"--width must be at least {MIN_WIDTH} and --height at least 1")
    snapshot = mapfile.rmap.snapshot()
    size = snapshot.size
    cell_bytes = cell_bytes_for(size, width * height)
    count = -(-size // cell_bytes)
    cells = cell_states(snapshot, 0, size, cell_bytes, count)
    glyphs = look.glyphs

    def style(state: str) -> Style:
        return Style() if look.monochrome else COLOURS[state]

    lines = []
    for row in range(0, count, width):
        text = Text()
        for code in cells[row:row + width]:
            state = chr(code)
            text.append(glyphs[state], style(state))
        lines.append(text)
    totals = mapfile.rmap.totals()
    lines.append(Text(f"{human_size(size)} in {count} cells of {human_size(cell_bytes)}"))
    for state in LEGEND_ORDER:
        share = 100 * totals[state] / size if size else 0.0
        lines.append(Text.assemble((glyphs[state], style(state)),
                                   f" {STATE_NAMES[state]:<12} {human_size(totals[state]):>10}"
                                   f"  {share:6.2f}%  ({totals[state]} bytes)"))
    return lines


def save_svg(mapfile: Mapfile, path: str, title: str, width: int, height: int,
             look: MapLook) -> None:
    """Draw the picture on a recording console that prints nowhere, and save it as SVG."""
    lines = picture_lines(mapfile, width, height, look)
    console = Console(record=True, width=max(width, 60), file=io.StringIO(),
                      color_system=None if look.monochrome else "truecolor",
                      force_terminal=True, legacy_windows=False)
    for line in lines:
        console.print(line, overflow="crop", no_wrap=True)
    try:
        console.save_svg(path, title=title)
    except OSError as exc:
        raise DestinationError(f"cannot write {path}: {exc.strerror or exc}") from None
