"""A folder picker for where an image goes: folders only, with the free space of each."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Footer, Static

from rescue.units import human_size


def free_space(folder: str) -> int | None:
    """Bytes an unprivileged writer may still use in `folder`, or None if it cannot be told."""
    try:
        vfs = os.statvfs(folder)
    except OSError:
        return None
    return vfs.f_bavail * vfs.f_frsize


def describe_folder(folder: str) -> str:
    free = free_space(folder)
    return f"{folder}: {'free space unknown' if free is None else human_size(free) + ' free'}"


class FolderTree(DirectoryTree):
    """A DirectoryTree that lists folders only; enter picks, space opens."""

    auto_expand = False
    ICON_NODE = "+ "  # plain characters: serial consoles lack emoji and most symbols
    ICON_NODE_EXPANDED = "- "
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Choose"),
        Binding("space", "toggle_node", "Open/close"),
    ]

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [path for path in paths if path.is_dir() and not path.name.startswith(".")]


class FolderPicker(ModalScreen[str | None]):
    """Dismisses with the chosen folder, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("backspace", "parent", "Parent folder"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start if os.path.isdir(start) else "/"

    def compose_heading(self) -> ComposeResult:
        """The question above the tree."""
        yield Static("Where should the image go?", markup=False)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="picker"):
            yield from self.compose_heading()
            yield FolderTree(self.start, id="tree")
            yield Static(describe_folder(self.start), id="free", markup=False)
        yield Footer()

    @property
    def folder_tree(self) -> FolderTree:
        return self.query_one("#tree", FolderTree)

    def highlighted(self) -> str:
        node = self.folder_tree.cursor_node
        if node is None or node.data is None:
            return str(self.folder_tree.path)
        return str(node.data.path)

    def on_tree_node_highlighted(self, event: DirectoryTree.NodeHighlighted) -> None:
        self.query_one("#free", Static).update(describe_folder(self.highlighted()))

    def on_directory_tree_directory_selected(self, event: DirectoryTree.DirectorySelected
                                             ) -> None:
        event.stop()
        self.dismiss(str(event.path))

    def action_parent(self) -> None:
        parent = os.path.dirname(str(self.folder_tree.path).rstrip("/")) or "/"
        self.folder_tree.path = parent
        self.query_one("#free", Static).update(describe_folder(parent))
