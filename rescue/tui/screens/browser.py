"""The image browser: partitions and folders on the left, details on the right, extract.

Every read of the image (folder walks, damage look-ups, extraction) runs in a thread worker and
holds one lock, because the file-system and image readers serve one caller at a time. Folders
are listed in batches, so opening a folder of a million names never blocks or floods the tree.
The details of an entry say who owns it (where the file system keeps owners), its NTFS
alternate data streams and every range of it or of them that the image lacks.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker, WorkerState, get_current_worker

from rescue.errors import RescueError
from rescue.explore.extract import Report, extract
from rescue.explore.filesystem import Entry, FileSystem, mode_string, printable
from rescue.explore.session import ImageSession
from rescue.explore.volumes import Volume
from rescue.tui.host import host_of
from rescue.tui.screens.folder_picker import FolderPicker
from rescue.units import human_size

BATCH = 500  # entries added to the tree per batch


@dataclass
class Node:
    """What a tree node stands for. `pending` holds the rest of a folder still to list."""

    volume: Volume
    entry: Entry | None = None  # None: the volume itself, before its file system is opened
    lost: tuple[tuple[int, int], ...] = ()
    pending: Iterator[Entry] | None = None
    loaded: bool = False


def entry_label(entry: Entry, damaged: bool) -> Text:
    name = printable(entry.name, name=True) + ("/" if entry.kind == "dir" else "")
    if entry.target is not None:
        name += f" -> {printable(entry.target)}"
    if damaged:
        return Text(f"! {name}", style="bold red")
    return Text(f"  {name}")


def volume_label(volume: Volume, unreadable: int) -> Text:
    where = "whole image" if volume.number == 0 else f"partition {volume.number}"
    text = f"{where}: {volume.fstype or 'unknown file system'} {human_size(volume.size)}"
    if volume.label:
        text += f" {printable(volume.label.encode())!r}"
    if unreadable:
        return Text(f"! {text} ({human_size(unreadable)} unreadable)", style="bold red")
    return Text(f"  {text}")


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))


Ranges = tuple[tuple[int, int], ...]


def entry_details(entry: Entry, lost: Ranges, streams: list[tuple[Entry, Ranges]] | None = None,
                  owners: bool = True, metadata_lost: bool = False) -> str:
    """What the details pane says of an entry; `owners` is false for file systems that keep
    no Unix owners (FAT, exFAT, NTFS), whose files then belong to whoever extracts them."""
    lines = [
        f"path:   {entry.display_path}",
        f"kind:   {entry.kind}",
        f"size:   {human_size(entry.size)} ({entry.size} bytes)",
        f"mode:   {mode_string(entry)}",
        f"owner:  {entry.uid}:{entry.gid}" if owners else "owner:  none kept",
        f"mtime:  {_when(entry.mtime_ns)}",
        f"atime:  {_when(entry.atime_ns)}",
        f"inode:  {entry.inode}   links {entry.links}",
    ]
    if entry.target is not None:
        lines.append(f"target: {printable(entry.target)}")
    if metadata_lost:
        lines.append("DAMAGED: its metadata lies in an unreadable part of the image: what it "
                     "is and what it holds are unknown")
    lines += _damage_lines("DAMAGED", lost)
    if streams:
        lines.append(f"streams: {len(streams)}, extracted as NAME:STREAM")
        for stream, stream_lost in streams:
            flag = "!" if stream_lost else " "
            lines.append(f" {flag}:{printable(stream.stream or b'', name=True)}  "
                         f"{human_size(stream.size)}")
            lines += _damage_lines("  DAMAGED", stream_lost)
    return "\n".join(lines)


def _damage_lines(heading: str, lost: Ranges) -> list[str]:
    if not lost:
        return []
    total = sum(end - start for start, end in lost)
    lines = [f"{heading}: {human_size(total)} lost (extracted as zeros) at:"]
    lines += [f"  bytes {start}-{end}" for start, end in lost[:20]]
    if len(lost) > 20:
        lines.append(f"  ... and {len(lost) - 20} more ranges")
    return lines


EXTRACT_FOLDER = "extract"  # the key of the last folder extracted into, for the session
COUNTED = 20_000  # entries of a folder counted before extracting it; more are not waited for


def extracted_item(data: Node) -> str:
    """What `e` extracts, by name: a file with its size, a folder or a whole volume (their
    counts follow once `count_below` has walked them)."""
    if data.entry is None:
        return f"{volume_label(data.volume, 0).plain.strip()}, all of it"
    entry = data.entry
    if entry.kind == "dir":
        return f"{entry.display_path}/"
    return f"{entry.display_path} ({human_size(entry.size)})"


def count_below(fs: FileSystem, top: Entry, cancelled: Callable[[], bool]) -> str:
    """Files, folders and bytes below `top`, counting at most COUNTED entries."""
    files = folders = size = 0
    for seen, entry in enumerate(fs.walk(top), 1):
        if cancelled():
            break
        if seen > COUNTED:
            return f"more than {COUNTED} files and folders"
        if entry.kind == "dir":
            folders += 1
        else:
            files += 1
            size += entry.size
    return f"{files} file(s), {folders} folder(s), {human_size(size)}"


class ExtractPicker(FolderPicker):
    """The folder picker, asking where extracted files go and saying what they are."""

    def __init__(self, start: str, what: str) -> None:
        super().__init__(start)
        self.what = what

    def compose_heading(self) -> ComposeResult:
        yield Static("Extract into which folder?", markup=False)
        yield Static(f"  {self.what}", id="what", markup=False)

    def counted(self, count: str) -> None:
        for what in self.query("#what"):
            if isinstance(what, Static):
                what.update(f"  {self.what}: {count}")


class ImageBrowser(Screen[None]):
    """Browse an image's partitions and files; `e` extracts the highlighted item."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "extract", "Extract"),
        Binding("escape", "close", "Back"),
    ]
    DEFAULT_CSS = """
    ImageBrowser #panes { height: 1fr; }
    ImageBrowser #tree { width: 1fr; }
    ImageBrowser #details-pane { width: 1fr; border-left: solid $primary; padding: 0 1; }
    """

    def __init__(self, image_path: str) -> None:
        super().__init__()
        self.image_path = image_path
        self.session: ImageSession | None = None
        self.read_lock = threading.Lock()  # one caller at a time into the readers
        self.filesystems: dict[int, FileSystem] = {}
        self.last_report: Report | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Image: {self.image_path}  (opening...)", id="title", markup=False)
        with Horizontal(id="panes"):
            tree: Tree[Node] = Tree("image", id="tree")
            tree.show_root = False
            yield tree
            with VerticalScroll(id="details-pane"):
                yield Static("", id="details", markup=False)
        yield Footer()

    @property
    def file_tree(self) -> Tree[Node]:
        return self.query_one("#tree", Tree)

    def on_mount(self) -> None:
        self.run_worker(self._open, name="open image", thread=True, group="browse",
                        exit_on_error=False)

    def on_unmount(self) -> None:
        if self.session is not None:
            with self.read_lock:
                self.session.close()

    # -- workers (threads) --------------------------------------------------------------------

    def _open(self) -> None:
        session = ImageSession(self.image_path)
        volumes = [(volume, session.unreadable_bytes(volume))
                   for volume in session.layout.volumes]
        self.app.call_from_thread(self._opened, session, volumes)

    def _filesystem(self, volume: Volume) -> FileSystem:
        assert self.session is not None
        if volume.number not in self.filesystems:
            self.filesystems[volume.number] = self.session.filesystem(volume.number)
        return self.filesystems[volume.number]

    def _load(self, node: TreeNode[Node]) -> None:
        """List the next batch of a folder (or a volume's root), with each entry's damage."""
        data = node.data
        assert data is not None
        with self.read_lock:
            fs = self._filesystem(data.volume)
            if data.entry is None:
                data.entry = fs.lookup("/")
            if data.pending is None:
                data.pending = fs.children(data.entry)
            batch = [(entry, fs.lost(entry), fs.metadata_lost(entry))
                     for entry in itertools.islice(data.pending, BATCH)]
            more = len(batch) == BATCH
        self.app.call_from_thread(self._show_children, node, batch, more)

    def _describe(self, node: TreeNode[Node]) -> None:
        data = node.data
        if data is None or data.entry is None:
            return
        with self.read_lock:
            fs = self._filesystem(data.volume)
            lost = fs.lost(data.entry)
            metadata_lost = fs.metadata_lost(data.entry)
            streams = [(stream, fs.lost(stream)) for stream in fs.streams(data.entry)]
        self.app.call_from_thread(self._show_details, node, entry_details(
            data.entry, lost, streams, fs.posix_modes, metadata_lost))

    def _count(self, data: Node, picker: ExtractPicker) -> None:
        worker = get_current_worker()
        with self.read_lock:
            fs = self._filesystem(data.volume)
            count = count_below(fs, data.entry or fs.lookup("/"), lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.app.call_from_thread(picker.counted, count)

    def _extract(self, data: Node, destination: str) -> None:
        with self.read_lock:
            fs = self._filesystem(data.volume)
            entry = data.entry or fs.lookup("/")
            report = extract(fs, entry, destination, image=self.image_path)
        self.app.call_from_thread(self._extracted, report, destination)

    # -- results (UI thread) ------------------------------------------------------------------

    def _opened(self, session: ImageSession, volumes: list[tuple[Volume, int]]) -> None:
        self.session = session
        bad = sum(unreadable for _, unreadable in volumes)
        note = f", {human_size(bad)} unreadable" if bad else ""
        self.query_one("#title", Static).update(
            f"Image: {self.image_path}  ({len(volumes)} volume(s){note})   e: extract")
        for volume, unreadable in volumes:
            self.file_tree.root.add(volume_label(volume, unreadable), data=Node(volume),
                               allow_expand=True)  # a reader may know what our probe does not
        self.file_tree.focus()
        if self.file_tree.root.children:
            self.file_tree.move_cursor(self.file_tree.root.children[0])

    def _show_children(self, node: TreeNode[Node], batch: list[tuple[Entry, Ranges, bool]],
                      more: bool) -> None:
        data = node.data
        assert data is not None
        for child in list(node.children):  # the "more..." placeholder of the previous batch
            if child.data is data:
                child.remove()
        for entry, lost, metadata_lost in batch:
            node.add(entry_label(entry, bool(lost) or metadata_lost),
                     allow_expand=entry.kind == "dir", data=Node(data.volume, entry, lost))
        if more:
            node.add_leaf(Text("  ... more (enter)", style="dim"), data=data)
        data.loaded = True
        node.expand()

    def _show_details(self, node: TreeNode[Node], text: str) -> None:
        if self.file_tree.cursor_node is node:
            self.query_one("#details", Static).update(text)

    def _extracted(self, report: Report, destination: str) -> None:
        self.last_report = report
        streams = f", {report.streams} streams" if report.streams else ""
        summary = (f"{report.files} files{streams}, {report.directories} folders into "
                   f"{destination}; "
                   f"{len(report.damaged)} damaged, {len(report.missing)} not extracted, "
                   f"{len(report.skipped)} skipped")
        problems = [f"damaged: {path}" for path, _ in report.damaged[:5]]
        problems += [f"not extracted: {path} ({why})" for path, why in report.missing[:5]]
        self.notify("\n".join([summary, *problems]), title="Extracted",
                    severity="information" if report.complete else "warning", timeout=15)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Failures of this screen's workers become one line, never a traceback."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            event.stop()
            error = event.worker.error
            message = str(error) if isinstance(error, RescueError) else (
                f"{type(error).__name__}: {error}")
            if self.session is None:
                self.query_one("#title", Static).update(f"Image: {self.image_path}: {message}")
            else:
                self.query_one("#details", Static).update(f"{event.worker.name} failed:\n"
                                                          f"{message}")
            self.notify(message, title=event.worker.name, severity="error", timeout=15)

    # -- events and actions -------------------------------------------------------------------

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Node]) -> None:
        data = event.node.data
        if data is not None and not data.loaded:
            self.run_worker(lambda: self._load(event.node), name="list folder", thread=True,
                            group="browse", exit_on_error=False)

    def on_tree_node_selected(self, event: Tree.NodeSelected[Node]) -> None:
        parent = event.node.parent
        if parent is not None and event.node.data is parent.data:  # "more..." was chosen
            self.run_worker(lambda: self._load(parent), name="list folder", thread=True,
                            group="browse", exit_on_error=False)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Node]) -> None:
        data = event.node.data
        details = self.query_one("#details", Static)
        if data is None:
            return
        if event.node.parent is not None and data is event.node.parent.data:
            details.update("More entries in this folder: press enter to list them.")
            return
        if data.entry is None:
            volume = data.volume
            details.update(f"{volume.description}\nstart {volume.start}, "
                           f"{human_size(volume.size)}\nfile system: {volume.fstype or '?'}")
            return
        fs = self.filesystems.get(data.volume.number)
        details.update(entry_details(data.entry, data.lost,
                                     owners=fs.posix_modes if fs is not None else True))
        self.run_worker(lambda: self._describe(event.node), name="details", thread=True,
                        group="details", exclusive=True, exit_on_error=False)

    def action_extract(self) -> None:
        """Ask where to, starting where the last extraction of this session went, and say
        what is extracted (a folder's count comes from a worker)."""
        node = self.file_tree.cursor_node
        if node is None or node.data is None:
            return
        data = node.data
        folders = host_of(self).folders
        picker = ExtractPicker(folders.get(EXTRACT_FOLDER, os.getcwd()), extracted_item(data))

        def chosen(folder: str | None) -> None:
            self.workers.cancel_group(self, "count")
            if folder:
                folders[EXTRACT_FOLDER] = folder
                self.extract_to(data, folder)

        self.app.push_screen(picker, chosen)
        if data.entry is None or data.entry.kind == "dir":
            self.run_worker(lambda: self._count(data, picker), name="count", thread=True,
                            group="count", exclusive=True, exit_on_error=False)

    def extract_to(self, data: Node, destination: str) -> None:
        """Extract the item behind `data` into `destination`, in a worker."""
        self.notify(f"extracting into {destination}...")
        self.run_worker(lambda: self._extract(data, destination), name="extract", thread=True,
                        group="extract", exit_on_error=False)

    def action_close(self) -> None:
        self.app.pop_screen()
