"""Choosing an image and a restore target at 80x24, key by key: the image made in this session
offered first, a folder's images with their state, broken files shown but not chosen; the
devices the write policy refuses (the system disk, a read-only loop device, a mounted one)
listed with the reason and never marked, the image's source disk named, and every field of the
restore wizard reachable on the smallest screen."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, OptionList, SelectionList, Static

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.tui.app import RescueApp, held_control, make_home_app
from rescue.tui.screens.browser import ImageBrowser
from rescue.tui.screens.disks import DisksScreen
from rescue.tui.screens.image_picker import ImagePicker
from rescue.tui.screens.restore_wizard import RestoreWizard
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.cli import rescue, run
from tests.fixtures.clonezilla import saved_disk
from tests.fixtures.disks import mounted
from tests.fixtures.loop import loop_device
from tests.fixtures.tui import drive, make_file, screen_lines, type_text, wait_until

MIB = 1 << 20
CLEAN = "sim:size=4M,seed=5"
BAD = "sim:size=4M,seed=5,bad=2M+4k"

pytestmark = pytest.mark.timeout(180)


def home_app() -> RescueApp:
    return make_home_app(MapLook(ascii=True, monochrome=True))


def shown(app: RescueApp) -> str:
    return "\n".join(screen_lines(app))


def make_images(folder: Path) -> None:
    """A complete and a damaged image as `rescue image` writes them, and a broken file."""
    folder.mkdir()
    for name, spec in (("clean.qcow2", CLEAN), ("bad.img.zst", BAD)):
        result = rescue("image", spec, str(folder / name))
        assert result.returncode in (0, 1), result.stderr
    (folder / "broken.qcow2").write_bytes(os.urandom(64 * 1024))


async def open_picker(pilot: Pilot) -> ImagePicker:
    """The picker `o` opens on the Disks screen, once every row is summarised."""
    await pilot.press("d", "o")
    picker = pilot.app.screen
    assert isinstance(picker, ImagePicker)
    await wait_until(pilot, lambda: len(picker.summaries) == picker.images.option_count > 0)
    await pilot.pause()
    return picker


def test_the_picker_offers_this_sessions_image_first_then_a_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf = tmp_path / "shelf"
    make_images(shelf)
    made = tmp_path / "session" / "new.img"
    made.parent.mkdir()
    monkeypatch.chdir(tmp_path)
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        running = app.start_job(ImageJob(ImageRequest(source=CLEAN, dest=str(made)),
                                         held_control()))
        await wait_until(pilot, lambda: running.done)
        picker = await open_picker(pilot)
        assert picker.folder == str(made.parent)  # where this session's image is
        first = picker.images.get_option_at_index(0)
        assert first.id == str(made)
        assert "new.img (this session)" in shown(app) and "complete" in shown(app)
        field = picker.query_one("#image-path", Input)
        field.focus()
        await type_text(pilot, str(shelf))
        await pilot.press("enter")  # a folder is listed, this session's image stays first
        await wait_until(pilot, lambda: picker.images.option_count == 4
                         and len(picker.summaries) == 4)
        await pilot.pause()
        ids = [picker.images.get_option_at_index(i).id for i in range(4)]
        assert ids[0] == str(made)
        assert set(ids[1:]) == {str(shelf / name) for name in
                                ("clean.qcow2", "bad.img.zst", "broken.qcow2")}
        text = shown(app)
        assert str(picker.query_one("#folder", Static).content) == (
            f"Images in {shelf}: 4 image(s)")
        assert "4 MiB complete" in text and "4 MiB damaged" in text
        assert "4 KiB unreadable  from 4 MiB (sim:size=4M" in text
        assert "damaged image: broken.qcow2 is named as a qcow2 image" in text
        assert isinstance(app.focused, OptionList)
        field.value = ""
        field.focus()
        await type_text(pilot, str(shelf / "gone.img"))
        await pilot.press("enter")  # a typed path is checked like a listed one
        assert app.screen is picker and "cannot be read" in shown(app)
        picker.images.focus()
        await pilot.press("home", *["down"] * ids.index(str(shelf / "broken.qcow2")), "enter")
        assert app.screen is picker  # a broken file cannot be chosen; its row says why
        assert "cannot be read: damaged image: broken.qcow2" in shown(app)
        await pilot.press("home", *["down"] * ids.index(str(shelf / "clean.qcow2")), "enter")
        await pilot.pause()
        assert isinstance(app.screen, ImageBrowser)
        assert app.screen.image_path == str(shelf / "clean.qcow2")
        await pilot.press("escape", "r")  # the restore wizard proposes this session's image
        assert isinstance(app.screen, RestoreWizard)
        assert app.screen.query_one("#image-path", Input).value == str(made)

    drive(app, scenario)


# ---- restore targets on real loop devices ------------------------------------------------------


def row_texts(targets: SelectionList) -> dict[str, tuple[str, bool]]:
    """Each listed device: its row text and whether it is disabled."""
    rows = {}
    for index in range(targets.option_count):
        option = targets.get_option_at_index(index)
        rows[option.value] = (str(option.prompt), option.disabled)
    return rows


def visible(app: RescueApp, widget: Widget) -> bool:
    """Whether all of `widget` is drawn on the screen, not scrolled or cut off."""
    region = widget.region
    return region.height > 0 and app.screen.region.contains_region(region)


@pytest.mark.root
def test_restore_targets_show_refused_devices_unmarkable_and_fit_80x24(
        tmp_path: Path, stack: contextlib.ExitStack) -> None:
    source = stack.enter_context(loop_device(make_file(str(tmp_path / "source.bin"), 4 * MIB,
                                                       os.urandom(4 * MIB))))
    image = tmp_path / "source.img.zst"
    made = rescue("image", source, str(image))
    assert made.returncode == 0, made.stderr
    read_only = stack.enter_context(loop_device(make_file(str(tmp_path / "ro.bin"), 8 * MIB),
                                                read_only=True))
    busy_backing = make_file(str(tmp_path / "busy.bin"), 8 * MIB)
    run("mkfs.ext4", "-q", "-F", busy_backing)
    busy = stack.enter_context(loop_device(busy_backing))
    stack.enter_context(mounted(busy, tmp_path / "mnt"))
    blanks = [stack.enter_context(loop_device(make_file(str(tmp_path / f"t{n}.bin"), 8 * MIB)))
              for n in range(10)]  # enough rows to overflow the list at 80x24
    root = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True,
                          text=True).stdout.strip()
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, DisksScreen)
        await wait_until(pilot, lambda: blanks[-1] in screen.paths())
        screen.table.move_cursor(row=screen.paths().index(blanks[0]))
        await pilot.press("r")
        wizard = app.screen
        assert isinstance(wizard, RestoreWizard)
        await pilot.press("ctrl+o")
        picker = app.screen
        assert isinstance(picker, ImagePicker)
        picker.query_one("#image-path", Input).focus()
        await type_text(pilot, str(image))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is wizard and wizard.step_id == "targets")
        assert f"made from 4 MiB ({source})" in shown(app)
        targets = wizard.query_one("#target-list", SelectionList)
        rows = row_texts(targets)
        assert rows[read_only][1] and "[read-only]" in rows[read_only][0]
        assert rows[busy][1] and "[mounted]" in rows[busy][0]
        assert not rows[source][1] and "SOURCE of this image" in rows[source][0]
        assert not rows[blanks[0]][1] and "[" not in rows[blanks[0]][0]
        system = [text for text, _ in rows.values() if "SYSTEM (" in text]
        assert root not in rows or rows[root][1]
        assert all("system disk" in text for text in system)
        assert all(disabled for text, disabled in rows.values() if "system disk" in text)
        assert list(targets.selected) == [blanks[0]]  # the highlighted disk, marked
        targets.focus()
        targets.deselect_all()
        targets.highlighted = next(index for index, (_, disabled) in enumerate(rows.values())
                                   if not disabled)
        await pilot.pause()
        markable = sum(not disabled for _, disabled in rows.values())
        for _ in range(markable):  # space marks each row that may be marked; down skips the rest
            await pilot.press("space", "down")
        marked = set(targets.selected)
        assert blanks[0] in marked and source in marked
        assert not marked & {read_only, busy, root}
        targets.deselect_all()
        targets.select(blanks[0])
        for selector in ("#target-list", "#more-targets", "#partition"):
            widget = wizard.query_one(selector)
            widget.focus()
            await pilot.pause()
            assert visible(app, widget), selector
        assert "Only partition number:" in shown(app)
        await pilot.press("ctrl+n")
        assert wizard.step_id == "check" and "may be written" in shown(app)
        await pilot.press("ctrl+n")
        assert wizard.step_id == "confirm"
        await pilot.pause()
        assert visible(app, wizard.query_one("#confirm-fields Input"))
        button = wizard.query_one("#finish")
        button.focus()
        await pilot.pause()
        assert visible(app, button) and "Restore now" in shown(app)
        await pilot.press("escape")
        assert not app.jobs

    drive(app, scenario)


@pytest.mark.root
def test_the_picker_lists_and_opens_a_clonezilla_archive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Clonezilla folder among a folder's entries is listed as an image with its size, and
    chosen like one, listed or typed."""
    saved = saved_disk(tmp_path, "gpt", {1: "gz", 2: "zst"})
    (tmp_path / "plain folder").mkdir()
    monkeypatch.chdir(tmp_path)
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        picker = await open_picker(pilot)
        assert picker.folder == str(tmp_path)
        ids = [picker.images.get_option_at_index(i).id
               for i in range(picker.images.option_count)]
        assert str(saved.archive) in ids and str(tmp_path / "plain folder") not in ids
        assert picker.summaries[str(saved.archive)].format == "clonezilla"
        assert "96 MiB" in shown(app)
        assert "Clonezilla: sda1 ext4, sda2 ntfs" in shown(app)
        field = picker.query_one("#image-path", Input)
        field.focus()
        await type_text(pilot, str(saved.archive))
        await pilot.press("enter")  # typed, the archive is chosen, not listed as a folder
        await pilot.pause()
        assert isinstance(app.screen, ImageBrowser)
        assert app.screen.image_path == str(saved.archive)

    drive(app, scenario)
