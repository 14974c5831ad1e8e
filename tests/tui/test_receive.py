"""The console's "Receive a deployment" screen at 80x24: the restore's verdict and typed
confirmation before the receiver joins, its waiting state, and stopping it, on real loop
devices with a real udp-receiver."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from rescue.engine import consent
from rescue.tui.screens.disks import DisksScreen
from rescue.tui.screens.receive import ReceiveScreen
from tests.fixtures.restore import MIB, digest, mounted_here, run, target
from tests.fixtures.tui import drive, type_text, wait_until
from tests.tui.test_wizards import full_text, highlight, home_app, shown

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("udp-receiver") is None,
                                 reason="needs udpcast")]
PORT = 9240  # the root namespace's: away from udpcast's default


def test_e_on_the_disks_screen_opens_it_for_the_disk(tmp_path: Path) -> None:
    app = home_app()
    with ExitStack() as stack:
        device = target(stack, tmp_path, "room", 16 * MIB, fill=b"old data ")

        async def scenario(pilot: Pilot) -> None:
            await highlight(pilot, device)
            await pilot.press("e")
            assert isinstance(app.screen, ReceiveScreen)
            assert app.screen.job.request.target == device
            assert consent.TYPE_TO_CONFIRM.split(":")[0] in shown(app)
            await pilot.press("escape")
            assert isinstance(app.screen, DisksScreen)

        drive(app, scenario)


def test_a_mounted_disk_is_refused_with_no_field_to_type_in(tmp_path: Path) -> None:
    app = home_app()
    with ExitStack() as stack:
        device = target(stack, tmp_path, "mounted", 16 * MIB)
        run("mkfs.ext4", "-q", "-F", device)
        stack.enter_context(mounted_here(device))

        async def scenario(pilot: Pilot) -> None:
            app.push_screen(ReceiveScreen(device, port=PORT))
            await pilot.pause()
            assert "refused" in full_text(app, "#status")
            assert "mounted" in full_text(app, "#status")
            assert not app.screen.query_one("#confirm", Input).display

        drive(app, scenario)


def test_only_the_typed_name_starts_it_and_stopping_writes_nothing(tmp_path: Path) -> None:
    app = home_app()
    with ExitStack() as stack:
        device = target(stack, tmp_path, "waiting", 16 * MIB, fill=b"old data ")
        before = digest(device)

        async def scenario(pilot: Pilot) -> None:
            screen = ReceiveScreen(device, port=PORT)
            app.push_screen(screen)
            await pilot.pause()
            await type_text(pilot, "sda")
            await pilot.press("enter")
            assert screen.check is not None
            assert full_text(app, "#status") == consent.not_confirmed(screen.check)
            assert screen.thread is None  # nothing joined
            field = screen.query_one("#confirm", Input)
            field.value = ""
            await type_text(pilot, screen.check.name)
            await pilot.press("enter")
            await wait_until(pilot, lambda: "waiting for a sender" in full_text(app, "#status"))
            await pilot.press("c")
            await wait_until(pilot, lambda: full_text(app, "#status").startswith("failed"))
            assert screen.result is not None and not screen.result.report.ok
            assert full_text(app, "#status") == \
                "failed: interrupted while waiting for the sender"
            assert "failed: interrupted" in shown(app)

        drive(app, scenario)
        assert digest(device) == before
