"""What the job screen and the map viewer share: title, counters, the map, legend and cursor."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from rescue.tui.widgets.sector_map import MapLook, SectorMap
from rescue.tui.widgets.text import show_text


class MapScreen(Screen):
    """A screen built around one SectorMap; subclasses add rows with `compose_extra()`."""

    def __init__(self, look: MapLook | None = None) -> None:
        super().__init__()
        self.look = look

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
        show_text(self.query_one("#cursor", Static), event.sector_map.describe_cursor())

    def set_title(self, text: str) -> None:
        show_text(self.query_one("#title", Static), text)

    def set_counters(self, text: str) -> None:
        show_text(self.query_one("#counters", Static), text)
