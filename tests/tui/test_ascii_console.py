"""The console on a serial terminal (TERM=vt220): every screen and dialog, driven key by key at
80x24, draws ASCII only, and what colour showed is still there without it (checkboxes
[x]/[ ], the map's legend in letters)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import TypeVar, cast

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Select, SelectionList

from rescue.tui.app import RescueApp, make_home_app
from rescue.tui.glyphs import STAND_INS, ascii_for, to_ascii
from rescue.tui.jobs import RunningRestore
from rescue.tui.screens.browser import ImageBrowser
from rescue.tui.screens.dialogs import HelpScreen, QuitScreen
from rescue.tui.screens.disks import DisksScreen, InspectScreen
from rescue.tui.screens.folder_picker import FolderPicker
from rescue.tui.screens.image_picker import ImagePicker
from rescue.tui.screens.image_wizard import ImageWizard
from rescue.tui.screens.job import JobScreen
from rescue.tui.screens.jobs import JobsScreen
from rescue.tui.screens.map_viewer import MapViewerScreen
from rescue.tui.screens.restore import RestoreScreen
from rescue.tui.screens.restore_wizard import RestoreWizard
from rescue.tui.screens.share_dialog import ShareDialog
from rescue.tui.screens.ssh import SshScreen
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.cli import run
from tests.fixtures.loop import loop_device
from tests.fixtures.tui import drive, make_file, screen_lines, type_text, wait_until

MIB = 1 << 20
SLOW_SIM = "sim:size=24M,rate=4M,bad=1M+4k"  # still running while the quit dialog shows
VT220 = MapLook.from_environment({"TERM": "vt220"})  # ASCII and monochrome

Shown = TypeVar("Shown")

pytestmark = pytest.mark.timeout(180)


def accented_ext4(tmp_path: Path) -> Path:
    """An ext4 image holding files whose names are not ASCII (mkfs -d, no mount needed)."""
    tree = tmp_path / "tree"
    (tree / "Fotos – Mai").mkdir(parents=True)
    (tree / "Fotos – Mai" / "café ☕.jpg").write_bytes(b"j" * 5000)
    (tree / "東京.txt").write_bytes(b"t\n")
    (tmp_path / "images").mkdir()
    image = make_file(str(tmp_path / "images" / "fs.img"), 8 * MIB)
    run("mkfs.ext4", "-q", "-F", "-d", str(tree), image)
    return Path(image)


class Visit:
    """Drives the app and keeps what the terminal got on each screen, asserted ASCII."""

    def __init__(self, pilot: Pilot) -> None:
        self.pilot = pilot
        self.app = cast(RescueApp, pilot.app)
        self.seen: dict[str, str] = {}

    def check(self, name: str) -> str:
        text = "\n".join(screen_lines(self.app))
        wrong = sorted({char for char in text if not char.isascii()})
        assert not wrong, f"{name}: {wrong} sent to a vt220:\n{text}"
        self.seen[name] = text
        return text

    async def wait_for_text(self, text: str) -> None:
        try:
            await wait_until(self.pilot, lambda: text in "\n".join(screen_lines(self.app)))
        except AssertionError:
            shown = "\n".join(screen_lines(self.app))
            raise AssertionError(f"{text!r} never shown:\n{shown}") from None

    async def open(self, key: str, kind: type[Shown]) -> Shown:
        """Press `key`, wait for a screen of `kind`, check it."""
        await self.pilot.press(key)
        await wait_until(self.pilot, lambda: isinstance(self.app.screen, kind))
        await self.pilot.pause(0.5)  # what a screen reads in a thread (SSH status, folders)
        self.check(kind.__name__)
        return cast(Shown, self.app.screen)

    async def step(self, name: str, *keys: str) -> str:
        await self.pilot.press(*keys)
        await self.pilot.pause()
        return self.check(name)


async def highlight(visit: Visit, target: str) -> None:
    """The Disks screen's cursor on `target` (rows move as other loop devices come and go)."""
    disks = visit.app.screen
    assert isinstance(disks, DisksScreen)
    await wait_until(visit.pilot, lambda: target in disks.paths())
    disks.table.move_cursor(row=disks.paths().index(target))
    await visit.pilot.pause()


async def disks_and_dialogs(visit: Visit, target: str) -> None:
    await highlight(visit, target)
    visit.check("disks")
    for key, dialog in (("v", InspectScreen), ("f1", HelpScreen), ("s", SshScreen)):
        await visit.open(key, dialog)
        await visit.open("escape", DisksScreen)


async def browser(visit: Visit, fs_image: Path) -> None:
    picker = await visit.open("o", ImagePicker)
    await visit.open("ctrl+s", ShareDialog)  # an image on a network share
    await visit.pilot.press("escape")
    await wait_until(visit.pilot, lambda: isinstance(visit.app.screen, ImagePicker))
    picker.query_one("#image-path", Input).focus()
    picker.query_one("#image-path", Input).value = str(fs_image.parent)
    await visit.pilot.press("enter")  # the folder's images are listed and summarised
    await wait_until(visit.pilot, lambda: str(fs_image) in picker.summaries)
    await visit.step("image list")
    picker.query_one("#image-path", Input).focus()
    picker.query_one("#image-path", Input).value = str(fs_image)
    browser = await visit.open("enter", ImageBrowser)
    await wait_until(visit.pilot, lambda: bool(browser.file_tree.root.children))
    await visit.pilot.press("enter")  # open the volume: its files are listed
    await visit.wait_for_text("Fotos - Mai")
    await visit.pilot.press("down", "down", "enter")
    await visit.wait_for_text("cafe ??.jpg")  # names outside ASCII, cell for cell
    visit.check("browser")
    await visit.open("e", FolderPicker)
    await visit.pilot.press("escape")
    await visit.open("escape", DisksScreen)


async def image_wizard_and_job(visit: Visit, dest: Path) -> None:
    wizard = await visit.open("i", ImageWizard)
    wizard.query_one("#source-path", Input).value = SLOW_SIM
    await visit.pilot.press("enter")
    wizard.query_one("#dest-path", Input).value = str(dest)
    await visit.step("image wizard: destination")
    await network_share_fields(visit, wizard)
    await visit.pilot.click("#browse")
    await wait_until(visit.pilot, lambda: isinstance(visit.app.screen, FolderPicker))
    await visit.step("folder picker")
    await visit.pilot.press("escape")
    wizard.query_one("#dest-path", Input).focus()
    options = await visit.step("image wizard: options", "enter")
    assert "[ ] Copy backwards" in options and "raw, sparse (.img)" in options  # values show
    wizard.query_one("#reverse").focus()
    assert "[x] Copy backwards" in await visit.step("image wizard: ticked", "space")
    await visit.pilot.press("space")
    wizard.query_one("#format", Select).focus()
    await visit.step("image wizard: format list", "enter")
    assert "[ ] Force" in await visit.step("image wizard: summary", "escape", "ctrl+n")
    await visit.open("enter", JobScreen)
    await visit.wait_for_text("copying")
    assert "# finished  . non-tried" in visit.check("job")  # the legend in letters
    await visit.open("q", QuitScreen)
    await visit.pilot.press("n", "escape")  # kept running, left for the jobs list, where a
    running = visit.app.jobs[0]  # toast says how it ended
    await wait_until(visit.pilot, lambda: isinstance(visit.app.screen, JobsScreen))
    await visit.step("jobs list")
    await wait_until(visit.pilot, lambda: running.done)
    await wait_until(visit.pilot, lambda: isinstance(visit.app.screen, JobsScreen)
                     and bool(visit.app.screen.query("Toast")))
    await visit.step("jobs list, toast")
    visit.app.open_map(f"{dest}.map")
    await wait_until(visit.pilot, lambda: isinstance(visit.app.screen, MapViewerScreen))
    await visit.step("map viewer")


async def network_share_fields(visit: Visit, wizard: ImageWizard) -> None:
    """The share's fields, smb's masked password among them, and a test that cannot connect
    saying why in one line; then back to the local file."""
    wizard.query_one("#dest-where", Select).value = "share"
    wizard.query_one("#share-type", Select).value = "smb"
    await visit.pilot.pause()
    wizard.query_one("#share-password", Input).focus()
    await type_text(visit.pilot, "s3cret")
    await visit.pilot.click("#share-test")
    shown = await visit.step("image wizard: network share")
    assert "Password (smb):" in shown and "s3cret" not in shown and "******" in shown
    assert "name the server's address" in shown
    wizard.query_one("#dest-where", Select).value = "local"
    await visit.pilot.pause()


async def restore_wizard_and_job(visit: Visit, raw_image: str, target: str) -> None:
    await visit.open("d", DisksScreen)
    await highlight(visit, target)
    restore = await visit.open("r", RestoreWizard)
    restore.query_one("#image-path", Input).value = raw_image
    shown = await visit.step("restore wizard: targets", "enter")
    assert restore.query_one("#target-list", SelectionList).selected == [target]
    assert f"[x] {target}" in shown and "[ ] " in shown  # marked and not, in letters
    await visit.step("restore wizard: check", "ctrl+n")
    await visit.step("restore wizard: confirm", "ctrl+n")
    restore.query_one("#confirm-fields Input", Input).focus()
    await type_text(visit.pilot, os.path.basename(target))
    await visit.open("enter", RestoreScreen)
    restoring = visit.app.jobs[1]
    assert isinstance(restoring, RunningRestore)
    await wait_until(visit.pilot, lambda: restoring.done)
    await visit.step("restore job")


@pytest.mark.slow
def test_every_screen_and_dialog_is_ascii_on_a_vt220(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")  # no live SSH tool
    fs_image = accented_ext4(tmp_path)
    raw_image = make_file(str(tmp_path / "disk.img"), 2 * MIB, os.urandom(2 * MIB))
    dest = tmp_path / "out" / "sim.img"
    dest.parent.mkdir()
    visits: list[Visit] = []
    with loop_device(make_file(str(tmp_path / "target.bin"), 4 * MIB)) as target:

        async def scenario(pilot: Pilot) -> None:
            visit = Visit(pilot)
            visits.append(visit)
            await disks_and_dialogs(visit, target)
            await browser(visit, fs_image)
            await image_wizard_and_job(visit, dest)
            await restore_wizard_and_job(visit, raw_image, target)

        drive(make_home_app(VT220), scenario, notifications=True)
    screens = {kind.__name__ for kind in (
        DisksScreen, InspectScreen, HelpScreen, SshScreen, ImagePicker, ImageBrowser,
        FolderPicker, ImageWizard, JobScreen, QuitScreen, RestoreWizard, RestoreScreen,
        ShareDialog)}
    steps = {"image list", "folder picker", "map viewer", "jobs list, toast",
             "image wizard: network share"}
    assert screens | steps <= set(visits[0].seen)


WIDE_AND_ODD = "é東☕📁\u0301\u00a0"


def test_every_stand_in_is_ascii_and_as_wide() -> None:
    """A stand-in wider or narrower than its character would shift the rest of the line."""
    chars = {*STAND_INS, *map(chr, range(0x2500, 0x25a0)), *WIDE_AND_ODD}
    wrong = {char: ascii_for(char) for char in chars if unicodedata.category(char) != "Cn"
             and not (ascii_for(char).isascii() and cell_len(ascii_for(char)) == cell_len(char))}
    assert not wrong


def test_text_keeps_ascii_and_its_width() -> None:
    text = "café → 東京 … │ ok"
    assert to_ascii(text) == "cafe > ???? . | ok"
    assert to_ascii("plain") == "plain"


def test_without_colour_the_cursor_is_reverse_video_and_no_colour_is_sent() -> None:
    app = make_home_app(VT220)

    async def scenario(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, DisksScreen)
        await wait_until(pilot, lambda: bool(screen.paths()))
        last = len(screen.paths()) - 1
        screen.table.move_cursor(row=last)
        await pilot.pause()
        strips = app.screen._compositor.render_strips()
        styles = [segment.style for strip in strips for segment in strip
                  if segment.style is not None]
        assert all(style.color is None or style.color.is_default for style in styles)
        assert all(style.bgcolor is None or style.bgcolor.is_default for style in styles)
        highlighted = {segment.text.strip() for strip in strips for segment in strip
                       if segment.style is not None and segment.style.reverse}
        assert screen.paths()[last].split("/")[-1] in " ".join(highlighted)

    drive(app, scenario)



def reversed_text(app: RescueApp) -> str:
    strips = app.screen._compositor.render_strips()
    return " ".join(segment.text.strip() for strip in strips for segment in strip
                    if segment.style is not None and segment.style.reverse)


async def each_end_reversed(pilot: Pilot, options: OptionList) -> None:
    """The first and the last option, highlighted in turn, are each shown in reverse video."""
    for index in (0, options.option_count - 1):
        options.highlighted = index
        await pilot.pause()
        path = str(options.get_option_at_index(index).prompt).split()[0]
        assert path in reversed_text(cast(RescueApp, pilot.app)), path


def test_without_colour_every_list_shows_its_highlighted_option(tmp_path: Path) -> None:
    """An option list shows its highlight by colour alone in Textual: without colour the
    highlighted option of each list (the image wizard's sources, the restore targets) is in
    reverse video, wherever the cursor goes."""
    raw_image = make_file(str(tmp_path / "disk.img"), 2 * MIB, os.urandom(2 * MIB))
    with loop_device(make_file(str(tmp_path / "target.bin"), 4 * MIB)) as target:

        async def scenario(pilot: Pilot) -> None:
            visit = Visit(pilot)
            await highlight(visit, target)
            wizard = await visit.open("i", ImageWizard)
            known = wizard.query_one("#known", OptionList)
            known.focus()
            await each_end_reversed(pilot, known)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(visit.app.screen, DisksScreen))
            restore = await visit.open("r", RestoreWizard)
            restore.query_one("#image-path", Input).value = raw_image
            await visit.step("restore wizard: targets", "enter")
            targets = restore.query_one("#target-list", SelectionList)
            targets.focus()
            await pilot.pause()
            assert target in reversed_text(visit.app)  # the cursor starts on the marked disk
            await pilot.press("space")  # and space unmarks it at once
            assert targets.selected == []
            await each_end_reversed(pilot, targets)
            await pilot.press("escape")

        drive(make_home_app(VT220), scenario)
