"""The job screen driving real ImageJobs on the simulated disk: to completion, cancelled and
resumed, paused, quit while running, the jobs list and a failing job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.rescue import Outcome, RescueOptions
from rescue.errors import DestinationError, ExitCode
from rescue.formats import mapfile
from rescue.rangemap import BAD, FINISHED
from rescue.sim.faulty import FaultySource
from rescue.tui.app import held_control, make_app, make_demo_app
from rescue.tui.jobs import RunningJob
from rescue.tui.screens.dialogs import HelpScreen, QuitScreen
from rescue.tui.screens.job import JobScreen
from rescue.tui.screens.jobs import JobsScreen
from rescue.tui.widgets.sector_map import MapLook, SectorMap
from tests.fixtures.tui import drive, screen_lines, wait_until

FAST = "sim:size=8M,bad=1M+4k,bad=5M+64k"
SLOW = "sim:size=8M,rate=4M,bad=1M+4k,bad=5M+64k"  # about two seconds: time to interrupt
# The same disk read in eight seconds: the jobs a test stops still run when it stops them,
# even on a machine so loaded that a few key presses take seconds.
LONG = "sim:size=8M,rate=1M,bad=1M+4k,bad=5M+64k"
LOOK = MapLook(ascii=True, monochrome=False)

pytestmark = pytest.mark.timeout(120)


def request(tmp_path: Path, spec: str) -> ImageRequest:
    return ImageRequest(source=spec, dest=str(tmp_path / "disk.img"),
                        options=RescueOptions(checkpoint_interval=0.2))


def bad_bytes(spec: str) -> int:
    return len(FaultySource(spec).bad_sectors()) * 512


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_job_and_its_clock_wait_for_its_screen(tmp_path: Path, cancelled: bool) -> None:
    """A job opened before the app is up (as `rescue demo` opens it) reads nothing and counts
    no time until its screen is shown; cancelled before that, it starts only to save its map."""
    running = RunningJob(ImageJob(request(tmp_path, FAST), held_control()), "waiting")
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(running.run_once_shown()))
    worker.start()
    time.sleep(0.3)  # what building a screen may take
    progress = running.job.progress()
    assert worker.is_alive() and progress.elapsed == 0 and progress.rescued == 0
    if cancelled:
        running.cancel()
    else:
        running.shown()
    worker.join(60)
    assert outcome == [Outcome.INTERRUPTED if cancelled else Outcome.UNREADABLE]
    if not cancelled:
        assert running.job.progress().elapsed > 0
    assert (tmp_path / "disk.img.map").exists()


def test_demo_job_runs_to_completion(tmp_path: Path) -> None:
    app = make_app(request(tmp_path, FAST), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        assert isinstance(app.screen, JobScreen)
        await wait_until(pilot, lambda: running.done)
        await wait_until(pilot, lambda: "[unreadable]" in screen_lines(app)[0])  # the last frame
        assert running.outcome is Outcome.UNREADABLE and running.error is None
        lines = screen_lines(app)
        assert "[unreadable]" in lines[0]
        assert f"bad {68} KiB" in lines[1]
        widget = app.screen.query_one(SectorMap)
        drawn = "".join(lines[4:4 + widget.size.height])
        assert LOOK.glyphs[BAD] in drawn and "@" not in drawn  # a finished job has no position
        assert any("unreadable" in line for line in running.log)

    drive(app, scenario)
    saved = mapfile.load(str(tmp_path / "disk.img.map")).rmap.totals()
    assert saved[BAD] == bad_bytes(FAST) and saved[FINISHED] == 8 * 1024 * 1024 - saved[BAD]
    assert app.exit_code() == ExitCode.UNREADABLE


def test_cancelled_job_saves_its_map_and_a_second_run_resumes(tmp_path: Path) -> None:
    first = make_app(request(tmp_path, LONG), look=LOOK)

    async def cancel_midway(pilot: Pilot) -> None:
        running = first.jobs[0]
        await wait_until(pilot, lambda: running.job.progress().rescued > 1024 * 1024)
        await pilot.press("c")
        assert running.cancelling
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.INTERRUPTED

    drive(first, cancel_midway)
    assert first.exit_code() == ExitCode.INTERRUPTED
    saved = mapfile.load(str(tmp_path / "disk.img.map")).rmap.totals()
    assert 0 < saved[FINISHED] < 8 * 1024 * 1024 - bad_bytes(SLOW)

    second = make_app(request(tmp_path, SLOW), look=LOOK)

    async def resume(pilot: Pilot) -> None:
        running = second.jobs[0]
        assert running.job.progress().rescued >= saved[FINISHED]  # starts from the map
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.UNREADABLE

    drive(second, resume)
    final = mapfile.load(str(tmp_path / "disk.img.map")).rmap.totals()
    assert final[BAD] == bad_bytes(SLOW)


def test_pause_resume_and_the_jobs_list(tmp_path: Path) -> None:
    app = make_app(request(tmp_path, LONG), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await pilot.press("p")
        assert running.job.control.paused and running.state == "paused"
        await pilot.press("escape")  # back to the jobs list; the job lives on
        assert isinstance(app.screen, JobsScreen)
        await wait_until(pilot, lambda: any("[paused]" in line for line in screen_lines(app)))
        await pilot.press("enter")
        assert isinstance(app.screen, JobScreen) and app.screen.running is running
        await pilot.press("p")
        assert not running.job.control.paused
        assert [line.split(" ", 1)[1] for line in running.log[-2:]] == ["paused", "resumed"]

    drive(app, scenario)


def test_quit_while_running_asks_then_cancels_and_saves_the_map(tmp_path: Path) -> None:
    app = make_app(request(tmp_path, LONG), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.job.progress().rescued > 0)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("n")
        assert isinstance(app.screen, JobScreen) and not running.cancelling
        await pilot.press("q")
        await pilot.press("y")
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.INTERRUPTED

    drive(app, scenario)
    assert app.return_value == ExitCode.INTERRUPTED
    assert mapfile.load(str(tmp_path / "disk.img.map")).rmap.totals()[FINISHED] > 0


def test_a_failing_job_shows_one_line(tmp_path: Path) -> None:
    app = make_app(request(tmp_path, SLOW), look=LOOK)
    job = app._first_job
    assert job is not None
    job_run = job.rescue.run

    def failing_run() -> Outcome:
        job_run()
        raise DestinationError("cannot write disk.img: No space left on device")

    job.rescue.run = failing_run  # the error a full destination raises, after a real run
    job.request.options.checkpoint_interval = 0.2

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.done)
        assert isinstance(running.error, DestinationError)
        assert running.log[-1].endswith("error: cannot write disk.img: No space left on device")
        await wait_until(pilot, lambda: "[failed]" in screen_lines(app)[0])

    drive(app, scenario)
    assert app.exit_code() == ExitCode.DESTINATION


def test_demo_app_runs_under_the_help_screen(tmp_path: Path) -> None:
    app = make_demo_app(FAST, str(tmp_path / "demo"), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        assert any("d            Disks" in line for line in screen_lines(app))
        await pilot.press("end")  # the help scrolls on an 80x24 terminal
        await pilot.pause()
        assert any("worst state" in line for line in screen_lines(app))
        await pilot.press("escape")
        assert isinstance(app.screen, JobScreen)
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.UNREADABLE

    drive(app, scenario)
    assert (tmp_path / "demo" / "demo.img.map").exists()
