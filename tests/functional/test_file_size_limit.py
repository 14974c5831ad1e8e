"""Destinations whose files hold at most 4 GiB - 1 bytes (FAT32): an image that may grow past
that is refused before the job starts, by the CLI and on the image wizard's destination step,
never failed at 4 GiB in the middle of a rescue.

This kernel has no vfat driver, so the FAT32 file system (made by mkfs.vfat) is mounted through
FUSE with fusefat; mountinfo then names it `fuse.fusefat`. The kernel's own `vfat` type is
checked on mountinfo lines of the same shape. (fusefat cannot truncate or rename, so no image
is written there: the decision is judged, on the real mount, before anything is written.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from rescue.devices.discover import BlockTree, SystemState, read_mounts
from rescue.devices.safety import FAT_LARGEST_FILE, LARGEST_FILE, check_write_target
from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue, run
from tests.fixtures.tui import drive
from tests.tui.test_wizards import full_text, home_app, image_wizard, set_field, shown

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("fusefat") is None or
                                 shutil.which("mkfs.vfat") is None,
                                 reason="needs fusefat and mkfs.vfat (dosfstools)")]

GIB = 1 << 30
LIMIT = "holds no file of 4 GiB or more"
BIG = "sim:size=5G,seed=3"  # a disk past the limit (simulated: nothing of it is stored)


@pytest.fixture
def fat32(tmp_path: Path) -> Iterator[Path]:
    """A FAT32 file system made by mkfs.vfat in a sparse file, mounted read-write."""
    backing = tmp_path / "fat32.img"
    backing.write_bytes(b"")
    os.truncate(backing, 64 << 20)
    run("mkfs.vfat", "-F", "32", "-n", "RESCUE", backing)
    mountpoint = tmp_path / "fat"
    mountpoint.mkdir()
    run("fusefat", "-o", "rw+", backing, mountpoint)
    try:
        yield mountpoint
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], check=False)


def _limit_reasons(dest: Path, size: int, compressed: bool = False) -> list[str]:
    verdict = check_write_target(str(dest), needed_size=size, compressed=compressed)
    return [reason.message for reason in verdict.reasons if reason.code == "file-size-limit"]


@pytest.mark.parametrize("name", ["disk.img", "disk.qcow2", "disk.img.zst"])
def test_an_image_that_may_pass_4_gib_is_refused_before_anything_is_written(
        fat32: Path, name: str) -> None:
    result = rescue("image", BIG, fat32 / name)
    assert_clean_failure(result, ExitCode.REFUSED, f"{fat32} is on fuse.fusefat, which {LIMIT}"
                                                   r".* 5 GiB: write it to another file system")
    assert [entry.name for entry in fat32.iterdir() if entry.name.startswith("disk")] == []


def test_force_takes_the_risk_for_a_compressed_image_never_for_a_raw_one(fat32: Path) -> None:
    raw = rescue("image", BIG, fat32 / "disk.img", "--force")
    assert_clean_failure(raw, ExitCode.REFUSED, rf"{LIMIT}.*\(--force cannot override this\)")
    assert "compressed (.qcow2, .img.zst) with --force" in raw.stderr
    compressed = check_write_target(str(fat32 / "disk.qcow2"), needed_size=5 * GIB,
                                    compressed=True)
    assert not compressed.allowed() and compressed.allowed(force=True)
    assert "take the risk that it stays under 4 GiB" in compressed.reasons[0].message


def test_the_limit_is_4_gib_less_one_byte(fat32: Path, tmp_path: Path) -> None:
    """Every size up to the largest file FAT32 holds passes; one byte more is refused; the
    same sizes on a file system without the limit pass."""
    for size in (16 << 20, FAT_LARGEST_FILE - 511, FAT_LARGEST_FILE):
        assert _limit_reasons(fat32 / "disk.img", size) == []
    for size in (FAT_LARGEST_FILE + 1, 4 * GIB, 64 * GIB):
        assert len(_limit_reasons(fat32 / "disk.img", size)) == 1
        assert _limit_reasons(tmp_path / "disk.img", size) == []  # this test's own folder
    assert _limit_reasons(fat32 / "no-such-folder" / "disk.img", 5 * GIB) == []  # other reason


@pytest.mark.parametrize("fstype", ["vfat", "msdos"])
def test_the_kernels_fat_types_are_found_on_mountinfo_lines(tmp_path: Path,
                                                           fstype: str) -> None:
    """A folder on a file system mountinfo lists as the kernel's FAT drivers do: its mount is
    found by the folder's device, deepest mount point first, and its type has the limit."""
    folder = tmp_path / "stick" / "images"
    folder.mkdir(parents=True)
    device = os.stat(folder).st_dev
    number = f"{os.major(device)}:{os.minor(device)}"
    table = tmp_path / "mountinfo"
    table.write_text(
        f"30 1 {number} / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"41 30 {number} / {tmp_path / 'stick'} rw,relatime shared:9 - {fstype} /dev/sdb1 "
        "rw,fmask=0022,dmask=0022,codepage=437,iocharset=ascii,shortname=mixed,errors=remount-ro\n"
        f"42 30 0:99 / {tmp_path / 'stick' / 'images'} rw - tmpfs tmpfs rw\n")
    state = SystemState(tree=BlockTree(), mounts=tuple(read_mounts(str(table))), swaps=())
    mount = state.mount_of(str(folder))
    assert mount is not None and mount.fstype == fstype
    assert LARGEST_FILE[mount.fstype] == 2**32 - 1


def test_the_wizard_says_so_on_the_destination_step(fat32: Path) -> None:
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_wizard(pilot, BIG, str(fat32 / "disk.img"))
        assert wizard.step_id == "dest"  # a raw image: no way on
        problem = full_text(app, "#problem")
        assert LIMIT in problem and "write it to another file system" in problem
        assert "which holds no file of 4 GiB" in shown(app)
        await set_field(pilot, "#dest-path", str(fat32 / "disk.qcow2"))
        await pilot.press("enter")  # compressed: on, the risk named in the summary
        assert wizard.step_id == "options"
        await pilot.press("ctrl+n")
        summary = full_text(app, "#summary")
        assert LIMIT in summary and "(force overrides)" in summary
        await pilot.press("enter")
        assert not app.jobs and "cannot start" in shown(app)

    drive(app, scenario)
    assert list(fat32.glob("disk*")) == []


@pytest.mark.parametrize("name", ["copy.img", "copy.qcow2"])
def test_a_conversion_that_may_pass_4_gib_is_refused_before_anything_is_written(
        fat32: Path, tmp_path: Path, name: str) -> None:
    """A 5 GiB disk in a qcow2 of a few hundred KiB: its logical size is what a raw copy
    takes, and what a compressed one may reach."""
    source = tmp_path / "big.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", source, "5G")
    result = rescue("convert", source, fat32 / name)
    assert_clean_failure(result, ExitCode.REFUSED, f"{fat32} is on fuse.fusefat, which {LIMIT}")
    assert [entry.name for entry in fat32.iterdir() if entry.name.startswith("copy")] == []
