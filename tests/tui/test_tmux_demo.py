"""`rescue demo` in a real terminal (tmux) with TERM=vt220: the map appears, the job finishes,
`q` quits cleanly."""

import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], check=True,
                          capture_output=True, text=True).stdout


def wait_for(session: str, *texts: str, seconds: float) -> str:
    """A capture showing every one of `texts` (a capture may catch a frame half-drawn)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shown = screen(session)
        if all(text in shown for text in texts):
            return shown
        time.sleep(0.2)
    raise AssertionError(f"{texts!r} never appeared together; screen:\n{screen(session)}")


def test_demo_runs_on_a_vt220_and_quits(tmp_path):
    session = f"rescue-demo-{time.monotonic_ns()}"
    spec = "sim:size=16M,rate=8M,bad=3M+4k,bad=9M+64k"
    command = (f"TERM=vt220 {sys.executable} -m rescue demo --dir {tmp_path} --spec '{spec}'; "
               "echo EXIT=$?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    command], check=True)
    try:
        wait_for(session, "copying", "# finished", "X bad", seconds=20)  # ASCII legend
        done = wait_for(session, "[unreadable]", seconds=60)
        assert "X" in done.split("\n", 4)[4]  # bad cells drawn in the map
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(session, "EXIT=1", seconds=20)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert (tmp_path / "demo.img.map").exists()
