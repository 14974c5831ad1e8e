"""What the job screen and the map viewer share: title, counters, the map, legend and cursor."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from rescue.tui.widgets.sector_map import MapLook, SectorMap


class MapScreen(Screen):
    """A screen built around one SectorMap; subclasses add rows with `compose_extra()`."""

    def __init__(self, look: MapLook | None = None) -> None:
        super().__init__()
        self.look = look
        self._texts: dict[str, str] = {}  # what each line of text shows now

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        yield Static(id="counters", markup=False)
        yield SectorMap(self.look, id="map")
        yield Static(id="legend")
        yield Static(id="cursor", markup=False)
        yield from self.compose_extra()
        yield Footer()

    def compose_extra(self) -> ComposeResult:
        yield from ()

    @property
    def sector_map(self) -> SectorMap:
        return self.query_one("#map", SectorMap)

    def on_mount(self) -> None:
        self.sector_map.focus()
        self.query_one("#legend", Static).update(self.sector_map.legend())

    def on_sector_map_cursor_moved(self, event: SectorMap.CursorMoved) -> None:
        self.set_text("#cursor", event.sector_map.describe_cursor())

    def set_title(self, text: str) -> None:
        self.set_text("#title", text)

    def set_counters(self, text: str) -> None:
        self.set_text("#counters", text)

    def set_text(self, selector: str, text: str) -> None:
        """Show `text` in a Static, redrawn only when it changed, and laid out again only
        when its number of lines did: a frame then costs the screen a repaint of a few lines
        instead of a new layout (the job it presents runs in this process)."""
        shown = self._texts.get(selector)
        if text == shown:
            return
        self._texts[selector] = text
        layout = shown is None or shown.count("\n") != text.count("\n")
        self.query_one(selector, Static).update(text, layout=layout)
