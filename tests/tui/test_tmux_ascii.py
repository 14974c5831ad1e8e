"""`rescue demo` in a real terminal (tmux, 80x24): on a vt220, or anywhere with --ascii, every
character that reaches the terminal is ASCII, on the job screen, the help, the toast at the end
and the Disks screen; a bare `rescue --ascii` too."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rescue
from tests.tui.test_tmux_demo import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
TREE = Path(rescue.__file__).resolve().parent.parent  # this tree's rescue, not an install's
SPEC = "sim:size=16M,rate=2M,bad=3M+4k,bad=9M+64k"  # running for seconds


def ascii_capture(session: str, *texts: str) -> str:
    shown = wait_for(session, *texts, seconds=60)
    wrong = sorted({char for char in shown if not char.isascii()})
    assert not wrong, f"{wrong} reached the terminal:\n{shown}"
    return shown


@contextlib.contextmanager
def terminal(term: str, arguments: str) -> Iterator[str]:
    """A tmux session at 80x24 running `rescue ARGUMENTS` from this tree with TERM=`term`."""
    session = f"rescue-ascii-{time.monotonic_ns()}"
    command = (f"cd {TREE} && TERM={term} PYTHONPATH={TREE} {sys.executable} -m rescue "
               f"{arguments}; echo EXIT=$?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    command], check=True)
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def press(session: str, key: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)


@pytest.mark.parametrize(("term", "option"), [("vt220", ""), ("xterm-256color", "--ascii")])
def test_demo_sends_only_ascii(tmp_path: Path, term: str, option: str) -> None:
    with terminal(term, f"demo {option} --dir {tmp_path} --spec '{SPEC}'") as session:
        ascii_capture(session, "copying", "# finished", "enter Zoom")
        press(session, "F1")
        ascii_capture(session, "keys (every screen")
        ascii_capture(session, ": unreadable")  # the toast over the help when the job ends
        press(session, "Escape")
        ascii_capture(session, "[unreadable]", "X bad")
        press(session, "d")
        ascii_capture(session, "DEVICE", "SIZE")
        press(session, "q")
        wait_for(session, "EXIT=1", seconds=20)
    assert (tmp_path / "demo.img.map").exists()


def test_a_bare_rescue_takes_the_look_options() -> None:
    with terminal("xterm-256color", "--ascii --mono") as session:
        ascii_capture(session, "DEVICE", "i Image")
        press(session, "q")
        wait_for(session, "EXIT=0", seconds=20)
