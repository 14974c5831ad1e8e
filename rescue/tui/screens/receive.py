"""Receive a deployment: the disk's verdict, typed confirmation, then the receiver's progress
until its disk is proved to hold the image, or failed with the reason.

The confirmation is the restore's (engine/consent.py): the disk's kernel name or serial must be
typed before the receiver joins, so a machine in a room never waits on a keyboard once the
sender starts. Leaving the screen stops the receiver; the sender then counts it as failed.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from rescue.engine import consent
from rescue.engine.deployrecv import ReceiveJob, ReceiveRequest, ReceiveResult
from rescue.engine.deploywire import Report
from rescue.engine.restore import TargetCheck
from rescue.errors import RescueError
from rescue.tui.screens.restore_wizard import describe_check
from rescue.tui.widgets.text import show_text
from rescue.units import human_size

REFRESH = 0.5  # seconds between redraws: the receiver's own pace is seconds


def status_line(report: Report, sender: str | None) -> str:
    """The receiver now, in one line of 78 columns."""
    where = f" from {sender}" if sender else ""
    if report.phase == "waiting":
        return f"waiting for a sender{where}: start `rescue deploy send IMAGE` on one machine"
    return (f"{report.phase}{where}: written {human_size(report.written)}, read back "
            f"{human_size(report.verified)}")


def outcome_line(result: ReceiveResult) -> str:
    report = result.report
    if report.ok:
        return (f"done: {report.target} holds {result.image} ({human_size(report.written)}), "
                "read back and fingerprint ok")
    return f"failed: {report.error}"


class ReceiveScreen(Screen):
    """Pushed from the Disks screen for the highlighted disk."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel", "Stop receiving"),
        Binding("escape", "leave", "Back"),
    ]

    def __init__(self, target: str, port: int | None = None) -> None:
        super().__init__()
        request = ReceiveRequest(target) if port is None else ReceiveRequest(target, port=port)
        self.job = ReceiveJob(request)
        self.check: TargetCheck | None = None
        self.result: ReceiveResult | None = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Receive a deployment onto {self.job.request.target}", id="title",
                     markup=False)
        yield Static(id="verdict", markup=False)
        yield Input(id="confirm")
        yield Static(id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        confirm = self.query_one("#confirm", Input)
        try:
            self.check = self.job.check()
        except RescueError as error:
            self.error = str(error)
        if self.check is not None:
            self.query_one("#verdict", Static).update(describe_check(self.check, False,
                                                                          receives=False))
        refused = self.error or (None if self.check is None or self.check.allowed() else
                                 "refused: " + " | ".join(consent.refusals([self.check],
                                                                           False)))
        if refused:
            confirm.display = False
            self._status(refused)
            return
        assert self.check is not None
        confirm.placeholder = consent.placeholder(self.check)
        confirm.focus()
        self._status(consent.TYPE_TO_CONFIRM)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _status(self, text: str) -> None:
        show_text(self.query_one("#status", Static), text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.check is None or self.thread is not None:
            return
        if not consent.confirms(self.check, event.value):
            self._status(consent.not_confirmed(self.check))
            self.app.bell()
            return
        event.input.disabled = True
        self.thread = threading.Thread(target=self._receive, name="deploy-receive",
                                       daemon=True)
        self.thread.start()
        self.set_interval(REFRESH, self.draw)
        self.draw()

    def _receive(self) -> None:
        try:
            self.result = self.job.run()
        except RescueError as error:
            self.error = str(error)

    def draw(self) -> None:
        if self.result is not None:
            self._status(outcome_line(self.result))
        elif self.error is not None:
            self._status(f"failed: {self.error}")
        else:
            self._status(status_line(self.job.progress(), self.job.sender))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.running and not self.job.control.cancelled.is_set()
        return True

    def action_cancel(self) -> None:
        self.job.control.cancel()
        self.draw()

    def action_leave(self) -> None:
        """Back to the disks; a receiver still running is stopped first."""
        self.job.control.cancel()
        if self.thread is not None:
            self.thread.join()
        self.app.pop_screen()
