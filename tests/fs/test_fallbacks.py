"""Bad input never loses data: what cannot be trusted is imaged whole, with a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rescue.fs.domain import plan_disk, used_map
from rescue.fs.partitions import DiskReader
from rescue.rangemap import FINISHED
from tests.fixtures.cli import rescue, run
from tests.fixtures.filesystems import MIB


def mkfs(tmp_path: Path, name: str, *command: str, size: int = 16 * MIB) -> Path:
    image = tmp_path / name
    with open(image, "wb") as f:
        f.truncate(size)
    run(*command, str(image))
    return image


def whole(image: Path) -> tuple[str, ...]:
    with DiskReader(str(image)) as reader:
        result = used_map(reader, str(image))
    assert result.method == "whole" and result.used == ((0, image.stat().st_size),)
    return result.warnings


def test_damaged_superblock_and_backup(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "ext.img", "mkfs.ext4", "-q", "-b", "1024")
    with open(image, "r+b") as f:  # the primary and the one backup, in group 1 at block 8193
        for superblock in (1024, 8193 * 1024):
            f.seek(superblock + 0x18)  # log block size: an impossible 2^40-byte block
            f.write((30).to_bytes(4, "little"))
    warning = whole(image)[0]
    assert "block size" in warning and "no usable backup superblock" in warning


def test_file_system_larger_than_its_partition(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "ext.img", "mkfs.ext4", "-q")
    with open(image, "r+b") as f:
        f.truncate(8 * MIB)
    assert "claims" in whole(image)[0]


def test_bitmap_location_beyond_the_end(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "ext.img", "mkfs.ext4", "-q", "-b", "4096", "-O",
                 "^metadata_csum")
    with open(image, "r+b") as f:  # group 0's block bitmap pointer, in the first descriptor
        f.seek(4096)
        f.write((10**8).to_bytes(4, "little"))
    assert "outside the file system" in whole(image)[0]


def test_damaged_fat_and_unknown(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "fat.img", "mkfs.vfat")
    with open(image, "r+b") as f:
        f.seek(13)
        f.write(b"\x03")  # sectors per cluster must be a power of two
    assert whole(image)
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\x17" * MIB)
    assert "unknown file system" in whole(blank)[0]


def test_partition_outside_the_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, size=16MiB\n"
                   "size=40MiB\n", text=True, check=True, capture_output=True)
    with open(disk, "r+b") as f:
        f.truncate(40 * MIB)
    with DiskReader(str(disk)) as reader:
        plan = plan_disk(reader)
    assert any("clipped" in w for w in plan.warnings)
    assert any("outside partitions" in w for w in plan.warnings)
    # nothing parses in either partition: the whole disk is the domain
    assert plan.used.totals()[FINISHED] == 40 * MIB


@pytest.mark.skipif(shutil.which("partclone.minix") is None, reason="needs partclone")
def test_partclone_fallback(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "minix.img", "mkfs.minix", size=8 * MIB)
    with DiskReader(str(image)) as reader:
        result = used_map(reader, str(image))
    assert (result.fs_type, result.method) == ("minix", "partclone")
    assert 0 < result.used_bytes < 8 * MIB // 2


@pytest.mark.slow
def test_cli_warns_and_images_whole(tmp_path: Path) -> None:
    image = mkfs(tmp_path, "ext.img", "mkfs.ext4", "-q", "-b", "1024")
    with open(image, "r+b") as f:
        for superblock in (1024, 8193 * 1024):  # the primary and its backup in group 1
            f.seek(superblock + 0x38)
            f.write(b"\0\0")  # no magic: an unknown file system
    out = tmp_path / "out.img"
    result = rescue("image", str(image), str(out), "--mode", "used")
    assert result.returncode == 0, result.stderr
    assert ("warning: disk: unknown file system, so its free blocks cannot be told apart: "
            "imaging the whole area, nothing skipped") in result.stderr
    assert out.read_bytes() == image.read_bytes()



def test_ntfs_made_over_ext4_with_the_old_superblock_left_is_imaged_whole(tmp_path: Path
                                                                         ) -> None:
    image = mkfs(tmp_path, "both.img", "mkfs.ext4", "-q", "-b", "4096")
    ext_head = image.read_bytes()[1024:8192]  # ext's superblock and group descriptors
    run("mkfs.ntfs", "-q", "-F", "-Q", str(image))
    with open(image, "r+b") as f:  # as a formatter that writes only the boot sector leaves it
        f.seek(1024)
        f.write(ext_head)
    head = image.read_bytes()[:0x43A]
    assert head[3:11] == b"NTFS    " and head[0x438:0x43A] == b"\x53\xef"
    warning = whole(image)[0]
    assert "ext and ntfs" in warning and "imaging the whole area" in warning
