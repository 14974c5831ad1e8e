"""Open an image on a network share: the share's fields (rescue.tui.widgets.share_form), and
Open, which mounts the share's folder for the rest of the session (the app unmounts it when it
quits) and gives the image's local path to whoever asked, a browser or the restore wizard."""

from __future__ import annotations

import os
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static

from rescue.errors import RescueError
from rescue.stores.mount import ShareMount
from rescue.stores.url import StoreUrl
from rescue.tui.host import host_of
from rescue.tui.widgets.share_form import ShareForm, smb_password


class ShareDialog(ModalScreen[str | None]):
    """Dismisses with the local path of the image on the share, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    ShareDialog { align: center middle; }
    ShareDialog #dialog { height: auto; }
    """

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("An image on a network share (mounted until the console quits):",
                         markup=False)
            yield ShareForm(id="open-share")
            yield Button("Open", id="share-open", variant="primary")
        yield Footer()

    @property
    def form(self) -> ShareForm:
        return self.query_one(ShareForm)

    def on_mount(self) -> None:
        self.form.query_one("#share-address", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.open()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "share-open":
            event.stop()
            self.open()

    def open(self) -> None:
        try:
            url = self.form.url()
        except (RescueError, ValueError) as error:
            self.form.say(str(error))
            return
        self.form.say(f"mounting {url.parent}...")
        password = self.form.password
        self.run_worker(lambda: self._mount(url, password), name="open share", thread=True,
                        group="share-open", exclusive=True, exit_on_error=False)

    def _mount(self, url: StoreUrl, password: str) -> None:
        """In a thread: mount the folder; the image must be there."""
        try:
            with smb_password(password):
                mount = ShareMount(url.parent, interactive=False)
        except (RescueError, OSError) as error:
            self.app.call_from_thread(self.form.say, str(error).splitlines()[0])
            return
        if not os.path.isfile(mount.local(url)):
            mount.close()
            self.app.call_from_thread(self.form.say, f"{url}: no such image on the share")
            return
        self.app.call_from_thread(self._opened, url, mount)

    def _opened(self, url: StoreUrl, mount: ShareMount) -> None:
        host_of(self).shares.append(mount)
        self.dismiss(mount.local(url))
