"""What the console sends to a terminal that shows only ASCII (a VT220 on a serial line, the
Linux console): one table of stand-ins, applied to every line the app draws.

The stand-ins take exactly the cells of what they replace, so every widget keeps its layout:
box drawing becomes the `+-|` of Textual's `ascii` border, half blocks (input edges, toggle
and toast sides) become blanks, arrows and triangles become `> < ^ v`. Anything else outside
ASCII (an accented file name, an emoji icon) becomes its base letter or `?` per cell. The
app's own styles (rescue.tcss, `.-ascii`) choose ASCII borders and toggles where a widget
would otherwise rely on these blanks.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from rich.cells import cell_len
from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter

ASCII_CLASS = "-ascii"  # on the app: ASCII characters only
MONO_CLASS = "-mono"  # on the app: no colour; states shown by characters and reverse video

STAND_INS = {
    "…": ".", "→": ">", "←": "<", "↑": "^", "↓": "v", "▶": ">", "▸": ">", "►": ">",
    "◀": "<", "◂": "<", "▼": "v", "▾": "v", "▲": "^", "▴": "^", "—": "-", "–": "-", "‐": "-",
    "−": "-", "·": "|", "•": "*", "●": "*", "○": "o", "✗": "x", "✘": "x", "×": "x", "✓": "v",
    "✔": "v", "°": "o", "“": '"', "”": '"', "‘": "'", "’": "'", "«": "<", "»": ">",
    "\u00a0": " ", "⏎": "<", "⌫": "<", "█": "#", "▓": "#", "▒": ":", "░": ".",
    "📁": "+ ", "📂": "- ", "📄": "  ",
}
# Textual's and the app's key names, as words (the Footer shows ⏎ ⌫ ↑ otherwise)
KEY_WORDS = {"enter": "enter", "backspace": "bksp", "up": "up", "down": "down",
             "left": "left", "right": "right"}


@lru_cache(4096)
def ascii_for(char: str) -> str:
    """The ASCII stand-in for one character, as many cells wide as the character."""
    if char.isascii():
        return char
    if char in STAND_INS:
        return STAND_INS[char]
    if "\u2500" <= char <= "\u257f":  # box drawing
        name = unicodedata.name(char)
        if "HORIZONTAL" in name and "VERTICAL" not in name:
            return "-"
        if "VERTICAL" in name and "HORIZONTAL" not in name:
            return "|"
        return "+"
    if "\u2580" <= char <= "\u259f":  # half and eighth blocks: edges drawn in colour
        return " "
    width = cell_len(char)
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if c.isascii())
    if len(base) == width:
        return base
    return "?" * width


def to_ascii(text: str) -> str:
    """`text` with every character outside ASCII replaced by its stand-in."""
    if text.isascii():
        return text
    return "".join(ascii_for(char) for char in text)


class AsciiFilter(LineFilter):
    """Every line of every widget, in ASCII: the last step before the terminal, so nothing a
    widget draws (Textual's own glyphs, file names, error messages) escapes the table."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [segment if segment.text.isascii()
                else Segment(to_ascii(segment.text), segment.style, segment.control)
                for segment in segments]
