"""partclone's version 2 images as partclone 0.3 writes them: every checksum setting it offers
(CRC32 reseeded or running on, groups of any size, no checksum), ext4 and FAT32, a block
count that is no multiple of 8, read back block for block against the file system itself; and a
damaged header, bitmap, block or checksum found, never read as data."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from rescue.formats import partclone
from tests.fixtures.cli import run

pytestmark = pytest.mark.skipif(subprocess.run(["which", "partclone.ext4"], capture_output=True
                                               ).returncode != 0, reason="partclone missing")


def make_image(folder: Path, kind: str, size: int, *options: str) -> tuple[Path, Path]:
    """A `kind` file system of `size` bytes with some files, and its partclone image."""
    fs = folder / f"{kind}.fs"
    with open(fs, "wb") as f:
        f.truncate(size)
    if kind == "ext4":
        tree = folder / "tree"
        tree.mkdir()
        for index in range(5):
            (tree / f"f{index}").write_bytes(bytes([index + 1]) * (70_000 * index + 5))
        run("mkfs.ext4", "-q", "-F", "-b", "1024", "-d", tree, fs, str(size // 1024))
    else:
        run("mkfs.vfat", "-F", "32", fs)
        run("mcopy", "-i", fs, __file__, "::/t.py")
    tool = {"ext4": "partclone.ext4", "vfat": "partclone.fat32"}[kind]
    image = folder / f"{kind}.pc"
    run(tool, "-c", "-s", fs, "-O", image, "-L", "/dev/null", *options)
    return fs, image


def read_all(image: bytes) -> tuple[partclone.Header, list[tuple[int, int]], dict[int, bytes]]:
    stream = io.BytesIO(image)
    header, bitmap = partclone.read_header(stream)
    runs = partclone.used_runs(header, bitmap)
    blocks, checked = {}, 0
    for first, data, below in partclone.blocks(stream, header, runs):
        assert checked <= below <= first + len(data) // header.block_size or not data
        checked = below
        if data:
            blocks[first] = data
    assert checked == header.total_blocks
    return header, runs, blocks


@pytest.mark.parametrize(("kind", "size", "options"), [
    ("ext4", 24 << 20, ()),
    ("ext4", 24 << 20, ("-a0",)),
    ("ext4", 24 << 20, ("-k7", "-K")),
    ("vfat", 33 << 20, ("-k1",)),
    ("ext4", 24779 << 10, ()),  # a block count that is no multiple of 8
])
def test_every_saved_block_reads_as_the_file_system_holds_it(
        tmp_path: Path, kind: str, size: int, options: tuple[str, ...]) -> None:
    fs, image = make_image(tmp_path, kind, size, *options)
    header, runs, blocks = read_all(image.read_bytes())
    assert header.checksum_mode == (partclone.CHECKSUM_NONE if "-a0" in options
                                    else partclone.CHECKSUM_CRC32)
    assert sum(count for _, count in runs) == header.used_blocks > 0
    source = fs.read_bytes()
    got = 0
    for first, data in blocks.items():
        start = first * header.block_size
        assert data == source[start:start + len(data)]
        got += len(data) // header.block_size
    assert got == header.used_blocks
    if size % 8192:
        assert header.total_blocks % 8, "the case of a bitmap's partly used last byte"


@pytest.mark.parametrize(("where", "said"), [
    (lambda header, blocks: 40, "header fails its checksum"),
    (lambda header, blocks: partclone.HEADER_SIZE + 1, "bitmap fails its checksum"),
    (lambda header, blocks: blocks + 5000, "fail their checksum"),
    (lambda header, blocks: blocks + header.block_size * header.blocks_per_checksum + 1,
     "fail their checksum"),
])
def test_damage_is_found_wherever_it_lies(tmp_path: Path, where, said: str) -> None:
    _, image = make_image(tmp_path, "ext4", 24 << 20)
    data = bytearray(image.read_bytes())
    header, _ = partclone.read_header(io.BytesIO(bytes(data)))
    blocks = partclone.HEADER_SIZE + header.bitmap_size + 4
    data[where(header, blocks)] ^= 0x40
    with pytest.raises(partclone.ChecksumError, match=said):
        read_all(bytes(data))


def test_a_short_or_long_image_is_damaged(tmp_path: Path) -> None:
    _, image = make_image(tmp_path, "ext4", 24 << 20)
    data = image.read_bytes()
    with pytest.raises(partclone.ChecksumError, match="ends early"):
        read_all(data[:-100])
    with pytest.raises(partclone.ChecksumError, match="goes on past its last block"):
        read_all(data + b"\0")
