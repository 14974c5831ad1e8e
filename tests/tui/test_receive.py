"""The console's "Receive a deployment" screen at 80x24: the restore's verdict and typed
confirmation before the receiver joins, its waiting state, and stopping it, on real loop
devices with a real udp-receiver."""

from __future__ import annotations

import argparse
import re
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from rescue.commands import tui as tui_command
from rescue.engine import consent
from rescue.tui.screens.disks import DisksScreen, ReceiveHome
from rescue.tui.screens.receive import ReceiveScreen
from tests.fixtures.restore import MIB, digest, mounted_here, run, target
from tests.fixtures.tui import drive, type_text, wait_until
from tests.tui.test_wizards import LOOK, full_text, highlight, home_app, shown

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("udp-receiver") is None,
                                 reason="needs udpcast")]
PORT = 9240  # the root namespace's: away from udpcast's default
ISO_BUILD = Path(__file__).resolve().parents[2] / "iso-build"
BOOTED = "BOOT_IMAGE=/live/vmlinuz boot=live quiet loglevel=3 console=tty0 "


def console_args(*options: str) -> argparse.Namespace:
    """What a bare `rescue` (the stick's console) or `rescue tui OPTIONS` parses to."""
    parser = argparse.ArgumentParser()
    tui_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["tui", "--ascii", "--mono", *options])


def booted_with(tmp_path: Path, cmdline: str) -> str:
    """A kernel command line as /proc/cmdline holds it, in a file of the test's own."""
    path = tmp_path / "cmdline"
    path.write_text(cmdline + "\n")
    return str(path)


def test_the_stick_menus_offer_receive_for_bios_and_uefi() -> None:
    """grub-mkrescue puts the one boot/grub/grub.cfg behind both firmwares' loaders: the
    entry must be in the file build.sh copies there, with the parameter the console reads."""
    build = (ISO_BUILD / "build.sh").read_text()
    assert re.search(r'cp "\$here/grub\.cfg" "\$work/staging/boot/grub/grub\.cfg"', build)
    assert "grub-mkrescue" in build
    menu = (ISO_BUILD / "grub.cfg").read_text()
    entries = dict(re.findall(r'menuentry "([^"]+)" \{(.*?)\n\}', menu, re.S))
    assert "rescue: receive a deployment" in entries
    kernel = next(line.split() for line in entries["rescue: receive a deployment"].splitlines()
                  if line.strip().startswith("linux "))
    assert tui_command.RECEIVE_MODE in kernel and "$live" in kernel
    others = [body for name, body in entries.items() if name != "rescue: receive a deployment"]
    assert others and all(tui_command.RECEIVE_MODE not in body for body in others)


def test_only_the_receive_parameter_opens_the_console_on_receiving(tmp_path: Path) -> None:
    assert tui_command.booted_to_receive(booted_with(tmp_path, BOOTED + "rescue.mode=receive"))
    for other in ("", "rescue.mode=receiver", "xrescue.mode=receive", "rescue.term=vt220"):
        assert not tui_command.booted_to_receive(booted_with(tmp_path, BOOTED + other))
    assert not tui_command.booted_to_receive(str(tmp_path / "no-such-cmdline"))


@pytest.mark.parametrize("how", ["kernel parameter", "--receive"])
def test_the_console_opens_on_receiving_and_enter_picks_the_disk(tmp_path: Path,
                                                                   how: str) -> None:
    receive = how == "--receive"
    cmdline = booted_with(tmp_path, BOOTED + ("" if receive else "rescue.mode=receive"))
    app = tui_command.home_app(console_args(*(["--receive"] if receive else [])), cmdline)
    assert app.look == LOOK
    with ExitStack() as stack:
        device = target(stack, tmp_path, "room", 16 * MIB, fill=b"old data ")
        before = digest(device)

        async def scenario(pilot: Pilot) -> None:
            assert isinstance(app.screen, ReceiveHome)
            await highlight(pilot, device)
            assert shown(app).startswith("Receive a deployment: pick the disk it writes")
            await pilot.press("enter")
            assert isinstance(app.screen, ReceiveScreen)
            assert app.screen.job.request.target == device
            assert app.screen.thread is None  # nothing joins before the name is typed
            assert consent.TYPE_TO_CONFIRM.split(":")[0] in shown(app)
            await pilot.press("escape")
            assert isinstance(app.screen, ReceiveHome)
            await pilot.press("d")  # the ordinary Disks screen is a key away
            assert type(app.screen) is DisksScreen

        drive(app, scenario)
        assert digest(device) == before


def test_without_the_parameter_the_console_opens_on_the_disks(tmp_path: Path) -> None:
    app = tui_command.home_app(console_args(), booted_with(tmp_path, BOOTED))

    async def scenario(pilot: Pilot) -> None:
        assert type(app.screen) is DisksScreen

    drive(app, scenario)


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
