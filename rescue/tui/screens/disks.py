"""The Disks screen, the app's home: every disk and partition, live, with health and actions.

Discovery and SMART run in thread workers (smartctl can take seconds per drive, discovery reads
signatures off every device); the hotplug stream runs in an async worker and triggers a fresh
discovery after each burst of events. The table is rebuilt only when what it shows changed.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from rescue.devices.discover import Disk, discover
from rescue.devices.health import Health, check_health
from rescue.devices.hotplug import HotplugMonitor
from rescue.sim.spec import SECTOR, FaultySpec
from rescue.tui.describe import Device, describe, every_device, notes
from rescue.tui.host import JobHost, host_of
from rescue.tui.screens.image_picker import ImagePicker
from rescue.tui.screens.image_wizard import ImageWizard
from rescue.tui.screens.receive import ReceiveScreen
from rescue.tui.screens.restore_wizard import RestoreWizard
from rescue.units import human_size

# (heading, width); the last column takes what is left of 80 columns
COLUMNS = (("DEVICE", 13), ("SIZE", 9), ("TYPE", 6), ("FS", 8), ("HEALTH", 10), ("NOTES", 21))
HEALTH_WORDS = {"good": "good", "warning": "WORN", "failing": "FAILING", "unsupported": "no SMART",
                "unavailable": "unknown", "unknown": "unknown"}


def simulated_disk(spec: str) -> Disk:
    """The demo's simulated disk as the Disks screen lists it."""
    return Disk(path=spec, name="simulated", size=FaultySpec.parse(spec).size,
                logical_sector_size=SECTOR, physical_sector_size=SECTOR,
                model="simulated failing disk", vendor=None, serial=None, transport="sim",
                rotational=None, removable=None, read_only=True, table_type=None, fstype=None,
                label=None, uuid=None, backing_file=None, mountpoints=(), holders=(),
                system_roles=())


def health_word(health: Health | None) -> str:
    return "..." if health is None else HEALTH_WORDS.get(health.status, health.status)


def row_cells(item: Device, health: Health | None) -> tuple[str, ...]:
    if isinstance(item, Disk):
        return (item.path, human_size(item.size), item.transport or "-",
                item.table_type or item.fstype or "", health_word(health), notes(item))
    return (f" └{item.name}", human_size(item.size), f"part{item.number}", item.fstype or "",
            "", notes(item))


class InspectScreen(ModalScreen[None]):
    """Everything known about one disk or partition."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(self.text, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dialog").focus()  # arrows scroll a long partition list


class DisksScreen(Screen):
    """The home screen; the list follows disks coming and going. Given `simulated` specs
    (the demo), it lists those disks alone and offers nothing that opens a real device."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "image", "Image"),
        Binding("r", "restore", "Restore"),
        Binding("v", "inspect", "Inspect"),
        Binding("o", "open_image", "Browse"),
        Binding("g", "rediscover", "Refresh"),
        Binding("e", "receive", "Receive", show=False),  # the footer is full at 80 columns
    ]
    # each can open any path typed, or writes a real disk
    REAL_DEVICE_ACTIONS = ("image", "restore", "open_image", "receive")
    HEADING = "Disks"

    def __init__(self, simulated: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.simulated = simulated
        self.disks: list[Disk] = []
        self.health: dict[str, Health] = {}
        self._checking: set[str] = set()
        self._shown: list[tuple[str, tuple[str, ...]]] = []
        self.hotplug_note = "hotplug: starting"
        self.events_seen = 0

    def compose(self) -> ComposeResult:
        yield Static(self.HEADING, id="title", markup=False)
        table: DataTable[str] = DataTable(id="disks", cursor_type="row", zebra_stripes=False)
        for heading, width in COLUMNS:
            table.add_column(heading, width=width, key=heading)
        yield table
        yield Static(id="detail", markup=False)
        yield Footer()

    @property
    def rescue_app(self) -> JobHost:
        return host_of(self)

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#disks", DataTable)

    def on_mount(self) -> None:
        self.table.focus()
        if self.simulated:
            self.hotplug_note = ("demo: simulated disks only; no real disk is listed, read or "
                                 "written")
        else:
            self.watch_hotplug()
        self.action_rediscover()

    def on_screen_resume(self) -> None:
        if self.disks:  # mounts change without hotplug events, e.g. after a job
            self.action_rediscover()

    # ---- data ------------------------------------------------------------------------------

    def action_rediscover(self) -> None:
        self.run_worker(self._discover, name="discover disks", group="discover", thread=True,
                        exclusive=True, exit_on_error=False)

    def _discover(self) -> None:
        if self.simulated:
            disks = [simulated_disk(spec) for spec in self.simulated]
            self.health = {disk.path: Health(disk.path, "unsupported", "no SMART data: a "
                                             "simulated disk has none") for disk in disks}
        else:
            disks = discover()
        self.app.call_from_thread(self._discovered, disks)

    def _discovered(self, disks: list[Disk]) -> None:
        self.disks = disks
        present = {disk.path for disk in disks}
        self.health = {path: found for path, found in self.health.items() if path in present}
        for disk in disks:
            if disk.path not in self.health and disk.path not in self._checking:
                self._checking.add(disk.path)
                self.run_worker(lambda path=disk.path: self._check(path),
                                name=f"health {disk.path}", group="health", thread=True,
                                exit_on_error=False)
        self.show_rows()

    def _check(self, path: str) -> None:
        found = check_health(path)
        self.app.call_from_thread(self._checked, path, found)

    def _checked(self, path: str, found: Health) -> None:
        self._checking.discard(path)
        self.health[path] = found
        self.show_rows()

    @work(group="hotplug", exclusive=True, exit_on_error=False, name="hotplug")
    async def watch_hotplug(self) -> None:
        try:
            monitor = HotplugMonitor()
        except OSError as error:
            self.hotplug_note = f"hotplug unavailable ({error.strerror}): g refreshes"
            self.show_detail()
            return
        async with monitor:
            self.hotplug_note = f"hotplug: {monitor.source} events"
            self.show_detail()
            async for event in monitor:
                self.events_seen += 1
                self.hotplug_note = (f"hotplug: {event.name} {event.action} "
                                     f"({monitor.source} events)")
                self.action_rediscover()

    # ---- drawing ---------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, tuple[str, ...]]]:
        rows = []
        for disk in self.disks:
            rows.append((disk.path, row_cells(disk, self.health.get(disk.path))))
            rows.extend((part.path, row_cells(part, None)) for part in disk.partitions)
        return rows

    def paths(self) -> list[str]:
        """The devices listed, in table order."""
        return [key for key, _ in self._shown]

    def show_rows(self) -> None:
        """Rebuild the table when its content changed, keeping the cursor on its device."""
        rows = self.rows()
        if rows != self._shown:
            table = self.table
            keep = self.selected_path()
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            self._shown = rows
            keys = [key for key, _ in rows]
            if keep in keys:
                table.move_cursor(row=keys.index(keep))
        self.query_one("#title", Static).update(self.title_text(len(self.disks)))
        self.show_detail()

    def title_text(self, count: int) -> str:
        if self.simulated:
            return f"Disks (demo): {count} simulated disk{'s' if count != 1 else ''}"
        return (f"Disks — {count} disk{'s' if count != 1 else ''}; the running system's are "
                "marked SYSTEM")

    def show_detail(self) -> None:
        item = self.selected()
        if item is None:
            text = "no disks found" if not self.disks else ""
        else:
            disk = item if isinstance(item, Disk) else self.disk_of(item)
            health = self.health.get(disk.path) if disk is not None else None
            where = (f"{item.model or ''} {item.serial or ''}".strip()
                     if isinstance(item, Disk) else f"partition {item.number} of {item.disk}")
            text = (f"{item.path}  {human_size(item.size)}  {where}\n"
                    f"{health.summary if health is not None else 'health: checking...'}")
        self.query_one("#detail", Static).update(f"{text}\n{self.hotplug_note}")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    # ---- selection and actions -------------------------------------------------------------

    def selected_path(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    def selected(self) -> Device | None:
        path = self.selected_path()
        return next((item for item in every_device(self.disks) if item.path == path), None)

    def disk_of(self, item: Device) -> Disk | None:
        if isinstance(item, Disk):
            return item
        return next((disk for disk in self.disks if disk.path == item.disk), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.REAL_DEVICE_ACTIONS:
            return not self.simulated
        if action == "inspect":  # a wizard works without a selection: paths can be typed
            return self.selected() is not None or None
        return True

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_inspect()

    def action_inspect(self) -> None:
        item = self.selected()
        if item is not None:
            disk = self.disk_of(item)
            health = self.health.get(disk.path) if isinstance(item, Disk) and disk else None
            self.app.push_screen(InspectScreen(describe(item, health)))

    def action_image(self) -> None:
        item = self.selected()
        self.app.push_screen(ImageWizard(item.path if item else "", self.disks))

    def action_open_image(self) -> None:
        self.app.push_screen(ImagePicker("Which image to browse?"), self._image_chosen)

    def _image_chosen(self, path: str | None) -> None:
        if path:
            self.rescue_app.open_image(path)

    def action_restore(self) -> None:
        item = self.selected()
        self.app.push_screen(RestoreWizard(target=item.path if item else "", disks=self.disks))

    def action_receive(self) -> None:
        item = self.selected()
        if item is not None:
            self.app.push_screen(ReceiveScreen(item.path))


class ReceiveHome(DisksScreen):
    """The console of a stick booted to receive a deployment (`rescue.mode=receive`): the
    disks, where Enter opens the receiver for the one chosen. Nothing is written before that
    disk's name is typed on the receiver's screen."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter,e", "receive", "Receive")]
    HEADING = "Receive a deployment"

    def title_text(self, count: int) -> str:
        return (f"{self.HEADING}: pick the disk it writes, then Enter ({count} disk"
                f"{'s' if count != 1 else ''} found)")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.prevent_default()  # the Disks screen's inspection is not what Enter means here
        self.action_receive()
