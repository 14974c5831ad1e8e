"""Checkboxes, option lists and selection lists that read without colour and in ASCII.

Textual draws checkboxes as `▐X▌` whether on or off, the state shown by colour alone, with
half-block sides; on an ASCII or monochrome terminal (the app's `-ascii`/`-mono` classes,
see rescue.tui.glyphs) they are drawn `[x]` and `[ ]` instead, three cells as before. An option
list shows its highlighted option by colour alone too (its styles carry no reverse video), so
without colour that option's lines are drawn in reverse video.
"""

from __future__ import annotations

from typing import TypeVar

from rich.segment import Segment
from rich.style import Style
from textual.content import Content
from textual.dom import DOMNode
from textual.strip import Strip
from textual.widgets import Checkbox as TextualCheckbox
from textual.widgets import OptionList as TextualOptionList
from textual.widgets import SelectionList as TextualSelectionList
from textual.widgets.option_list import OptionDoesNotExist

from rescue.tui.glyphs import ASCII_CLASS, MONO_CLASS

Value = TypeVar("Value")


def plain(node: DOMNode) -> bool:
    """Whether the app draws for an ASCII or monochrome terminal."""
    return any(node.app.has_class(name) for name in (ASCII_CLASS, MONO_CLASS))


REVERSE = Style(reverse=True)


def without_colour(node: DOMNode) -> bool:
    return node.app.has_class(MONO_CLASS)


def cursor_shown(options: TextualOptionList, y: int, line: Strip) -> Strip:
    """`line` (row `y` on screen) in reverse video when it belongs to the highlighted option
    and the app draws without colour."""
    if options.highlighted is None or not without_colour(options):
        return line
    try:
        index, _ = options._lines[options.scroll_offset.y + y]
    except IndexError:
        return line
    return line.apply_style(REVERSE) if index == options.highlighted else line


def box(ticked: bool) -> str:
    return "[x]" if ticked else "[ ]"


class Checkbox(TextualCheckbox):
    @property
    def _button(self) -> Content:
        if not plain(self):
            return super()._button
        return Content.styled(box(self.value), self.get_visual_style("toggle--button"))


class OptionList(TextualOptionList):
    def render_line(self, y: int) -> Strip:
        return cursor_shown(self, y, super().render_line(y))


class SelectionList(TextualSelectionList[Value]):
    def render_line(self, y: int) -> Strip:
        """Textual's line with its 3-cell button replaced by the box."""
        line = cursor_shown(self, y, super().render_line(y))
        if not plain(self):
            return line
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return line
        button = next(iter(line.crop(1, 2)))  # its style carries the option for the mouse
        ticked = selection.value in self.selected
        return Strip([Segment(box(ticked), button.style), *line.crop(3)], line.cell_length)
