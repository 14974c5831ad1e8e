"""The remote-access screen drives the live system's `rescue-ssh` tool with what was typed."""

from __future__ import annotations

import os
from pathlib import Path

from textual.widgets import Static

from rescue.tui.app import RescueApp
from tests.fixtures.tui import drive, wait_until

FAKE_TOOL = """#!/bin/sh
# stands in for the live system's rescue-ssh: records its arguments and standard input
echo "$@" >> "{log}"
if [ "$1" = enable ] && [ "$2" = --password-stdin ]; then cat >> "{log}"; fi
echo "ssh: active"
echo "address: eth0 192.0.2.7"
"""


def status_text(app: RescueApp) -> str:
    return str(app.screen.query_one("#ssh-status", Static).content)


def test_ssh_screen_enables_with_the_typed_password(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "calls.log"
    tool = tmp_path / "rescue-ssh"
    tool.write_text(FAKE_TOOL.format(log=log))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    async def scenario(pilot) -> None:
        await pilot.press("s")
        await wait_until(pilot, lambda: "192.0.2.7" in status_text(pilot.app))
        await pilot.press("enter")
        await wait_until(pilot, lambda: "type a password" in status_text(pilot.app))
        await pilot.press(*"s3cret", "enter")
        await wait_until(pilot, lambda: log.read_text().count("\n") >= 3)

    drive(RescueApp(), scenario)
    assert log.read_text().splitlines() == ["status", "enable --password-stdin", "s3cret"]


def test_ssh_screen_shows_addresses_without_the_live_tool(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")

    async def scenario(pilot) -> None:
        await pilot.press("s")
        await wait_until(pilot, lambda: "managed by the host" in status_text(pilot.app))

    drive(RescueApp(), scenario)
