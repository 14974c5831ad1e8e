"""Looking chosen paths up in a file system: a sparse file's pieces land at their offsets in
the file, and the bytes a bad range takes are named by their place in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.errors import UsageError
from rescue.formats.raw import RawReader
from rescue.fs.chosen import FirstPath, file_state, resolve
from rescue.fs.domain import open_fs
from rescue.rangemap import BAD, FINISHED, NON_TRIED, RangeMap
from tests.fixtures.cli import run
from tests.fixtures.disks import disk_with
from tests.fixtures.filesystems import MIB, fuse_mounted

# (offset, bytes) written into a file that is otherwise holes
WRITES = ((0, 8192), (MIB, 12288), (3 * MIB, 5000))
SIZE = 3 * MIB + 5000


def sparse_content() -> bytes:
    content = bytearray(SIZE)
    for number, (offset, length) in enumerate(WRITES):
        content[offset:offset + length] = bytes([number + 1]) * 7 + b"\xaa" * (length - 7)
    return bytes(content)


def write_sparse(path: Path, content: bytes) -> None:
    with open(path, "wb") as f:
        for offset, length in WRITES:
            f.seek(offset)
            f.write(content[offset:offset + length])
        f.truncate(SIZE)


def build(kind: str, tmp_path: Path, content: bytes) -> Path:
    image = tmp_path / f"{kind}.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    if kind == "ext4":
        tree = tmp_path / "tree"
        (tree / "Docs").mkdir(parents=True)
        write_sparse(tree / "Docs" / "sparse.bin", content)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), str(image))
    else:
        run("mkntfs", "-q", "-F", "-f", str(image))
        with fuse_mounted("ntfs", image) as mnt:
            (mnt / "Docs").mkdir()
            write_sparse(mnt / "Docs" / "sparse.bin", content)
    return image


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("kind", ["ext4", "ntfs"])
def test_a_sparse_file_has_each_piece_at_its_offset(kind: str, tmp_path: Path) -> None:
    content = sparse_content()
    image = build(kind, tmp_path, content)
    reader = RawReader(str(image))
    try:
        rmap = RangeMap(reader.size)
        rmap.set(0, reader.size, FINISHED)
        files = resolve(reader, rmap, [FirstPath.parse("/docs" if kind == "ntfs" else "/Docs")]
                        ).files
        assert [(f.name, f.size) for f in files] == [("/Docs/sparse.bin", SIZE)]
        pieces = files[0].pieces
        assert len(pieces) >= 3 and pieces[1][0] >= MIB  # the holes took no piece
        for start, where, length in pieces:
            assert reader.read(where, length) == content[start:start + length]
        covered = {(start, length) for start, _, length in pieces}
        assert sum(length for _, length in covered) <= sum(n for _, n in WRITES) + 8192
        # a bad range on the disk inside the third write is named by its place in the file
        start, where, length = next(p for p in pieces if p[0] <= 3 * MIB < p[0] + p[2])
        inside = where + (3 * MIB - start) + 1024
        rmap.set(inside, 512, BAD)
        rmap.set(inside + 2048, 512, NON_TRIED)
        state = file_state(files[0], rmap)
    finally:
        reader.close()
    assert state.bad == ((3 * MIB + 1024, 512), (3 * MIB + 3072, 512)) and state.unread
    assert not state.complete
    assert state.summary() == f"1024 bytes unread at {3 * MIB + 1024}+512, {3 * MIB + 3072}+512"


@pytest.mark.parametrize(("text", "parsed"), [
    ("/home/ann", FirstPath(None, "/home/ann")),
    ("2:/Users//ann/", FirstPath(2, "/Users/ann")),
    ("/", FirstPath(None, "/")),
    ("/odd:name", FirstPath(None, "/odd:name")),
    ("12:/", FirstPath(12, "/")),
])
def test_first_paths_parse(text: str, parsed: FirstPath) -> None:
    assert FirstPath.parse(text) == parsed


@pytest.mark.parametrize("text", ["home", "2:home", "", "/a/../b", "x:/a"])
def test_first_paths_refused(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--first "):
        FirstPath.parse(text)


def test_a_missing_path_is_missing_beside_swap_unless_a_signature_is_unreadable(
        tmp_path: Path) -> None:
    """Swap cannot hide a path; a partition whose start was not rescued might."""
    ext, swap = tmp_path / "ext.img", tmp_path / "swap.img"
    for part in (ext, swap):
        with open(part, "wb") as f:
            f.truncate(8 * MIB)
    run("mkfs.ext4", "-q", "-F", str(ext))
    run("mkswap", str(swap))
    disk = disk_with(tmp_path / "disk.img", 18 * MIB,
                     "label: gpt\nstart=2048, size=16384\nstart=18432, size=16384\n",
                     [(MIB, ext), (9 * MIB, swap)])
    reader = RawReader(str(disk))
    try:
        rmap = RangeMap(reader.size)
        rmap.set(0, reader.size, FINISHED)
        wanted = [FirstPath.parse("/nope")]
        clean = resolve(reader, rmap, wanted)
        rmap.set(9 * MIB, 4096, BAD)
        damaged = resolve(reader, rmap, wanted)
    finally:
        reader.close()
    assert (clean.missing, clean.notes) == (tuple(wanted), ())
    with pytest.raises(UsageError, match=r"^--first: no file or folder /nope in any file "):
        clean.require_found()
    assert damaged.missing == ()
    assert damaged.notes == ("/nope not found; partition 2: its file system's signature is "
                             "unreadable, so it may lie there",)


@pytest.mark.slow
@pytest.mark.root
def test_an_unreadable_ntfs_folder_may_hide_a_path(tmp_path: Path) -> None:
    """NTFS names a file from its own record and its folders' records: with a folder's
    record unreadable, its files lose their names, and a path into it cannot be ruled out."""
    content = sparse_content()
    image = build("ntfs", tmp_path, content)
    reader = RawReader(str(image))
    try:
        rmap = RangeMap(reader.size)
        rmap.set(0, reader.size, FINISHED)
        folder = next(r for r in open_fs(reader).files() if r.path == "/Docs")
        assert folder.is_dir
        offset, length = folder.metadata[0]
        rmap.set(offset, length, BAD)
        found = resolve(reader, rmap, [FirstPath.parse("/Docs/sparse.bin")])
    finally:
        reader.close()
    assert found.files == () and found.missing == ()
    assert found.notes == ("/Docs/sparse.bin not found; some of its folders are unreadable, "
                           "so it may lie there",)
