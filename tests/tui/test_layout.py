"""The console's layout on the smallest and a roomy terminal: the job log's share of the
screen and its tall view, notifications that leave the result lines alone, `d` from every
screen that shows it, and a demo that lists no real disk."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets._toast import Toast

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.rescue import Outcome
from rescue.sim.faulty import DEMO_SPEC
from rescue.tui.app import RescueApp, make_demo_app, make_home_app
from rescue.tui.screens.browser import ImageBrowser
from rescue.tui.screens.disks import DisksScreen
from rescue.tui.screens.job import JobScreen
from rescue.tui.screens.jobs import JobsScreen
from rescue.tui.widgets.sector_map import MapLook, SectorMap
from tests.fixtures.faultdisk import SECTOR, faulty_device
from tests.fixtures.tui import drive, make_file, screen_lines, type_text, wait_until

FAST = "sim:size=8M,bad=1M+4k,bad=5M+64k"
LONG = "sim:size=8M,rate=1M,bad=1M+4k,bad=5M+64k"  # eight seconds: still running when looked at
LOOK = MapLook(ascii=True, monochrome=False)
SIZES = [(80, 24), (132, 43)]

pytestmark = pytest.mark.timeout(120)


def flat(text: str) -> str:
    """`text` without spaces and scroll-bar blocks: a long line wraps at a space, and the
    log's scroll bar takes the last column of some rows."""
    return re.sub(r"[\s\u2580-\u259f]", "", text)


def job_log(app) -> Widget:
    return app.screen.query_one("#log")


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_the_log_takes_a_share_of_the_screen_and_l_gives_it_all(tmp_path: Path,
                                                                 size: tuple[int, int]) -> None:
    """A quarter of what the map and log share goes to the log (never the 2 lines it had at
    any size); `l`, shown in the footer, hides the map for a log as tall as the screen
    allows, and brings the map back."""
    app = make_demo_app(LONG, str(tmp_path / "demo"), look=LOOK)
    _, rows = size

    async def scenario(pilot: Pilot) -> None:
        await pilot.pause()
        assert isinstance(app.screen, JobScreen)
        log, sector_map = job_log(app), app.screen.query_one(SectorMap)
        shared = log.size.height + sector_map.size.height
        assert log.size.height >= max(4, shared // 4)
        assert sector_map.size.height >= 2 * log.size.height
        assert "l Log" in screen_lines(app)[-1]
        await pilot.press("l")
        await pilot.pause()
        assert not sector_map.display and app.focused is log  # the arrows scroll the log
        assert log.size.height >= rows - 7  # all but title, counters and footer
        await wait_until(pilot, lambda: len(app.jobs[0].log) >= 3)
        shown = flat("".join(screen_lines(app)))
        assert all(flat(line) in shown for line in app.jobs[0].log[:3])
        await pilot.press("l")
        await pilot.pause()
        assert sector_map.display and log.size.height < rows // 2
        assert app.focused is sector_map  # the arrows move over the map again

    drive(app, scenario, size)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_the_result_lines_show_whole_and_uncovered(tmp_path: Path,
                                                   size: tuple[int, int]) -> None:
    """The job's own screen says how it ended (title, log with the map's path, wrapped when
    long); no notification covers that. A job ending while another screen shows is
    notified, and a notification over a job screen stays off its counters and log."""
    folder = tmp_path / ("a-folder-with-a-long-name-" * 3)
    app = make_demo_app(FAST, str(folder), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.done)
        await wait_until(pilot, lambda: "[unreadable]" in screen_lines(app)[0])
        await pilot.pause(0.3)
        assert not app.screen.query(Toast)
        shown = flat("".join(screen_lines(app)))
        assert flat(f"map saved to {running.job.request.mapfile_path}") in shown
        app.notify("another job: unreadable")  # as a job ending elsewhere would
        await pilot.pause(0.3)
        toasts = list(app.screen.query(Toast))
        assert toasts
        for covered in ("#log", "#counters", "#title"):
            region = app.screen.query_one(covered).region
            assert not any(toast.region.overlaps(region) for toast in toasts), covered

    drive(app, scenario, size, notifications=True)


def test_a_job_ending_behind_another_screen_is_notified(tmp_path: Path) -> None:
    app = make_demo_app(LONG.replace("rate=1M", "rate=4M"), str(tmp_path / "demo"), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)
        await wait_until(pilot, lambda: app.jobs[0].done)
        await wait_until(pilot, lambda: bool(app.screen.query(Toast)))

    drive(app, scenario, notifications=True)


def test_d_leaves_an_image_browser_opened_from_disks(tmp_path: Path) -> None:
    image = make_file(str(tmp_path / "blank.img"), 1024 * 1024)
    app = make_home_app(look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        await pilot.pause()
        assert isinstance(app.screen, DisksScreen)
        await pilot.press("o", "tab")  # the image picker's path field
        await type_text(pilot, image)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ImageBrowser))
        assert "d Disks" in screen_lines(app)[-1]
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DisksScreen)

    drive(app, scenario)


def test_the_demo_lists_its_simulated_disk_alone(tmp_path: Path) -> None:
    """From the demo, `d` shows the simulated disk and no real one, and offers nothing that
    could open a real device (the image and restore wizards and the image browser take any
    typed path)."""
    app = make_demo_app(DEMO_SPEC, str(tmp_path / "demo"), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("d")
        screen = app.screen
        assert isinstance(screen, DisksScreen)
        await wait_until(pilot, lambda: bool(screen.paths()))
        assert screen.paths() == [DEMO_SPEC]
        await wait_until(pilot, lambda: "no real disk" in screen_lines(app)[-2])
        lines = screen_lines(app)
        assert "simulated" in lines[0] and "a simulated disk has none" in lines[-3]
        assert not any(key in lines[-1] for key in ("i Image", "r Restore", "o Browse"))
        for key in "iro":
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen
        await pilot.press("g")
        await pilot.pause(0.3)
        assert screen.paths() == [DEMO_SPEC]

    drive(app, scenario)


def test_the_simulated_disk_warns_of_nothing_it_cannot_act_on(tmp_path: Path) -> None:
    """The simulated disk holds no file system: the log says so and why nothing is to be done,
    instead of an unknown file system and affected files that are not known."""
    app = make_demo_app(FAST, str(tmp_path / "demo"), look=LOOK)

    async def scenario(pilot: Pilot) -> None:
        await wait_until(pilot, lambda: app.jobs[0].done)

    drive(app, scenario)
    log = "\n".join(app.jobs[0].log)
    assert "unknown file system" not in log and "not known" not in log
    assert "the simulated disk holds no file system: every sector is imaged" in log
    assert "affected files: none to name: the simulated disk holds no file system" in log


@pytest.mark.slow
@pytest.mark.root
def test_damage_on_a_real_disk_without_a_file_system_says_what_to_do(tmp_path: Path) -> None:
    """A real (FUSE) disk of noise with a bad sector: no file can be named, and the log says
    where the damage is shown and how to look at the image by hand."""
    disk = tmp_path / "noise.img"
    disk.write_bytes(random.Random(4).randbytes(4 * 1024 * 1024))
    with faulty_device(str(disk), f"sim:bad={1024 * 1024}+{SECTOR}") as device:
        dest = str(tmp_path / "out.img")
        app = RescueApp(ImageJob(ImageRequest(source=device, dest=dest)))

        async def scenario(pilot: Pilot) -> None:
            await wait_until(pilot, lambda: app.jobs[0].done, timeout=60)

        drive(app, scenario)
    assert app.jobs[0].outcome is Outcome.UNREADABLE
    noted = [line for line in app.jobs[0].log if "affected files" in line]
    assert len(noted) == 1 and "not known" not in noted[0]
    assert "cannot be named" in noted[0] and f"rescue mount {dest} DIR" in noted[0]
