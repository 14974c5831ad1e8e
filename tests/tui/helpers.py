"""Running the app under Textual's Pilot from plain (synchronous) pytest tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from rescue.tui.app import RescueApp

SIZE = (80, 24)  # every screen must work on the smallest terminal


def drive(app: RescueApp, scenario: Callable[[Pilot], Awaitable[None]]) -> None:
    """Run `scenario` against `app` at 80x24 and make sure every job thread has returned
    before the test goes on (a job left running would write into the next test's files)."""

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            try:
                await scenario(pilot)
            finally:
                for running in app.jobs:
                    running.cancel()
                await app.wait_for_jobs()

    asyncio.run(main())  # its executor shutdown also joins any job thread still running


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)


def screen_lines(app: RescueApp) -> list[str]:
    """The text the terminal shows now, one string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def type_text(pilot: Pilot, text: str) -> None:
    """Type `text` key by key into the focused widget, as a user would."""
    await pilot.press(*text)


def make_file(path: str, size: int, data: bytes = b"") -> str:
    """A file of `size` bytes starting with `data`, zeros after it (sparse)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.truncate(size)
    return path
