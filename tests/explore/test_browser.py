"""The image browser screen under Textual's Pilot: volumes, folders, damage marks, extract."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from rescue.explore.filesystem import Entry
from rescue.tui.screens.browser import ExtractPicker, ImageBrowser, Node
from tests.fixtures.cli import run
from tests.fixtures.disks import formatted
from tests.fixtures.tui import SIZE, screen_lines, wait_until

BLOCK = 4096


class BrowserApp(App[None]):
    def __init__(self, image: str) -> None:
        super().__init__()
        self.image = image
        self.folders: dict[str, str] = {}  # the session's last folders, as the rescue app keeps

    def on_mount(self) -> None:
        self.push_screen(ImageBrowser(self.image))


def make_damaged_ext4(tmp_path: Path) -> Path:
    """An ext4 image (mkfs -d, no mount needed) and a mapfile calling one file's block bad."""
    tree = tmp_path / "tree"
    (tree / "folder").mkdir(parents=True)
    (tree / "folder" / "hurt.bin").write_bytes(b"h" * 3 * BLOCK)
    (tree / "fine.txt").write_bytes(b"fine\n")
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-d", tree, image)
    block = int(run("debugfs", "-R", "blocks /folder/hurt.bin", image).split()[1])
    size = image.stat().st_size
    bad = block * BLOCK
    (tmp_path / "fs.img.map").write_text(
        f"0x0 +\n0x0 {bad:#x} +\n{bad:#x} {BLOCK:#x} -\n{bad + BLOCK:#x} "
        f"{size - bad - BLOCK:#x} +\n")
    return image


def find_node(browser: ImageBrowser, name: bytes) -> TreeNode[Node] | None:
    stack = list(browser.file_tree.root.children)
    while stack:
        node = stack.pop()
        data = node.data
        if isinstance(data, Node) and isinstance(data.entry, Entry) and data.entry.name == name:
            return node
        stack.extend(node.children)
    return None


def test_browse_mark_damage_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    image = make_damaged_ext4(tmp_path)
    monkeypatch.chdir(tmp_path)  # the one-line header then shows all of itself, whatever the
    app = BrowserApp(image.name)  # temporary folder's name
    dest = tmp_path / "out"

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            browser = app.screen
            assert isinstance(browser, ImageBrowser)
            await wait_until(pilot, lambda: bool(browser.file_tree.root.children))
            assert "(1 volume(s), 4 KiB unreadable)" in screen_lines(app)[0]
            await pilot.press("enter")  # open the volume
            await wait_until(pilot, lambda: find_node(browser, b"folder") is not None)
            folder = find_node(browser, b"folder")
            browser.file_tree.move_cursor(folder)
            await pilot.press("enter")
            await wait_until(pilot, lambda: find_node(browser, b"hurt.bin") is not None)
            hurt = find_node(browser, b"hurt.bin")
            assert str(hurt.label).startswith("! hurt.bin")
            assert str(find_node(browser, b"fine.txt").label).startswith("  fine.txt")
            browser.file_tree.move_cursor(hurt)
            await wait_until(pilot, lambda: "DAMAGED" in "\n".join(screen_lines(app)))
            assert "bytes 4096-8192" in "\n".join(screen_lines(app))
            await pilot.press("e")
            await pilot.pause()
            assert "Extract into which folder?" in "\n".join(screen_lines(app))
            await pilot.press("escape")
            browser.extract_to(folder.data, str(dest))
            await wait_until(pilot, lambda: browser.last_report is not None)
            report = browser.last_report
            assert report is not None and report.files == 1
            assert report.damaged == [("/folder/hurt.bin", ((BLOCK, 2 * BLOCK),))]

    asyncio.run(scenario())
    assert (dest / "folder" / "hurt.bin").read_bytes() == b"h" * 3 * BLOCK  # data kept as is


async def first_volume_opened(pilot: Pilot) -> ImageBrowser:
    """The browser, once it lists the image's volumes, opening the first."""
    browser = pilot.app.screen
    assert isinstance(browser, ImageBrowser)
    await wait_until(pilot, lambda: bool(browser.file_tree.root.children))
    await pilot.press("enter")
    return browser


def test_an_unreadable_image_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    image = tmp_path / "empty.img"
    image.write_bytes(bytes(1 << 20))
    app = BrowserApp(str(image))

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await first_volume_opened(pilot)
            await wait_until(pilot, lambda: "no file system" in "\n".join(screen_lines(app)))

    asyncio.run(scenario())


def test_extract_says_what_and_starts_in_the_last_folder_chosen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_damaged_ext4(tmp_path)
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(first)
    app = BrowserApp(str(image))

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            browser = await first_volume_opened(pilot)
            await wait_until(pilot, lambda: find_node(browser, b"folder") is not None)
            browser.file_tree.move_cursor(find_node(browser, b"folder"))
            await pilot.press("e")
            await wait_until(pilot, lambda: "/folder/: 1 file(s), 0 folder(s), 12 KiB"
                             in "\n".join(screen_lines(app)))
            picker = app.screen
            assert isinstance(picker, ExtractPicker) and picker.start == str(first)
            await pilot.press("enter")  # the tree's top: the folder it starts in
            await wait_until(pilot, lambda: browser.last_report is not None)
            monkeypatch.chdir(elsewhere)
            browser.file_tree.move_cursor(find_node(browser, b"fine.txt"))
            await pilot.press("e")
            await pilot.pause()
            picker = app.screen
            assert isinstance(picker, ExtractPicker) and picker.start == str(first)
            assert "/fine.txt (5 B)" in "\n".join(screen_lines(app))

    asyncio.run(scenario())
    assert (first / "folder" / "hurt.bin").read_bytes() == b"h" * 3 * BLOCK


@pytest.mark.slow
@pytest.mark.root
def test_details_show_streams_and_who_owns_what(tmp_path: Path) -> None:
    """An NTFS file's alternate data streams and that NTFS keeps no Unix owners; an ext4
    file's owner as stored."""
    ntfs = tmp_path / "ntfs.img"
    with open(ntfs, "wb") as f:
        f.truncate(16 << 20)
    with formatted(ntfs, ("mkntfs", "-q", "-F", "-f"),
                   ("ntfs-3g", "-o", "streams_interface=windows")) as mnt:
        (mnt / "doc.txt").write_bytes(b"body\n")
        (mnt / "doc.txt:Zone.Identifier").write_bytes(b"[ZoneTransfer]\nZoneId=3\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "mine.txt").write_bytes(b"mine\n")
    os.chown(tree / "mine.txt", 1234, 5678)
    ext4 = tmp_path / "ext4.img"
    with open(ext4, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, ext4)

    async def details_of(image: Path, name: bytes, shown_last: str) -> str:
        """The screen once the details of `name` show `shown_last` (added by a worker)."""
        app = BrowserApp(str(image))
        async with app.run_test(size=SIZE) as pilot:
            browser = await first_volume_opened(pilot)
            await wait_until(pilot, lambda: find_node(browser, name) is not None)
            browser.file_tree.move_cursor(find_node(browser, name))
            await wait_until(pilot, lambda: shown_last in "\n".join(screen_lines(app)))
            return "\n".join(screen_lines(app))

    shown = asyncio.run(details_of(ntfs, b"doc.txt", ":Zone.Identifier"))
    assert "owner:  none kept" in shown
    assert "streams: 1, extracted as NAME:STREAM" in shown
    shown = asyncio.run(details_of(ext4, b"mine.txt", "owner:"))
    assert "owner:  1234:5678" in shown
