"""Lines of text that a job's frames update."""

from __future__ import annotations

from textual.widgets import Static


def show_text(static: Static, text: str) -> None:
    """Show `text`, redrawn only when it changed and laid out again only when its number of
    lines did: a frame then costs the screen a repaint of a few lines, not a new layout,
    which the job, running in the same process, would pay for."""
    shown = static.content
    if text == shown:
        return
    same_height = isinstance(shown, str) and shown != "" and \
        shown.count("\n") == text.count("\n")
    static.update(text, layout=not same_height)
