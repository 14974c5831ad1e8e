"""XFS directories and inodes located from the on-disk structures alone (rescue/fs/xfs.py),
judged by xfs_db on file systems that mkfs.xfs fills from a prototype (no mount, no root):
every directory format, versions 4 and 5, with and without file types in entries, and
directory blocks larger than file-system blocks."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.errors import FormatError
from rescue.fs.xfs import XfsDirectories
from tests.fixtures.cli import run
from tests.fixtures.fuzz import bounded

MIB = 1 << 20
# folder -> how many files it holds: its size decides how XFS keeps it
FOLDERS = {"short": 3, "block": 40, "leaf": 700, "node": 6000}
SPREAD = 8000  # files with data between its blocks: a folder mapped by a B-tree
XFS_DB_KINDS = {"regular": "file", "directory": "dir", "symlink": "symlink", "fifo": "fifo",
                "chardev": "char", "blkdev": "block", "socket": "socket"}
VARIANTS = {"v5": (), "v5-16k-folder-blocks": ("-n", "size=16384"), "v4": ("-m", "crc=0"),
            "v4-no-file-types": ("-m", "crc=0", "-n", "ftype=0")}


def prototype(folder: Path) -> Path:
    """mkfs.xfs's description of the tree: folders of each size, every kind of entry, and a
    folder whose blocks are spread between its files' data."""
    data = folder / "4k"
    data.write_bytes(bytes(range(256)) * 16)
    lines = ["/dev/null", "0 0", "d--755 0 0",
             "kinds d--755 0 0", "f ---644 0 0 /dev/null", "l l--777 0 0 some-target",
             "p p--644 0 0", "c c--644 0 0 1 3", "b b--644 0 0 7 0", "sub d--755 0 0", "$",
             "$"]
    for name, count in FOLDERS.items():
        lines += [f"{name} d--755 0 0",
                  *(f"entry-with-a-longer-name-{k:05d} ---644 0 0 /dev/null"
                    for k in range(count)), "$"]
    lines += ["spread d--755 0 0",
              *(f"spread-file-{k:05d}-with-a-long-name ---644 0 0 {data}"
                for k in range(SPREAD)), "$", "$"]
    proto = folder / "proto"
    proto.write_text("\n".join(lines) + "\n")
    return proto


@pytest.fixture(scope="module", params=list(VARIANTS))
def xfs_image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    folder = tmp_path_factory.mktemp(f"xfs-{request.param}")
    image = folder / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(300 * MIB)
    run("mkfs.xfs", "-q", "-f", *VARIANTS[request.param], "-p", prototype(folder), image)
    return image


@pytest.fixture(scope="module")
def xfs_bytes(xfs_image: Path) -> bytes:
    return xfs_image.read_bytes()


def xfs_db(image: Path, *commands: str) -> str:
    return run("xfs_db", "-r", *(part for command in commands for part in ("-c", command)),
               image)


def judged_names(image: Path, path: str) -> dict[bytes, tuple[int, str]]:
    """name -> (inode, kind) as xfs_db lists the folder, "." and ".." left out."""
    found = {}
    for line in xfs_db(image, f"ls {path}").splitlines()[1:]:
        fields = line.split()
        name = " ".join(fields[5:-1]).encode()
        if name not in (b".", b".."):
            found[name] = (int(fields[1]), XFS_DB_KINDS.get(fields[2], fields[2]))
    return found


def inode_of(image: Path, path: str) -> int:
    if path == "/":
        return int(xfs_db(image, "sb 0", "p rootino").split("=")[1])
    parent, name = path.rsplit("/", 1)
    return judged_names(image, parent or "/")[name.encode()][0]


def reader_of(image: Path) -> XfsDirectories:
    data = image.read_bytes()
    return XfsDirectories(lambda offset, length, what: data[offset:offset + length])


def test_every_folder_format_lists_what_xfs_db_lists(xfs_image: Path) -> None:
    directories = reader_of(xfs_image)
    layouts = set()
    for path in ["/", "/kinds", *(f"/{name}" for name in FOLDERS), "/spread"]:
        judged = judged_names(xfs_image, path)
        inode = inode_of(xfs_image, path)
        layouts.add(xfs_db(xfs_image, f"inode {inode}", "p core.format").split("(")[1][:-2])
        found = {entry.name: (entry.inode, entry.kind) for entry in directories.names(inode)}
        if directories.geometry.file_types:
            assert found == judged, path
        else:
            assert {name: number for name, (number, _) in found.items()} == \
                {name: number for name, (number, _) in judged.items()}, path
            assert {kind for _, kind in found.values()} == {None}
    assert layouts == {"local", "extents", "btree"}


def test_inodes_lie_where_xfs_db_puts_them(xfs_image: Path) -> None:
    directories = reader_of(xfs_image)
    numbers = [number for number, _ in judged_names(xfs_image, "/").values()]
    numbers += [number for number, _ in judged_names(xfs_image, "/kinds").values()]
    geometry = directories.geometry
    groups = {number >> (geometry.ag_block_log + geometry.inodes_per_block_log)
              for number in numbers}
    assert len(groups) > 1  # folders in other allocation groups
    image = xfs_image.read_bytes()
    for number in numbers:
        sector = xfs_db(xfs_image, f"convert inode {number} daddr").split("(")[1].rstrip(")\n")
        offset = geometry.inode_offset(number)
        assert offset // 512 == int(sector)
        assert image[offset:offset + 2] == b"IN"
        if geometry.version == 5:  # the inode records its own number
            assert int.from_bytes(image[offset + 152:offset + 160], "big") == number


def test_what_is_not_xfs_or_not_a_folder_is_refused(xfs_image: Path) -> None:
    with pytest.raises(FormatError):
        XfsDirectories(lambda offset, length, what: bytes(length))
    directories = reader_of(xfs_image)
    data = bytearray(xfs_image.read_bytes())
    folder = judged_names(xfs_image, "/")[b"node"][0]
    at = directories.geometry.inode_offset(folder)
    data[at:at + 2] = b"\0\0"
    with pytest.raises(FormatError, match="not an inode"):
        list(XfsDirectories(lambda offset, length, what: bytes(data[offset:offset + length]))
             .names(folder))


class Overlay:
    """The image with some bytes changed, read without copying it."""

    def __init__(self, data: bytes, changed: dict[int, int]) -> None:
        self.data, self.changed = data, changed

    def read(self, offset: int, length: int, what: str) -> bytes:
        piece = bytearray(self.data[offset:offset + length])
        for at, value in self.changed.items():
            if offset <= at < offset + len(piece):
                piece[at - offset] = value
        return bytes(piece)


def folder_blocks(image: Path, inode: int, block_size: int, geometry_offset: Callable[[int], int]
                  ) -> list[tuple[int, int]]:
    """(offset, length) of each extent xfs_db maps for the folder's data."""
    found = []
    for line in xfs_db(image, f"inode {inode}", "bmap").splitlines():
        fields = line.split()  # data offset 0 startblock 12 (0/12) count 1 flag 0
        if fields[:1] == ["data"]:
            found.append((geometry_offset(int(fields[4])), int(fields[7]) * block_size))
    return found


@pytest.mark.parametrize("seed", range(3))
def test_damaged_folders_give_their_names_or_one_error(xfs_image: Path, xfs_bytes: bytes,
                                                       seed: int) -> None:
    """Bytes of a folder's inode, its blocks and its block-map tree changed at random: the
    names come back or a FormatError does, never another exception, a hang or a blow-up."""
    data = xfs_bytes
    geometry = reader_of(xfs_image).geometry
    rng = random.Random(seed)
    for path in ["/", "/kinds", *(f"/{name}" for name in FOLDERS), "/spread"]:
        inode = inode_of(xfs_image, path)
        areas = [(geometry.inode_offset(inode), geometry.inode_size),
                 *folder_blocks(xfs_image, inode, geometry.block_size, geometry.block_offset)]
        for _ in range(30):
            start, length = rng.choice(areas)
            changed = {start + rng.randrange(min(length, 1 << 16)): rng.randrange(256)
                       for _ in range(rng.choice((1, 4, 32)))}
            overlay = Overlay(data, changed)
            with bounded(cpu_seconds=20), contextlib.suppress(FormatError):
                list(XfsDirectories(overlay.read).names(inode))
