"""Extraction loses nothing silently. A FAT image, made by mkfs.vfat and mtools and then
damaged by byte edits, holds two entries of one name, long names TSK cuts to one name, names
cut at a NUL, names with '/' and control characters, a file whose cluster chain is shorter
than its size, one whose chain loops, and a volume label. An ext4 tree like /usr (absolute
and relative symlinks, device nodes, a FIFO, a socket) extracts whole, with exit 0."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from tests.fixtures.cli import rescue, run

pytestmark = pytest.mark.slow

CLUSTER = 512  # mkfs.vfat -s 1: a 5000-byte file spans 10 clusters
SIZE = 5000
KEPT_CLUSTERS = 3  # the chain of cut.bin ends after its third cluster
LONG = ("L" * 250 + "1.txt", "L" * 250 + "2.txt")  # 255 characters: the most FAT allows
LABEL = "RESCUELABEL"


def lfn_edit(data: bytearray, old: str, new: str) -> None:
    """Overwrite characters of a long name in place (UTF-16, inside one directory entry)."""
    before, after = old.encode("utf-16-le"), new.encode("utf-16-le")
    assert data.count(before) == 1, old
    at = data.index(before)
    data[at:at + len(before)] = after


def fat16_chain_edit(data: bytearray, short_name: bytes, *, loop: bool) -> None:
    """End the file's cluster chain after KEPT_CLUSTERS, or with `loop` lead it back to its
    first cluster there, in every copy of the FAT."""
    sector, _, reserved, fats, _, _, _, fat_sectors = struct.unpack_from("<HBHBHHBH", data, 11)
    assert data.count(short_name) == 1, short_name
    cluster = struct.unpack_from("<H", data, data.index(short_name) + 26)[0]
    chain = []
    while cluster < 0xFFF8:
        chain.append(cluster)
        cluster = struct.unpack_from("<H", data, reserved * sector + 2 * cluster)[0]
    for copy in range(fats):
        table = (reserved + copy * fat_sectors) * sector
        struct.pack_into("<H", data, table + 2 * chain[KEPT_CLUSTERS - 1],
                         chain[0] if loop else 0xFFFF)


@pytest.fixture(scope="module")
def damaged_fat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The FAT image, and the content given to each file (by its name before the edits)."""
    work = tmp_path_factory.mktemp("losses")
    image = work / "fat.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.vfat", "-F", "16", "-s", "1", "-n", LABEL, image)
    run("mmd", "-i", image, "::/same", "::/names", "::/cut")
    contents = {}
    for name in ("same/DUPA.TXT", "same/DUPB.TXT", *(f"same/{n}" for n in LONG),
                 "same/nQa.txt", "same/nQb.txt", "names/aQ1.txt", "names/cQ1.txt",
                 "cut/cut.bin", "cut/loop.bin", "cut/fine.bin"):
        contents[name] = os.urandom(SIZE)
        source = work / "content"
        source.write_bytes(contents[name])
        run("mcopy", "-i", image, source, f"::/{name}")
    data = bytearray(image.read_bytes())
    at = data.index(b"DUPB    TXT")  # a damaged directory: two entries named DUPA.TXT
    data[at:at + 11] = b"DUPA    TXT"
    lfn_edit(data, "nQa", "n\0a")  # TSK cuts both at the NUL, to "n"
    lfn_edit(data, "nQb", "n\0b")
    lfn_edit(data, "aQ1", "a/1")
    lfn_edit(data, "cQ1", "c\x1b1")
    fat16_chain_edit(data, b"CUT     BIN", loop=False)
    fat16_chain_edit(data, b"LOOP    BIN", loop=True)
    image.write_bytes(bytes(data))
    return image, contents


def test_entries_of_one_name_are_all_kept_and_reported(
        damaged_fat: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    image, contents = damaged_fat
    result = rescue("extract", image, "/same", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "same"
    # names that differ only past 195 characters stay apart, whole, extensions kept
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["DUPA.TXT", "DUPA~2.TXT", *LONG, "n", "n~2"])
    written = {
        "DUPA.TXT": "same/DUPA.TXT", "DUPA~2.TXT": "same/DUPB.TXT",
        LONG[0]: f"same/{LONG[0]}", LONG[1]: f"same/{LONG[1]}",
        "n": "same/nQa.txt", "n~2": "same/nQb.txt"}
    for name, original in written.items():
        assert (out / name).read_bytes() == contents[original], name
    for name in ("DUPA~2.TXT", "n~2"):
        assert f"-> {name} (an earlier entry of its folder has the same name)" in result.stdout
    assert "2 renamed" in result.stdout


def test_data_the_metadata_cannot_back_is_reported_damaged(
        damaged_fat: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    image, contents = damaged_fat
    listing = rescue("ls", image, "/cut")
    assert listing.returncode == 0, listing.stderr
    flags = {line.split()[-1]: line[0] for line in listing.stdout.splitlines()}
    assert flags == {"cut.bin": "!", "loop.bin": "!", "fine.bin": " "}

    report_path = tmp_path / "report.json"
    result = rescue("extract", image, "/cut", tmp_path / "out", "--report", report_path)
    assert result.returncode == 1, result.stdout + result.stderr
    kept = KEPT_CLUSTERS * CLUSTER
    damaged = {item["path"]: item["lost"] for item in json.loads(report_path.read_text())[
        "damaged"]}
    # a chain that loops back keeps the clusters it had before the loop, as one cut short
    assert damaged == {"/cut/cut.bin": [[kept, SIZE]], "/cut/loop.bin": [[kept, SIZE]]}
    assert (f"DAMAGED  /cut/cut.bin: {SIZE - kept} bytes lost (zero-filled) at bytes "
            f"{kept}-{SIZE}") in result.stdout
    out = tmp_path / "out" / "cut"
    assert (out / "cut.bin").read_bytes() == contents["cut/cut.bin"][:kept] + bytes(SIZE - kept)
    assert (out / "loop.bin").read_bytes() == contents["cut/loop.bin"][:kept] + bytes(SIZE - kept)
    assert (out / "fine.bin").read_bytes() == contents["cut/fine.bin"]


def test_the_volume_label_is_not_a_file(damaged_fat: tuple[Path, dict[str, bytes]],
                                        tmp_path: Path) -> None:
    image, _ = damaged_fat
    listing = rescue("ls", image, "/")
    assert listing.returncode == 0, listing.stderr
    assert LABEL not in listing.stdout and "Volume Label" not in listing.stdout
    result = rescue("extract", image, "/", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "names", "same"]
    assert "Volume Label" not in result.stdout


def test_ls_escapes_slash_and_control_characters_in_names(
        damaged_fat: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    image, contents = damaged_fat
    listing = rescue("ls", image, "/names")
    assert listing.returncode == 0, listing.stderr
    assert sorted(line.split()[-1] for line in listing.stdout.splitlines()) == [
        "a\\x2f1.txt", "c\\x1b1.txt"]
    recursive = rescue("ls", image, "/", "-R", "--json")
    paths = {json.loads(line)["path"] for line in recursive.stdout.splitlines()}
    assert {"/names/a\\x2f1.txt", "/names/c\\x1b1.txt", "/same/n"} <= paths
    assert "\x1b" not in listing.stdout + recursive.stdout
    result = rescue("extract", image, "/names", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "names" / "a%2F1.txt").read_bytes() == contents["names/aQ1.txt"]
    assert (tmp_path / "names" / "c%1B1.txt").read_bytes() == contents["names/cQ1.txt"]


# -- a tree like /usr --------------------------------------------------------------------------

SYSTEM_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")
SPECIALS = {"dev/null": "character device", "dev/loop0": "block device",
            "run/initctl": "FIFO", "run/socket": "socket"}


@pytest.fixture(scope="module")
def usr_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """This system's own symlinks in SYSTEM_DIRS (absolute, relative, climbing), a merged-/usr
    root, links too long to live in an inode, a few real programs, and SPECIALS; as a tree
    and as an ext4 image of it."""
    work = tmp_path_factory.mktemp("usr")
    tree = work / "tree"
    for directory in SYSTEM_DIRS:
        copy = tree / directory.lstrip("/")
        copy.mkdir(parents=True)
        for entry in os.scandir(directory):
            if entry.is_symlink():
                (copy / entry.name).symlink_to(os.readlink(entry.path))
    for program in ("/usr/bin/env", "/usr/bin/id"):
        (tree / program.lstrip("/")).write_bytes(Path(program).read_bytes())
    for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin"),
                         ("usr/lib/long", "../" * 30 + "x" * 100),  # ext keeps it in a block
                         ("usr/lib/long-absolute", "/" + "y" * 200)):
        (tree / name).symlink_to(target)
    (tree / "dev").mkdir()
    (tree / "run").mkdir()
    os.mknod(tree / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(tree / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(tree / "run/initctl")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tree / "run/socket"))
    image = work / "usr.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    return tree, image


@pytest.mark.root  # device nodes in the tree
def test_a_tree_like_usr_extracts_whole_with_exit_0(usr_like: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    tree, image = usr_like
    result = rescue("extract", image, "/", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    links = {str(p.relative_to(tree)): os.readlink(p) for p in tree.rglob("*") if p.is_symlink()}
    assert sum(target.startswith("/") for target in links.values()) > 0
    assert sum(target.startswith("../") for target in links.values()) > 0
    assert {name: os.readlink(tmp_path / name) for name in links} == links
    for program in ("usr/bin/env", "usr/bin/id"):
        assert (tmp_path / program).read_bytes() == (tree / program).read_bytes()
    for name, what in SPECIALS.items():
        assert not os.path.lexists(tmp_path / name)
        assert f"SKIPPED  /{name}: {what}: not created" in result.stdout
    assert (f"{len(links)} symlinks" in result.stdout
            and f"0 damaged, 0 not extracted, {len(SPECIALS)} skipped" in result.stdout)
