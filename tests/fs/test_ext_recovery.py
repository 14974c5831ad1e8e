"""ext file systems with a damaged primary superblock or descriptor table are read from a
backup copy, as `e2fsck -b` reads them; inline-data directories are listed in full. Judged by
partclone on the undamaged file system, by e2fsck repairing the used-mode image from the same
backup, and by debugfs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from rescue.formats import mapfile
from rescue.fs.domain import used_map
from rescue.fs.partitions import DiskReader
from rescue.fs.used import Extent
from rescue.fs.used.ext import ExtFS
from rescue.rangemap import BAD, RangeMap
from tests.fixtures.cli import rescue, run
from tests.fixtures.filesystems import (
    MIB,
    extracted_hashes,
    fsck_clean,
    make_tree,
    partclone_used,
    tree_hashes,
)
from tests.fixtures.loop import loop_device

pytestmark = pytest.mark.slow
BLOCK_UNINIT = 0x2  # descriptor flag: the group's block bitmap was never written


@dataclass(frozen=True)
class Built:
    """A file system made by mke2fs from a tree, and where its first backup lives."""

    image: Path
    fs_type: str
    hashes: dict[str, str]
    block_size: int
    backup: int  # block of the superblock copy in group 1
    partclone_used: list[Extent]  # what partclone reads of the undamaged file system

    @property
    def descriptors(self) -> int:
        """Byte offset of the primary descriptor table (after the block holding byte 1024)."""
        return (1024 // self.block_size + 1) * self.block_size


# 4 KiB blocks need a file system past 128 MiB for a group 1; sparse files keep it cheap
LAYOUTS = {
    "ext4-4k": ("ext4", 4096, 640 * MIB, 32768),  # groups 1 and 3 start BLOCK_UNINIT
    "ext2-1k": ("ext2", 1024, 40 * MIB, 8193),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    result = {}
    for seed, (name, (fs_type, block_size, size, backup)) in enumerate(LAYOUTS.items()):
        work = tmp_path_factory.mktemp(name)
        source = work / "tree"
        make_tree(source, seed)
        image = work / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        run(f"mkfs.{fs_type}", "-q", "-F", "-b", str(block_size), "-d", str(source), str(image))
        result[name] = Built(image, fs_type, tree_hashes(source), block_size, backup,
                             partclone_used("ext4", image))
    return result


def zero_superblock(fs: Built, f: BinaryIO) -> None:
    f.seek(1024)
    f.write(bytes(1024))


def garble_superblock(fs: Built, f: BinaryIO) -> None:
    """Counts and sizes garbled; the magic and the UUID after them survive."""
    f.seek(1024)
    f.write(random.Random(1).randbytes(0x38))


def garble_descriptors(fs: Built, f: BinaryIO) -> None:
    f.seek(fs.descriptors)
    f.write(random.Random(2).randbytes(fs.block_size))


DAMAGES: dict[str, tuple[Callable[[Built, BinaryIO], None], str]] = {
    "zeroed superblock": (zero_superblock, "superblock"),
    "garbled superblock": (garble_superblock, "superblock"),
    "garbled descriptors": (garble_descriptors, "group descriptors"),
}


def damaged_copy(fs: Built, damage: str, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged.img"
    run("cp", "--sparse=always", str(fs.image), str(copy))
    with open(copy, "r+b") as f:
        DAMAGES[damage][0](fs, f)
    return copy


def uncovered(ours: tuple[Extent, ...], theirs: list[Extent]) -> list[Extent]:
    return [(pos, n) for pos, n in theirs if not any(b <= pos and pos + n <= b + m
                                                     for b, m in ours)]


@contextlib.contextmanager
def mounted(image: Path) -> Iterator[Path]:
    """The kernel's ext4 on a loop device, always unmounted: it does what libext2fs does not
    (lets an inline directory grow past the 60 bytes of i_block, into the inode's attribute
    area; leaves the backup descriptors as mke2fs wrote them)."""
    with contextlib.ExitStack() as stack:
        mnt = Path(tempfile.mkdtemp(prefix="ext-mnt-"))
        stack.callback(os.rmdir, mnt)
        device = stack.enter_context(loop_device(str(image)))
        run("mount", device, str(mnt))
        stack.callback(subprocess.run, ["umount", str(mnt)], capture_output=True)
        yield mnt


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backup_covers_every_block_partclone_uses(built: dict[str, Built], layout: str,
                                                   damage: str, tmp_path: Path) -> None:
    fs = built[layout]
    image = damaged_copy(fs, damage, tmp_path)
    with DiskReader(str(image)) as reader:
        ours = used_map(reader)
    assert (ours.method, ours.fs_type) == ("native", fs.fs_type)
    assert len(ours.warnings) == 1
    assert re.fullmatch(rf"ext primary {DAMAGES[damage][1]} damaged \(.+\); used the backup "
                        rf"in group 1 \(block {fs.backup}\)", ours.warnings[0]), ours.warnings
    assert uncovered(ours.used, fs.partclone_used) == []
    assert ours.used_bytes < image.stat().st_size // 2


def test_checksum_reveals_a_plausible_block_count(built: dict[str, Built],
                                                  tmp_path: Path) -> None:
    """A primary claiming fewer blocks passes every geometry check; with metadata_csum its
    checksum still gives it away, and the backup keeps the tail of the file system."""
    fs = built["ext4-4k"]
    image = damaged_copy(fs, "zeroed superblock", tmp_path)
    with open(fs.image, "rb") as src, open(image, "r+b") as dst:
        primary = bytearray(src.read(2048)[1024:])
        count = struct.unpack_from("<I", primary, 0x04)[0]
        struct.pack_into("<I", primary, 0x04, count - 8192)  # the last 32 MiB cut off
        dst.seek(1024)
        dst.write(primary)
    with DiskReader(str(image)) as reader:
        ours = used_map(reader)
    assert ours.method == "native"
    assert "checksum does not match" in ours.warnings[0]
    assert uncovered(ours.used, fs.partclone_used) == []


@pytest.mark.parametrize(("layout", "damage"), [("ext4-4k", "zeroed superblock"),
                                                ("ext2-1k", "garbled descriptors")])
def test_used_mode_image_repairs_from_the_backup(built: dict[str, Built], layout: str,
                                                 damage: str, tmp_path: Path) -> None:
    fs = built[layout]
    image = damaged_copy(fs, damage, tmp_path)
    out = tmp_path / "used.img"
    result = rescue("image", str(image), str(out), "--mode", "used")
    assert result.returncode == 0, result.stderr
    assert f"used the backup in group 1 (block {fs.backup})" in result.stderr
    assert out.stat().st_blocks * 512 < image.stat().st_size // 2  # unused blocks: holes
    repair = subprocess.run(["e2fsck", "-fy", "-b", str(fs.backup), "-B", str(fs.block_size),
                             str(out)], capture_output=True, text=True)
    assert repair.returncode in (0, 1), repair.stdout + repair.stderr
    clean, output = fsck_clean("ext4", out)
    assert clean, output
    assert extracted_hashes("ext4", out) == fs.hashes


@pytest.mark.root
def test_stale_backup_flags_do_not_hide_blocks(built: dict[str, Built], tmp_path: Path) -> None:
    """The kernel clears BLOCK_UNINIT in the primary descriptors only: what it allocates in
    such a group afterwards is known from the group's bitmap alone."""
    fs = built["ext4-4k"]
    image = tmp_path / "grown.img"
    run("cp", "--sparse=always", str(fs.image), str(image))
    with mounted(image) as mnt:
        run("fallocate", "-l", "160M", str(mnt / "big"))  # past group 0, into uninit groups
    data = image.read_bytes()[:(fs.backup + 2) * fs.block_size]
    desc_size = struct.unpack_from("<H", data, 1024 + 0xFE)[0]

    def flags(table: int) -> list[int]:
        return [struct.unpack_from("<H", data, table + group * desc_size + 0x12)[0]
                for group in range(5)]

    stale = [group for group, (primary, backup) in enumerate(zip(
        flags(fs.descriptors), flags((fs.backup + 1) * fs.block_size), strict=True))
        if backup & BLOCK_UNINIT and not primary & BLOCK_UNINIT]
    assert stale, "the kernel allocated in no group the backup calls uninitialised"
    theirs = partclone_used("ext4", image)
    with open(image, "r+b") as f:
        zero_superblock(fs, f)
    with DiskReader(str(image)) as reader:
        ours = used_map(reader)
    assert ours.method == "native" and ours.warnings
    assert uncovered(ours.used, theirs) == []


def test_copies_of_another_file_system_are_not_trusted(built: dict[str, Built],
                                                       tmp_path: Path) -> None:
    """A copy left by an earlier file system (another UUID) makes every copy suspect."""
    fs = built["ext2-1k"]
    image = damaged_copy(fs, "zeroed superblock", tmp_path)
    stale = tmp_path / "earlier.img"
    with open(stale, "wb") as f:
        f.truncate(image.stat().st_size)
    run("mkfs.ext2", "-q", "-F", "-b", "1024", str(stale))
    group3 = (3 * 8192 + 1) * 1024
    with open(stale, "rb") as src, open(image, "r+b") as dst:
        src.seek(group3)
        dst.seek(group3)
        dst.write(src.read(1024))
    with DiskReader(str(image)) as reader:
        result = used_map(reader)
    assert result.method == "whole"
    assert "superblock copies name different file systems" in result.warnings[0]


def test_copies_behind_an_encryption_header_are_not_used(built: dict[str, Built],
                                                        tmp_path: Path) -> None:
    """luksFormat over an ext file system leaves its superblock copies in place."""
    image = damaged_copy(built["ext2-1k"], "zeroed superblock", tmp_path)
    with open(image, "r+b") as f:
        f.write(b"LUKS\xba\xbe\x00\x02")
    with DiskReader(str(image)) as reader:
        result = used_map(reader)
    assert (result.method, result.warnings) == (
        "whole", ("unknown file system, so its free blocks cannot be told apart: imaging the "
                  "whole area, nothing skipped",))


# ---- inline-data directories ------------------------------------------------------------------

@pytest.mark.root
def test_inline_directory_past_60_bytes(tmp_path: Path) -> None:
    image = tmp_path / "inline.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    run("mkfs.ext4", "-q", "-F", "-O", "inline_data", "-I", "256", str(image))
    rng = random.Random(5)
    names = [f"/small/{letter * 2}" for letter in "abcdefg"]
    with mounted(image) as mnt:
        (mnt / "small").mkdir()
        (mnt / "other").mkdir()
        for name in [*names, "/other/big.bin"]:
            (mnt / name.lstrip("/")).write_bytes(rng.randbytes(5000))  # too big to be inline
        expected = {"/" + str(p.relative_to(mnt)) for p in mnt.rglob("*")}
    stat = run("debugfs", "-R", "stat /small", str(image))
    inline = re.search(r"Size of inline data: (\d+)", stat)
    assert inline and int(inline[1]) > 60, stat
    with DiskReader(str(image)) as reader:
        fs = ExtFS(reader)
        records = {record.path: record for record in fs.files()}
        small = fs.inode_offset(int(re.search(r"Inode: (\d+)", stat)[1]))
    assert set(records) == expected
    # entries past i_block live in the attribute area, after the 128-byte base inode
    in_attribute = [name for name in names if records[name].metadata[1][0] >= small + 128]
    assert in_attribute
    victim = in_attribute[-1]
    block_size = int(re.search(r"Block size:\s+(\d+)", run("debugfs", "-R", "stats",
                                                           str(image)))[1])
    bad = int(run("debugfs", "-R", f"blocks {victim}", str(image)).split()[0]) * block_size
    rmap = RangeMap(image.stat().st_size, "+")
    rmap.set(bad, 512, BAD)
    mapfile.save(str(tmp_path / "inline.map"), mapfile.Mapfile(rmap))
    result = rescue("report", str(image), "--map", str(tmp_path / "inline.map"), "--json")
    assert result.returncode == 1, result.stderr
    assert [(f["path"], f["lost"]) for f in json.loads(result.stdout)["files"]] == \
        [(victim, 512)]


def test_report_names_the_backup_it_read(built: dict[str, Built], tmp_path: Path) -> None:
    fs = built["ext4-4k"]
    image = damaged_copy(fs, "zeroed superblock", tmp_path)
    rmap = RangeMap(image.stat().st_size, "+")
    rmap.set(image.stat().st_size // 2, 512, BAD)
    mapfile.save(str(tmp_path / "one-bad.map"), mapfile.Mapfile(rmap))
    result = rescue("report", str(image), "--map", str(tmp_path / "one-bad.map"), "--json")
    assert result.returncode in (0, 1), result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert any(f"used the backup in group 1 (block {fs.backup})" in w for w in warnings), warnings
