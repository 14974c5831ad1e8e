"""The image and restore wizards, driven key by key: a typed sim: source imaged to the end, the
warning when the image would land on the disk being read, and a restore that does not start
until the target's name is typed, then restores and verifies onto a real loop device."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, SelectionList, Static

from rescue.commands import tui as tui_command
from rescue.engine.rescue import Outcome
from rescue.errors import UsageError
from rescue.formats import mapfile
from rescue.rangemap import BAD, FINISHED
from rescue.sim.faulty import FaultySource
from rescue.tui.app import RescueApp, make_home_app
from rescue.tui.jobs import RunningJob, RunningRestore
from rescue.tui.screens.browser import ImageBrowser
from rescue.tui.screens.disks import DisksScreen
from rescue.tui.screens.image_wizard import ImageWizard, with_format_extension
from rescue.tui.screens.job import JobScreen, frame_interval
from rescue.tui.screens.restore import RestoreScreen
from rescue.tui.screens.restore_wizard import RestoreWizard
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.cli import run
from tests.fixtures.filesystems import build_fs
from tests.fixtures.loop import loop_device
from tests.fixtures.tui import drive, make_file, screen_lines, type_text, wait_until

SIM = "sim:size=8M,bad=1M+4k"
MIB = 1 << 20
LOOK = MapLook(ascii=True, monochrome=True)

pytestmark = pytest.mark.timeout(120)


def home_app() -> RescueApp:
    return make_home_app(LOOK)


async def highlight(pilot: Pilot, path: str) -> DisksScreen:
    """Wait for `path` on the Disks screen and put the cursor on it."""
    screen = pilot.app.screen
    assert isinstance(screen, DisksScreen)
    await wait_until(pilot, lambda: path in screen.paths())
    screen.table.move_cursor(row=screen.paths().index(path))
    await pilot.pause()
    return screen


async def set_field(pilot: Pilot, selector: str, text: str, *, typed: bool = False) -> None:
    """Fill a field and focus it; `typed` types it key by key (slower: a frame per key)."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = "" if typed else text
    if typed:
        await type_text(pilot, text)
    await pilot.pause()


def shown(app: RescueApp) -> str:
    """The screen's words, one space apart: a line wrapped where a long temporary path ends
    reads the same as one that is not."""
    return " ".join(" ".join(screen_lines(app)).split())


def full_text(app: RescueApp, selector: str) -> str:
    """All a Static holds, where the screen may show only its start (the problem line) or
    break a long temporary path inside a word (the summary)."""
    return str(app.screen.query_one(selector, Static).content)


def test_image_wizard_images_a_typed_sim_source(tmp_path: Path) -> None:
    app = home_app()
    dest = tmp_path / "sim.img"

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("i")
        wizard = app.screen
        assert isinstance(wizard, ImageWizard)
        await set_field(pilot, "#source-path", "/nonexistent/disk")
        await pilot.press("enter")
        assert wizard.step_id == "source" and "does not exist" in shown(app)
        await set_field(pilot, "#source-path", SIM, typed=True)
        await pilot.press("enter")
        assert wizard.step_id == "dest" and "the source holds 8 MiB" in shown(app)
        assert "free" in shown(app)
        await set_field(pilot, "#dest-path", str(dest))
        await pilot.press("enter")
        assert wizard.step_id == "options"
        await set_field(pilot, "#retries", "1")
        await pilot.press("ctrl+n")
        assert wizard.step_id == "summary"
        assert "same as: rescue image sim:size=8M,bad=1M+4k" in shown(app)
        assert shlex.join(wizard.choices.request().to_argv()) == (
            f"rescue image {SIM} {dest} --format raw --retries 1")
        await pilot.press("enter")  # focus starts on the button: enter starts
        assert isinstance(app.screen, JobScreen)
        running = app.jobs[0]
        assert isinstance(running, RunningJob)
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.UNREADABLE
        await pilot.pause(0.3)
        await pilot.press("b")  # the finished image opens in the browser
        assert isinstance(app.screen, ImageBrowser) and app.screen.image_path == str(dest)
        await pilot.press("escape")
        assert isinstance(app.screen, JobScreen)

    drive(app, scenario)
    saved = mapfile.load(f"{dest}.map")
    assert saved.rmap.totals()[BAD] == len(FaultySource(SIM).bad_sectors()) * 512
    assert saved.rmap.totals()[FINISHED] == 8 * MIB - 4096
    assert f"rescue image {SIM}" in Path(f"{dest}.map").read_text()
    assert dest.stat().st_size == 8 * MIB


async def image_wizard(pilot: Pilot, source: str, dest: str) -> ImageWizard:
    """The image wizard opened from the Disks screen, at its options step with `source` and
    `dest` chosen."""
    await pilot.press("i")
    wizard = pilot.app.screen
    assert isinstance(wizard, ImageWizard)
    await set_field(pilot, "#source-path", source)
    await pilot.press("enter")
    await set_field(pilot, "#dest-path", dest)
    await pilot.press("enter")
    return wizard


async def options_step(pilot: Pilot, dest: str, image_format: str) -> ImageWizard:
    """The options step with the sim: source, `dest` and `image_format` chosen."""
    wizard = await image_wizard(pilot, SIM, dest)
    wizard.query_one("#format").value = image_format
    await pilot.pause()
    return wizard


def test_a_format_the_name_contradicts_is_refused_on_the_options_step(tmp_path: Path) -> None:
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await options_step(pilot, str(tmp_path / "x.zst"), "raw")
        await pilot.press("ctrl+n")
        assert wizard.step_id == "options"
        assert "pick a name that ends" in full_text(app, "#problem")
        await pilot.press("escape")
        assert not app.jobs

    drive(app, scenario)


def test_format_changes_the_extension_and_levels_are_checked(tmp_path: Path) -> None:
    assert with_format_extension("/a/disk.img", "zst") == "/a/disk.img.zst"
    assert with_format_extension("/a/disk.img.zst", "qcow2") == "/a/disk.qcow2"
    assert with_format_extension("/a/disk.bin", "qcow2") == "/a/disk.bin"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await options_step(pilot, str(tmp_path / "x.img"), "qcow2")
        await set_field(pilot, "#level", "42")
        await pilot.press("ctrl+n")
        assert wizard.step_id == "options" and "between 1 and 19" in shown(app)
        await set_field(pilot, "#level", "5")
        await pilot.press("ctrl+n")
        assert wizard.choices.dest == str(tmp_path / "x.qcow2")
        assert wizard.choices.request().to_argv()[-4:] == ["--format", "qcow2", "--level", "5"]
        await pilot.press("ctrl+b", "ctrl+b", "ctrl+b")
        assert wizard.step_id == "source"
        await pilot.press("escape")
        assert isinstance(app.screen, DisksScreen) and not app.jobs

    drive(app, scenario)


def test_image_wizard_reads_the_chosen_folders_first(tmp_path: Path) -> None:
    source = tmp_path / "ext4.img"
    hashes = build_fs("ext4", source, 16 * MIB, seed=2)
    chosen = [name for name in hashes if name.startswith("dir 1/")]
    dest = tmp_path / "ext4-copy.img"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_wizard(pilot, str(source), str(dest))
        for typed, problem in (("home", "--first home: give a path from the file system's "
                                        "root"),
                               ('"/dir 1', "folders to read first: No closing quotation")):
            await set_field(pilot, "#first", typed)
            await pilot.press("ctrl+n")
            assert wizard.step_id == "options" and problem in full_text(app, "#problem")
        await set_field(pilot, "#first", '"/dir 1" 1:/x')
        await pilot.press("ctrl+n")
        assert wizard.step_id == "summary"
        assert "first '/dir 1' 1:/x, after the metadata" in shown(app)
        await pilot.press("enter")  # the disk has no partition table: refused, one line
        assert wizard.step_id == "summary" and not app.jobs
        assert "--first 1:/x: the source has no partition table" in full_text(app, "#problem")
        await pilot.press("ctrl+b")
        await set_field(pilot, "#first", '"/dir 1"')
        await pilot.press("ctrl+n", "enter")
        assert isinstance(app.screen, JobScreen)
        running = app.jobs[0]
        assert isinstance(running, RunningJob) and running.job.request.first == ("/dir 1",)
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.RESCUED
        await wait_until(pilot, lambda: f"first files: {len(chosen)} of {len(chosen)} "
                                        "complete" in shown(app))

    drive(app, scenario)


def test_frames_slow_down_on_a_slow_serial_line() -> None:
    assert frame_interval(5, speed=0) == pytest.approx(0.2)
    assert frame_interval(5, speed=9600) > 10 * frame_interval(5, speed=0)
    assert frame_interval(5, speed=9600) > frame_interval(5, speed=115200)


# ---- on real loop devices ---------------------------------------------------------------------


@pytest.fixture
def partitioned_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop disk with an ext4 first partition mounted and a second partition to image:
    (second partition, mount point). Unmounted and detached whatever happens."""
    backing = make_file(str(tmp_path / "disk.bin"), 64 * MIB)
    run("sfdisk", "-q", backing, stdin="label: dos\n,40M,83\n,,83\n")
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    with loop_device(backing, partitions=True) as disk:
        run("mkfs.ext4", "-q", f"{disk}p1")
        run("mount", f"{disk}p1", str(mount_point))
        try:
            yield f"{disk}p2", mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], capture_output=True)


async def image_summary(pilot: Pilot, source: str, dest: str) -> ImageWizard:
    """Open the image wizard and go straight to its summary for `source` and `dest`."""
    wizard = await image_wizard(pilot, source, dest)
    await pilot.press("ctrl+n")
    assert wizard.step_id == "summary"
    return wizard


@pytest.mark.slow
def test_image_wizard_warns_when_the_image_lands_on_the_source_disk(
        partitioned_disk: tuple[str, Path]) -> None:
    source, mount_point = partitioned_disk
    dest = mount_point / "p2.img"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_summary(pilot, source, str(dest))
        summary = full_text(app, "#summary")
        assert "same disk" in summary and "force overrides" in summary
        await pilot.press("enter")
        assert not app.jobs and "cannot start" in shown(app)
        await pilot.click("#force")
        assert wizard.choices.request().to_argv()[-1] == "--force"
        await pilot.click("#finish")
        running = app.jobs[0]
        await wait_until(pilot, lambda: running.done)
        assert running.error is None, running.log
        assert running.outcome is Outcome.RESCUED

    drive(app, scenario)
    with open(source, "rb") as original:
        assert dest.read_bytes() == original.read()


@pytest.mark.slow
def test_image_wizard_summary_names_a_source_mounted_read_write(
        partitioned_disk: tuple[str, Path], tmp_path: Path) -> None:
    """The whole disk, whose first partition is mounted read-write: the summary says the image
    may be inconsistent, as `rescue image` does."""
    second, mount_point = partitioned_disk
    disk, first = second.removesuffix("p2"), second.removesuffix("2") + "1"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        await image_summary(pilot, disk, str(tmp_path / "disk.img"))
        assert (f"! {first} is mounted read-write on {mount_point}: the image may be "
                "inconsistent") in full_text(app, "#summary")
        await pilot.press("escape")

    drive(app, scenario)


@pytest.mark.slow
def test_restore_waits_for_the_typed_target_name(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    content = os.urandom(2 * MIB)
    image = make_file(str(tmp_path / "disk.img"), 2 * MIB, content)
    backing = make_file(str(tmp_path / "target.bin"), 4 * MIB)
    with loop_device(backing) as target:
        name = os.path.basename(target)
        app = home_app()

        async def scenario(pilot: Pilot) -> None:
            await highlight(pilot, target)
            await pilot.press("r")
            wizard = app.screen
            assert isinstance(wizard, RestoreWizard)
            await set_field(pilot, "#image-path", image)
            await pilot.press("enter")
            assert "raw image of 2 MiB" in shown(app) and wizard.step_id == "targets"
            marked = wizard.query_one("#target-list", SelectionList).selected
            assert list(marked) == [target]  # the highlighted disk is marked already
            await pilot.press("ctrl+n")
            assert wizard.step_id == "check" and "may be written" in shown(app)
            await pilot.press("ctrl+n")
            assert wizard.step_id == "confirm"
            await pilot.pause()
            await pilot.press("enter")  # nothing typed
            assert f"not confirmed: type {name}" in shown(app) and not app.jobs
            await type_text(pilot, "sda")
            await pilot.click("#finish")
            assert "not confirmed" in shown(app) and not app.jobs
            field = wizard.query_one("#confirm-fields Input", Input)
            field.value = ""
            field.focus()
            await type_text(pilot, name)
            await pilot.press("enter")
            assert isinstance(app.screen, RestoreScreen)
            running = app.jobs[0]
            assert isinstance(running, RunningRestore)
            await wait_until(pilot, lambda: running.done)
            assert running.error is None and running.outcome is not None
            assert running.outcome.outcome == "restored"
            await pilot.pause(0.3)
            assert "[restored]" in screen_lines(app)[0]

        with open(backing, "rb") as before:
            assert before.read(2 * MIB) == bytes(2 * MIB)
        drive(app, scenario)
        with open(target, "rb") as after:
            assert after.read(2 * MIB) == content


def test_tui_command_needs_a_terminal() -> None:
    parser = argparse.ArgumentParser()
    tui_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["tui", "--mono"])
    with pytest.raises(UsageError, match="needs a terminal"):
        args.run(args)  # pytest's stdin is not a terminal
