"""Where an image lies on a network share: type, address, user, path and (for smb) a password,
one line each so the form fits 80x24, and "Test connection", which mounts the share, says how
much room it has (and whether an image of `needed` bytes fits) and unmounts it. For an image
written there, also how long a lost share is waited for (`rescue image --reconnect-timeout`).

The password is handed to the mount through the environment the stores code reads
(RESCUE_SMB_PASSWORD), only while a mount runs: never on a command line, in a log or a map.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from rescue.errors import RescueError
from rescue.stores.mount import SMB_PASSWORD_ENV, Probe, probe
from rescue.stores.onshare import RECONNECT_TIMEOUT
from rescue.stores.url import StoreUrl, parse
from rescue.units import human_size

TYPES = (("ssh (sshfs)", "ssh"), ("smb (Windows, Samba)", "smb"), ("nfs", "nfs"))
PATH_HINTS = {"ssh": "/srv/images/", "smb": "share/folder/", "nfs": "/export/folder/"}


@contextmanager
def smb_password(password: str) -> Iterator[None]:
    """RESCUE_SMB_PASSWORD set to `password` (when one is typed) for the mounts made inside."""
    before = os.environ.get(SMB_PASSWORD_ENV)
    if password:
        os.environ[SMB_PASSWORD_ENV] = password
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SMB_PASSWORD_ENV, None)
        else:
            os.environ[SMB_PASSWORD_ENV] = before


def probe_line(found: Probe, needed: int) -> str:
    """What a test found, in one line: the room, and whether `needed` bytes fit in it."""
    if found.space is None:
        return f"connected to {found.url}; the server does not say how much room it has"
    free, total = found.space
    line = f"connected: {human_size(free)} free of {human_size(total)}"
    if needed:
        fits = "fits" if free >= needed else "may not fit (sparse or compressed needs less)"
        line += f"; an image of {human_size(needed)} {fits}"
    return line


class ShareForm(Vertical):
    """The fields of a share; `url()` is the image they name, or a UsageError. Styled in
    rescue.tcss: the app's rules for wizard steps would otherwise win over its own."""

    def __init__(self, needed: int = 0, id: str | None = None, writes: bool = False) -> None:
        """`writes`: an image is written there, so a lost share is waited for."""
        super().__init__(id=id)
        self.needed = needed  # bytes the image may take: the source's size
        self.writes = writes

    def compose(self) -> ComposeResult:
        with Horizontal(classes="share-row"):
            yield Label("Type:")
            yield Select(TYPES, value="ssh", allow_blank=False, id="share-type", compact=True)
        with Horizontal(classes="share-row"):
            yield Label("Address (host[:port]):")
            yield Input(id="share-address", placeholder="nas.local", compact=True)
        with Horizontal(classes="share-row"):
            yield Label("User:")
            yield Input(id="share-user", placeholder="(none)", compact=True)
        with Horizontal(classes="share-row"):
            yield Label("Image on the share:")
            yield Input(id="share-path", placeholder=PATH_HINTS["ssh"] + "disk.img",
                        compact=True)
        with Horizontal(id="share-password-row", classes="share-row"):
            yield Label("Password (smb):")
            yield Input(id="share-password", password=True, compact=True)
        if self.writes:
            with Horizontal(classes="share-row"):
                yield Label("Wait if lost (seconds):")
                yield Input(f"{RECONNECT_TIMEOUT:g}", id="share-reconnect", type="integer",
                            compact=True)
        with Horizontal(id="share-test-row", classes="share-row"):
            yield Button("Test connection", id="share-test")
        yield Static(id="share-status", markup=False)

    def on_mount(self) -> None:
        self.show_password()

    @property
    def scheme(self) -> str:
        return str(self.query_one("#share-type", Select).value)

    @property
    def password(self) -> str:
        return self.query_one("#share-password", Input).value if self.scheme == "smb" else ""

    def url(self) -> StoreUrl:
        """The image the fields name (a UsageError says what is missing or wrong)."""
        address = self.query_one("#share-address", Input).value.strip()
        user = self.query_one("#share-user", Input).value.strip()
        path = self.query_one("#share-path", Input).value.strip().lstrip("/")
        if not address:
            raise ValueError("name the server's address (host or host:port)")
        return parse(f"{self.scheme}://{user + '@' if user else ''}{address}/{path}")

    def reconnect_timeout(self) -> int:
        """Seconds a lost share is waited for before the job stops (a ValueError when the
        field holds no positive whole number)."""
        text = self.query_one("#share-reconnect", Input).value.strip()
        if not text.isdigit() or int(text) <= 0:
            raise ValueError("wait if lost: a whole number of seconds above 0 (the job stops "
                             "with its map kept when the share is not back by then)")
        return int(text)

    def set_path(self, path: str) -> None:
        self.query_one("#share-path", Input).value = path

    def say(self, line: str) -> None:
        self.query_one("#share-status", Static).update(line)

    def show_password(self) -> None:
        self.query_one("#share-password-row").display = self.scheme == "smb"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "share-type":
            self.show_password()
            path = self.query_one("#share-path", Input)
            path.placeholder = PATH_HINTS[self.scheme] + "disk.img"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "share-test":
            return
        event.stop()
        try:
            folder = self.url().parent
        except (RescueError, ValueError) as error:
            self.say(str(error))
            return
        self.say(f"connecting to {folder}...")
        password = self.password
        self.run_worker(lambda: self._test(folder, password), name="test connection",
                        thread=True, group="share-test", exclusive=True, exit_on_error=False)

    def _test(self, folder: StoreUrl, password: str) -> None:
        """In a thread: mount, measure, unmount; the one line it ends with is shown."""
        try:
            with smb_password(password):
                line = probe_line(probe(folder, interactive=False), self.needed)
        except (RescueError, OSError) as error:
            line = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.app.call_from_thread(self.say, line)
