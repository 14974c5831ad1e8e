"""Remote access: this machine's addresses, and SSH switched on or off from the console.

On the live system `rescue-ssh` (iso-build/overlay) does the work: it sets root's password or
authorized key, makes a host key and starts the server. Elsewhere the screen still shows the
addresses and says that SSH is managed by the host system.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

TOOL = "rescue-ssh"


def run_tool(*args: str, stdin: str | None = None) -> str:
    """`rescue-ssh ARGS` (or the addresses alone where it is missing), as one text block."""
    if shutil.which(TOOL) is None:
        out = subprocess.run(["ip", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True).stdout
        lines = [f"address: {f[1]} {f[3].split('/')[0]}" for f in map(str.split, out.splitlines())
                 if len(f) > 3]
        return "\n".join(["ssh: managed by the host system (rescue-ssh is on the live ISO)",
                          *(lines or ["address: none"])])
    done = subprocess.run([TOOL, *args], input=stdin, capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()


class SshScreen(ModalScreen[None]):
    """Shows `rescue-ssh status`; a password or a public key typed here switches SSH on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("ctrl+o", "disable", "SSH off", priority=True),  # the inputs keep ctrl+e/x
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Remote access", classes="title")
            yield Static("reading status...", id="ssh-status")
            yield Input(placeholder="root password for SSH (or leave empty)", password=True,
                        id="ssh-password")
            yield Input(placeholder="or an authorized key: ssh-ed25519 AAAA...", id="ssh-key")
            yield Static("enter switches SSH on with what you typed; ctrl+o switches it off.")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_status("status")

    @work(thread=True, exclusive=True)
    def refresh_status(self, *args: str, stdin: str | None = None) -> None:
        text = run_tool(*args, stdin=stdin)
        self.app.call_from_thread(self.query_one("#ssh-status", Static).update, text)

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.enable()

    def enable(self) -> None:
        password = self.query_one("#ssh-password", Input).value
        key = self.query_one("#ssh-key", Input).value.strip()
        if not password and not key:
            self.query_one("#ssh-status", Static).update(
                "type a password or an authorized key first")
            return
        args = ["enable"]
        if password:
            args.append("--password-stdin")
        if key:
            args += ["--authorized-key", key]
        self.refresh_status(*args, stdin=f"{password}\n" if password else None)

    def action_disable(self) -> None:
        self.refresh_status("disable")
