"""Choose an image to browse or restore: this session's images first, then a folder's, each
with where it came from, when, and whether its rescue finished; or type a path.

The folder is listed and each image summarised in a thread worker, one row at a time, so a big
folder or a slow, broken file never holds the screen; a file that is no readable image shows
why on its row and cannot be chosen.
"""

from __future__ import annotations

import os
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from rescue.formats.catalog import (
    COMPLETE,
    DAMAGED,
    UNREADABLE,
    ImageSummary,
    Listing,
    list_images,
    summarize,
)
from rescue.formats.clonezilla import sniff_folder
from rescue.tui.host import JobHost, host_of
from rescue.tui.jobs import RunningJob
from rescue.tui.screens.share_dialog import ShareDialog
from rescue.tui.widgets.toggles import OptionList
from rescue.units import human_size

IMAGES_FOLDER = "images"  # the key of the last folder images were chosen from
ROW = 66  # the characters of a row the list shows in its 76-column dialog
STATE_STYLES = {COMPLETE: "green", DAMAGED: "yellow", UNREADABLE: "red"}


def session_images(host: JobHost) -> list[str]:
    """The images this session's imaging jobs wrote, newest first."""
    paths = [running.job.request.dest for running in reversed(host.jobs)
             if isinstance(running, RunningJob)]
    return list(dict.fromkeys(paths))


def image_row(path: str, summary: ImageSummary | None, ours: bool) -> Text:
    """Two lines as wide as the list at 80 columns: name, format, size and state; then date,
    what the state means, and the source."""
    name = os.path.basename(path) + (" (this session)" if ours else "")
    if summary is None:
        return Text(f"{name[:ROW]}\n  reading...")
    size = human_size(summary.size) if summary.size is not None else "-"
    text = Text(f"{name[:36]:<36} {summary.format or '-':<5} {size:>9} ")
    text.append(summary.state, STATE_STYLES.get(summary.state, ""))
    facts = [summary.created, summary.detail.replace(path, os.path.basename(path))]
    if summary.source:
        facts.append(f"from {summary.source_line()}")
    text.append("\n  " + "  ".join(fact for fact in facts if fact)[:ROW - 2])
    return text


class ImagePicker(ModalScreen[str | None]):
    """Dismisses with the chosen image's path, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("backspace", "parent", "Parent folder", key_display="backspace"),
        Binding("ctrl+s", "share", "Network share"),
    ]
    DEFAULT_CSS = """
    ImagePicker { align: center middle; }
    ImagePicker #dialog { height: 1fr; }
    ImagePicker #images { height: 1fr; }
    ImagePicker #folder, ImagePicker #about { height: auto; max-height: 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question
        self.summaries: dict[str, ImageSummary] = {}
        self.ours: list[str] = []
        self.folder = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"{self.question}  (enter chooses, tab goes to the path field)",
                         markup=False)
            yield Input(placeholder="type an image's path, or a folder to list",
                        id="image-path")
            yield Static(id="folder", markup=False)
            yield OptionList(id="images")
            yield Static(id="about", markup=False)
        yield Footer()

    @property
    def images(self) -> OptionList:
        return self.query_one("#images", OptionList)

    def on_mount(self) -> None:
        host = host_of(self)
        self.ours = session_images(host)
        start = (os.path.dirname(self.ours[0]) if self.ours
                 else host.folders.get(IMAGES_FOLDER, os.getcwd()))
        self.show_folder(start)
        self.images.focus()

    def show_folder(self, folder: str) -> None:
        """List `folder`'s images after this session's, in a worker."""
        self.folder = os.path.abspath(folder)
        self.summaries = {}
        self.images.clear_options()
        self.images.add_options([Option(image_row(path, None, True), id=path)
                                 for path in self.ours])
        self.query_one("#folder", Static).update(f"Images in {self.folder}: listing...")
        self.run_worker(lambda: self._read(self.folder), name="list images", thread=True,
                        group="catalog", exclusive=True, exit_on_error=False)

    # -- the worker (a thread) ----------------------------------------------------------------

    def _read(self, folder: str) -> None:
        worker = get_current_worker()
        listing = list_images(folder)
        self.app.call_from_thread(self._listed, listing)
        for path in [*self.ours, *listing.paths]:
            if worker.is_cancelled:
                return
            summary = summarize(path)
            self.app.call_from_thread(self._summarized, folder, summary)

    # -- results (UI thread) ------------------------------------------------------------------

    def _listed(self, listing: Listing) -> None:
        if listing.folder != self.folder:
            return
        new = [path for path in listing.paths if path not in self.ours]
        self.images.add_options([Option(image_row(path, None, False), id=path) for path in new])
        count = len(self.ours) + len(new)
        note = listing.problem or (f"{count} image(s)" + (
            f", {listing.more} more not listed" if listing.more else ""))
        self.query_one("#folder", Static).update(f"Images in {self.folder}: {note}")
        if self.images.highlighted is None and self.images.option_count:
            self.images.highlighted = 0

    def _summarized(self, folder: str, summary: ImageSummary) -> None:
        if folder != self.folder:
            return
        self.summaries[summary.path] = summary
        self.images.replace_option_prompt(summary.path,
                                          image_row(summary.path, summary,
                                                    summary.path in self.ours))
        if self.highlighted_path() == summary.path:
            self.show_about(summary.path)

    # -- events and actions -------------------------------------------------------------------

    def highlighted_path(self) -> str | None:
        option = self.images.highlighted_option
        return option.id if option is not None else None

    def show_about(self, path: str) -> None:
        summary = self.summaries.get(path)
        if summary is not None and not summary.readable:
            about = f"cannot be read: {summary.detail.replace(path, os.path.basename(path))}"
        else:
            about = path
        self.query_one("#about", Static).update(about)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.show_about(event.option.id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        path = event.option.id
        if path is None:
            return
        summary = self.summaries.get(path)
        if summary is not None and not summary.readable:
            self.app.bell()
            return
        self.choose(path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """A folder is listed; a file or a Clonezilla archive is chosen if it is a readable
        image, else its row's reason is shown."""
        event.stop()
        path = os.path.expanduser(event.value.strip())
        if not path:
            return
        if os.path.isdir(path) and not sniff_folder(path):
            self.show_folder(path)
            self.images.focus()
            return
        summary = summarize(path)
        if summary.readable:
            self.choose(path)
        else:
            self.query_one("#about", Static).update(f"cannot be read: {summary.detail}")
            self.app.bell()

    def choose(self, path: str) -> None:
        host_of(self).folders[IMAGES_FOLDER] = os.path.dirname(os.path.abspath(path))
        self.dismiss(path)

    def action_share(self) -> None:
        """An image on a network share, mounted for the session."""
        def opened(path: str | None) -> None:
            if path:
                self.choose(path)

        self.app.push_screen(ShareDialog(), opened)

    def action_parent(self) -> None:
        """Backspace in the list (in the field, it edits the field)."""
        self.show_folder(os.path.dirname(self.folder.rstrip("/")) or "/")
