"""What the file-system readers give beyond names and bytes, on file systems made by their own
tools: damage inside data kept in metadata (resident NTFS files, ext4 inline data), NTFS
alternate data streams through `extract` and the FUSE view, owners restored by root."""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from rescue.explore.session import ImageSession
from tests.fixtures.cli import rescue, run
from tests.fixtures.disks import formatted
from tests.fixtures.explore import rescue_mounted
from tests.fixtures.filesystems import fuse_mounted
from tests.fixtures.mapfiles import write_map

pytestmark = pytest.mark.slow

SECTOR = 512
SMALL = f"small-{secrets.token_hex(12)}".encode()  # unique bytes, found in the image
BIG_STREAM = os.urandom(200_000)  # larger than one extended attribute can hold


def make_ntfs(image: Path) -> None:
    """NTFS by mkntfs, filled through ntfs-3g: a small (resident) file with two streams, one
    of them large, and a larger file."""
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    with formatted(image, ("mkntfs", "-q", "-F", "-f"),
                   ("ntfs-3g", "-o", "streams_interface=windows")) as mnt:
        (mnt / "small.txt").write_bytes(SMALL)
        (mnt / "small.txt:note").write_bytes(b"a small stream\n")
        (mnt / "small.txt:big").write_bytes(BIG_STREAM)
        (mnt / "other.bin").write_bytes(os.urandom(100_000))


def make_inline_ext4(image: Path, tree: Path) -> None:
    tree.mkdir()
    (tree / "small.txt").write_bytes(SMALL)
    (tree / "other.bin").write_bytes(os.urandom(100_000))
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    run("mkfs.ext4", "-q", "-F", "-O", "inline_data", "-d", tree, image)


def mark_bad(image: Path, start: int, length: int) -> None:
    """What a rescue that could not read [start, start+length) leaves: zeros there in the
    image, and the area bad in IMAGE.map."""
    with open(image, "r+b") as f:
        f.seek(start)
        f.write(bytes(length))
    size = image.stat().st_size
    write_map(Path(f"{image}.map"), [(0, start, "+"), (start, length, "-"),
                                    (start + length, size - start - length, "+")])


@pytest.mark.parametrize("kind", ["ntfs", "ext4-inline"])
def test_a_file_whose_metadata_the_image_lacks_is_damaged_not_empty(kind: str,
                                                                    tmp_path: Path) -> None:
    """A small file lives inside its MFT record or inode: a bad sector there loses what the
    file is, its size and its content at once. It is listed (its folder still names it),
    flagged, and reported not extracted, never written as an empty file."""
    image = tmp_path / "fs.img"
    if kind == "ntfs":
        make_ntfs(image)
    else:
        make_inline_ext4(image, tmp_path / "tree")
    data = image.read_bytes()
    assert data.count(SMALL) == 1  # inside its MFT record or its inode, nowhere else
    mark_bad(image, data.index(SMALL) // SECTOR * SECTOR, SECTOR)

    listing = rescue("ls", "--json", image, "/")
    assert listing.returncode == 0, listing.stderr
    records = {json.loads(line)["path"]: json.loads(line) for line in listing.stdout.splitlines()}
    assert records["/small.txt"]["metadata_lost"] is True
    assert records["/other.bin"]["metadata_lost"] is False
    assert records["/other.bin"]["lost"] == []
    text = rescue("ls", image, "/")
    flags = {line.split()[-1]: line[0] for line in text.stdout.splitlines()}
    assert flags["small.txt"] == "!" and flags["other.bin"] == " "

    report = tmp_path / "report.json"
    result = rescue("extract", image, "/", tmp_path / "out", "--report", report)
    assert result.returncode == 1, result.stdout + result.stderr
    missing = {item["path"]: item["reason"] for item in json.loads(report.read_text())["missing"]}
    assert "its metadata (inode, MFT record or directory entry) lies in a bad" in \
        missing["/small.txt"]
    assert not (tmp_path / "out" / "small.txt").exists()
    assert (tmp_path / "out" / "other.bin").stat().st_size == 100_000


def make_xfs(image: Path, folder: Path) -> None:
    """XFS filled by mkfs.xfs from a prototype: a small file, a larger one and a folder."""
    (folder / "small").write_bytes(SMALL)
    (folder / "other").write_bytes(os.urandom(100_000))
    (folder / "proto").write_text("\n".join([
        "/dev/null", "0 0", "d--755 0 0", f"small.txt ---644 0 0 {folder / 'small'}",
        f"other.bin ---644 0 0 {folder / 'other'}", "sub d--755 0 0",
        f"inner.txt ---644 0 0 {folder / 'small'}", "$", "$"]) + "\n")
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    run("mkfs.xfs", "-q", "-f", "-p", folder / "proto", image)


def xfs_inode_sector(image: Path, path: str) -> int:
    """Where xfs_db puts the inode of `path` (a 512-byte inode fills its sector)."""
    folder, name = path.rsplit("/", 1)
    number = next(line.split()[1] for line in run("xfs_db", "-r", "-c", f"ls {folder or '/'}",
                                                  image).splitlines()
                  if line.split()[-2:-1] == [name])
    converted = run("xfs_db", "-r", "-c", f"convert inode {number} daddr", image)
    return int(converted.split("(")[1].rstrip(")\n"))


@pytest.mark.parametrize("mapped", [True, False], ids=["bad-sector", "corrupt"])
def test_an_xfs_file_whose_inode_is_lost_is_listed_lost_not_left_out(mapped: bool,
                                                                    tmp_path: Path) -> None:
    """libfsxfs leaves a name whose inode it cannot read out of its folder's listing: the
    name is read from the folder itself, so the file shows as lost, whether a map says its
    sector is bad or the inode is just unreadable."""
    image = tmp_path / "xfs.img"
    make_xfs(image, tmp_path)
    sectors = sorted(xfs_inode_sector(image, path) for path in ("/small.txt", "/sub"))
    with open(image, "r+b") as f:
        for sector in sectors:
            f.seek(sector * SECTOR)
            f.write(bytes(SECTOR) if mapped else os.urandom(SECTOR))
    if mapped:  # each inode's sector is bad: the image holds zeros there
        size, areas, position = image.stat().st_size, [], 0
        for sector in sectors:
            areas += [(position, sector * SECTOR - position, "+"), (sector * SECTOR, SECTOR, "-")]
            position = (sector + 1) * SECTOR
        write_map(Path(f"{image}.map"), [*areas, (position, size - position, "+")])

    listing = rescue("ls", "--json", image, "/")
    assert listing.returncode == 0, listing.stderr
    records = {json.loads(line)["path"]: json.loads(line) for line in listing.stdout.splitlines()}
    assert set(records) == {"/small.txt", "/other.bin", "/sub"}
    assert records["/small.txt"]["metadata_lost"] is True
    assert records["/sub"]["metadata_lost"] is True and records["/sub"]["kind"] == "dir"
    assert records["/other.bin"]["metadata_lost"] is False
    walked = rescue("ls", "-R", image, "/")  # the walk goes past the folder it cannot enter
    assert walked.returncode == 0, walked.stderr
    assert sorted(line.split()[-1] for line in walked.stdout.splitlines()) == \
        ["/other.bin", "/small.txt", "/sub"]
    assert "warning: folder /sub is not listed: cannot read the inode of /sub" in walked.stderr

    report = tmp_path / "report.json"
    result = rescue("extract", image, "/", tmp_path / "out", "--report", report)
    assert result.returncode == 1, result.stdout + result.stderr
    missing = {item["path"] for item in json.loads(report.read_text())["missing"]}
    assert "/small.txt" in missing and "/sub" in missing
    assert not (tmp_path / "out" / "small.txt").exists()
    assert (tmp_path / "out" / "other.bin").stat().st_size == 100_000


def test_a_recursive_listing_goes_past_a_folder_it_cannot_enter(tmp_path: Path) -> None:
    """/a/sub's inode is lost: `ls -R` lists it, warns that it is not listed, and goes on to
    /b and what it holds."""
    (tmp_path / "small").write_bytes(SMALL)
    (tmp_path / "proto").write_text("\n".join([
        "/dev/null", "0 0", "d--755 0 0", "a d--755 0 0", "sub d--755 0 0",
        f"inner.txt ---644 0 0 {tmp_path / 'small'}", "$", "$", "b d--755 0 0",
        f"z.txt ---644 0 0 {tmp_path / 'small'}", "$", "$"]) + "\n")
    image = tmp_path / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    run("mkfs.xfs", "-q", "-f", "-p", tmp_path / "proto", image)
    mark_bad(image, xfs_inode_sector(image, "/a/sub") * SECTOR, SECTOR)

    walked = rescue("ls", "-R", image, "/")
    assert walked.returncode == 0, walked.stderr
    assert [line.split()[-1] for line in walked.stdout.splitlines()] == \
        ["/a", "/a/sub", "/b", "/b/z.txt"]
    assert "warning: folder /a/sub is not listed: cannot read the inode of /a/sub" in \
        walked.stderr


INNER = "inner-file-of-sub.txt"


def make_with_folder(kind: str, image: Path, tree: Path) -> bytes:
    """An ext4 or FAT file system holding /sub/INNER and /top.txt; the bytes that name INNER
    in its folder's own block (ext: the name; FAT: the 8.3 alias mtools gives it)."""
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / INNER).write_text("inside\n")
    (tree / "top.txt").write_text("top\n")
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    if kind == "ext4":
        run("mkfs.ext4", "-q", "-F", "-d", tree, image)
        return INNER.encode()
    run("mkfs.vfat", "-F", "16", image)
    run("mcopy", "-s", "-i", image, tree / "sub", tree / "top.txt", "::/")
    return b"INNER-~1TXT"


@pytest.mark.parametrize("kind", ["ext4", "vfat"])
def test_a_folder_whose_listing_is_lost_is_said_so(kind: str, tmp_path: Path) -> None:
    """A bad sector in a folder's own block loses the names kept there: `ls` of its parent
    flags it, `ls` of the folder says its entries are not listed, `extract` reports it."""
    image = tmp_path / "fs.img"
    marker = make_with_folder(kind, image, tmp_path / "tree")
    data = image.read_bytes()
    assert data.count(marker) == 1
    mark_bad(image, data.index(marker) // SECTOR * SECTOR, SECTOR)

    parent = rescue("ls", image, "/")
    assert parent.returncode == 0, parent.stderr
    flags = {line.split()[-1]: line[0] for line in parent.stdout.splitlines()}
    assert flags["sub"] == "!" and flags["top.txt"] == " "
    listing = rescue("ls", image, "/sub")
    assert listing.returncode == 0 and INNER not in listing.stdout
    assert "warning: part of folder /sub lies in bad or never-read parts of the image: the " \
        "entries kept there are not listed" in listing.stderr
    report = tmp_path / "report.json"
    result = rescue("extract", image, "/", tmp_path / "out", "--report", report)
    assert result.returncode == 1, result.stdout + result.stderr
    missing = {item["path"]: item["reason"] for item in json.loads(report.read_text())["missing"]}
    assert "part of this folder lies in a bad or never-read part" in missing["/sub"]
    assert (tmp_path / "out" / "top.txt").read_text() == "top\n"


@pytest.mark.root
@pytest.mark.parametrize("folder", ["big", ""], ids=["subfolder", "root"])
def test_a_damaged_ntfs_index_loses_no_file_whose_record_is_whole(folder: str,
                                                                  tmp_path: Path) -> None:
    """One bad block in a large folder's index ($INDEX_ALLOCATION): libfsntfs then cannot open
    the folder at all, and its parent would list nothing in its place. The names come back
    from the MFT's records instead, so every file is listed and extracted as ntfs-3g wrote it."""
    image = tmp_path / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    contents = {f"file-number-{k:03}.txt": f"{k}\n".encode() * k for k in range(300)}
    with formatted(image, ("mkntfs", "-q", "-F", "-f"), ("ntfs-3g",)) as mnt:
        (mnt / folder).mkdir(exist_ok=True)
        for name, content in contents.items():
            (mnt / folder / name).write_bytes(content)
    data = image.read_bytes()
    needle = "file-number-150.txt".encode("utf-16-le")
    block = next(at // 4096 * 4096 for at in range(len(data)) if data.startswith(needle, at)
                 and data[at // 4096 * 4096:at // 4096 * 4096 + 4] == b"INDX")
    mark_bad(image, block, 4096)

    where = f"/{folder}"
    listing = rescue("ls", image, where)
    assert listing.returncode == 0, listing.stderr
    assert sorted(line.split()[-1] for line in listing.stdout.splitlines()) == sorted(contents)
    if folder:
        assert [line.split()[-1] for line in rescue("ls", image, "/").stdout.splitlines()] \
            == [folder]
    result = rescue("extract", image, where, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out" / folder
    assert {path.name: path.read_bytes() for path in out.iterdir()} == contents


@pytest.fixture(scope="module")
def ntfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("streams") / "ntfs.img"
    make_ntfs(image)
    return image


def test_streams_are_listed_and_extracted_beside_their_file(ntfs_image: Path,
                                                            tmp_path: Path) -> None:
    listing = rescue("ls", ntfs_image, "/")
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[-1] for line in listing.stdout.splitlines()]
    assert names == ["other.bin", "small.txt", "small.txt:big", "small.txt:note"]

    result = rescue("extract", ntfs_image, "/", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 streams" in result.stdout
    out = tmp_path / "out"
    assert (out / "small.txt").read_bytes() == SMALL
    assert (out / "small.txt:note").read_bytes() == b"a small stream\n"
    assert (out / "small.txt:big").read_bytes() == BIG_STREAM

    one = rescue("extract", ntfs_image, "/small.txt:big", tmp_path / "one")
    assert one.returncode == 0, one.stdout + one.stderr
    assert (tmp_path / "one" / "small.txt:big").read_bytes() == BIG_STREAM


def test_streams_in_the_mount_are_what_ntfs_3g_shows(ntfs_image: Path, tmp_path: Path) -> None:
    """ntfs-3g's two ways: `user.STREAM` extended attributes, and NAME:STREAM opened by name
    though no listing shows it. ntfs-3g itself is the judge of what they hold."""
    with rescue_mounted(ntfs_image, tmp_path / "mnt") as directory:
        served = directory / "fs"
        assert sorted(os.listdir(served)) == ["other.bin", "small.txt"]
        assert sorted(os.listxattr(served / "small.txt")) == ["user.big", "user.note"]
        assert os.getxattr(served / "small.txt", "user.note") == b"a small stream\n"
        with pytest.raises(OSError) as too_big:
            os.getxattr(served / "small.txt", "user.big")
        assert too_big.value.errno == errno.E2BIG
        assert (served / "small.txt:big").read_bytes() == BIG_STREAM
        assert (served / "small.txt:note").stat().st_size == len(b"a small stream\n")
        with pytest.raises(FileNotFoundError):
            (served / "small.txt:none").stat()

        judge = tmp_path / "judge"
        judge.mkdir()
        run("ntfs-3g", "-o", "ro,streams_interface=xattr", ntfs_image, judge)
        try:
            assert os.getxattr(judge / "small.txt", "user.note") == \
                os.getxattr(served / "small.txt", "user.note")
        finally:
            subprocess.run(["umount", judge], check=True)


@pytest.mark.root
def test_root_gives_extracted_entries_their_owners_and_others_get_them_as_their_own(
        shared_dir: Path, user_python: list[str], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "folder").mkdir(parents=True)
    (tree / "folder" / "file").write_bytes(b"owned\n")
    (tree / "folder" / "link").symlink_to("file")
    owners = {"": (1234, 5678), "file": (4321, 99), "link": (77, 88)}
    for name, owner in owners.items():
        os.lchown(tree / "folder" / name, *owner)
    image = shared_dir / "owners.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    image.chmod(0o644)

    result = rescue("extract", image, "/folder", tmp_path / "root-out")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, owner in owners.items():
        info = (tmp_path / "root-out" / "folder" / name).lstat()
        assert (info.st_uid, info.st_gid) == owner, name

    user_out = shared_dir / "user-out"
    user_out.mkdir()
    os.chown(user_out, 65534, 65534)
    ran = subprocess.run([*user_python, "-m", "rescue", "extract", str(image), "/folder",
                          str(user_out)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for name in owners:
        assert (user_out / "folder" / name).lstat().st_uid == 65534, name


def reparse_data(tag: int, body: bytes) -> bytes:
    return struct.pack("<IHH", tag, len(body), 0) + body


def windows_symlink(target: str) -> bytes:
    """A symlink as Windows makes it (IO_REPARSE_TAG_SYMLINK, relative)."""
    name = target.encode("utf-16-le")
    return reparse_data(0xA000000C, struct.pack("<HHHHI", 0, len(name), len(name), len(name), 1)
                        + name + name)


def linux_symlink(target: str) -> bytes:
    """A symlink as Linux makes it under Windows (IO_REPARSE_TAG_LX_SYMLINK)."""
    return reparse_data(0xA000001D, struct.pack("<I", 2) + target.encode())


def test_every_kind_of_ntfs_link_and_node_is_what_ntfs_3g_shows(tmp_path: Path) -> None:
    """Interix symlinks, FIFOs, sockets and device nodes (what ntfs-3g makes), and symlinks
    Windows and WSL make as reparse points: ntfs-3g is the judge of kind and target."""
    image = tmp_path / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    with formatted(image, ("mkntfs", "-q", "-F", "-f"), ("ntfs-3g",)) as mnt:
        (mnt / "target.txt").write_bytes(b"pointed at\n")
        (mnt / "interix").symlink_to("target.txt")
        (mnt / "far").symlink_to("/etc/" + "x" * 300)
        (mnt / "sub").mkdir()
        (mnt / "sub" / "inner.txt").write_bytes(b"inside\n")
        for name, data in (("windows", windows_symlink("sub\\inner.txt")),
                           ("wsl", linux_symlink("../up/target.txt"))):
            (mnt / name).touch()
            os.setxattr(mnt / name, "system.ntfs_reparse_data", data)
        os.mkfifo(mnt / "fifo")
        os.mknod(mnt / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(mnt / "loop", 0o666 | stat.S_IFBLK, os.makedev(7, 0))
        with socket.socket(socket.AF_UNIX) as unix:
            unix.bind(str(mnt / "socket"))
    judge = tmp_path / "judge"
    judge.mkdir()
    run("ntfs-3g", "-o", "ro", image, judge)
    try:
        truth = {}
        for path in judge.iterdir():
            mode = path.lstat().st_mode
            truth[path.name] = (stat.S_IFMT(mode), os.readlink(path)
                                if stat.S_ISLNK(mode) else None)
    finally:
        subprocess.run(["umount", judge], check=True)
    assert truth["wsl"] == (stat.S_IFLNK, "../up/target.txt")  # the judge knows them all
    assert truth["windows"] == (stat.S_IFLNK, "sub/inner.txt")

    listing = rescue("ls", "--json", image, "/")
    assert listing.returncode == 0, listing.stderr
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
             "fifo": stat.S_IFIFO,
             "char": stat.S_IFCHR, "block": stat.S_IFBLK, "socket": stat.S_IFSOCK}
    seen = {}
    for line in listing.stdout.splitlines():
        record = json.loads(line)
        seen[record["path"].lstrip("/")] = (kinds[record["kind"]], record["target"])
    assert seen == truth

    result = rescue("extract", image, "/", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    for name, (kind, target) in truth.items():
        if kind == stat.S_IFLNK:
            assert os.readlink(out / name) == target, name
        elif kind not in (stat.S_IFREG, stat.S_IFDIR):
            assert not os.path.lexists(out / name), name
            assert f"SKIPPED  /{name}:" in result.stdout


@pytest.mark.parametrize("kind", ["ext4", "ntfs"])
def test_a_sparse_file_costs_what_its_data_does(kind: str, tmp_path: Path) -> None:
    """256 GiB of holes before a few bytes of data: extracted as holes, with the data where
    it was, reading only the piece that holds it (read whole, that is 256 Ki pieces)."""
    size, tail = 256 << 30, b"the end\n"
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    if kind == "ext4":
        tree = tmp_path / "tree"
        tree.mkdir()
        with open(tree / "sparse.bin", "wb") as f:
            f.seek(size - len(tail))
            f.write(tail)
        run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    else:
        with formatted(image, ("mkntfs", "-q", "-F", "-f"), ("ntfs-3g",)) as mnt, \
                open(mnt / "sparse.bin", "wb") as f:
            f.seek(size - len(tail))
            f.write(tail)
    with ImageSession(str(image)) as session:
        fs = session.filesystem(None)
        pieces = [(offset, len(data)) for offset, data, _ in
                  fs.read_chunks(fs.lookup("/sparse.bin"))]
    assert len(pieces) == 1 and pieces[0][0] <= size - len(tail) < sum(pieces[0])

    result = rescue("extract", image, "/sparse.bin", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out" / "sparse.bin"
    assert out.stat().st_size == size
    assert out.stat().st_blocks * 512 < 1 << 20
    with open(out, "rb") as f:
        f.seek(size - len(tail) - 4096)
        assert f.read() == bytes(4096) + tail


@pytest.mark.parametrize("kind", ["ext4", "ntfs"])
def test_names_of_one_file_stay_one_file(kind: str, tmp_path: Path) -> None:
    """A file with three names (hard links) is extracted once and linked twice, as the image
    holds it; onto a destination that cannot link (exFAT) each name gets a copy."""
    image = tmp_path / "fs.img"
    content = os.urandom(300_000)
    with open(image, "wb") as f:
        f.truncate(32 << 20)

    def fill(root: Path) -> None:
        (root / "a").mkdir()
        (root / "b").mkdir()
        (root / "a" / "one").write_bytes(content)
        os.link(root / "a" / "one", root / "b" / "two")
        os.link(root / "a" / "one", root / "three")
        (root / "single").write_bytes(b"alone\n")

    if kind == "ext4":
        tree = tmp_path / "tree"
        tree.mkdir()
        fill(tree)
        run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    else:
        with formatted(image, ("mkntfs", "-q", "-F", "-f"), ("ntfs-3g",)) as mnt:
            fill(mnt)
    names = ("a/one", "b/two", "three")

    result = rescue("extract", image, "/", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 hard links" in result.stdout
    out = tmp_path / "out"
    assert {(out / name).stat().st_ino for name in names} == {(out / "a" / "one").stat().st_ino}
    assert (out / "three").stat().st_nlink == 3
    assert all((out / name).read_bytes() == content for name in names)

    exfat = tmp_path / "exfat.img"
    with open(exfat, "wb") as f:
        f.truncate(16 << 20)
    run("mkfs.exfat", exfat)
    with fuse_mounted("exfat", exfat) as mountpoint:
        copied = rescue("extract", image, "/", mountpoint / "out")
        assert copied.returncode == 0, copied.stdout + copied.stderr
        assert "hard links" not in copied.stdout
        assert all((mountpoint / "out" / name).read_bytes() == content for name in names)
