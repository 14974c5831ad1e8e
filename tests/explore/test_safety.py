"""Extraction of a hostile image stays inside DEST: the image is an ext4 file system whose
directory entries were edited into names that climb ('../../evil'), hold '/' or control
characters, collide with symlinks, and whose symlinks and device nodes point anywhere."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from rescue.explore.extract import extract, numbered, safe_name
from rescue.explore.filesystem import printable
from rescue.explore.session import ImageSession
from tests.fixtures.cli import rescue, run

# Names made with plain placeholders, then overwritten byte for byte in the directory blocks.
RENAMES = {
    b"PLACEHOLD1": b"../../evil",  # a file whose name climbs two levels
    b"PLACEDIR": b"../../yy",  # a folder whose name climbs, holding a file
    b"PLACEABS1": b"/etc/evil",  # an absolute name
    b"dupdir02": b"dupdir01",  # a folder named like the symlink before it (-> inside)
    b"dupfile2": b"dupfile1",  # a file named like the symlink before it (-> victim.txt)
}
DEBUGFS = """symlink /abs /etc/passwd
symlink /up ../../escape
symlink /inside/ok ../victim.txt
symlink /inside/bad ../../victim.txt
symlink /sneaky inside/../../x
symlink /dupdir01 inside
symlink /dupfile1 victim.txt
mknod /null c 1 3
mknod /loopdev b 7 0
mknod /fifo p
ln /victim.txt /esc\x1b[2Jname
ln /victim.txt /bell\x01\x7fx
write {payload} PLACEHOLD1
write {payload} PLACEABS1
mkdir PLACEDIR
write {payload} PLACEDIR/inner.txt
mkdir dupdir02
write {payload} dupdir02/payload.txt
write {payload} dupfile2
"""


def patch_names(image: Path, renames: dict[bytes, bytes]) -> None:
    data = bytearray(image.read_bytes())
    for old, new in renames.items():
        assert len(old) == len(new) and data.count(old) == 1, old
        at = data.index(old)
        data[at:at + len(old)] = new
    image.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hostile")
    tree = work / "tree"
    (tree / "inside").mkdir(parents=True)
    (tree / "victim.txt").write_bytes(b"victim\n")
    payload = work / "payload"
    payload.write_bytes(b"payload\n")
    image = work / "hostile.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.ext4", "-q", "-F", "-O", "^metadata_csum,^dir_index", "-d", tree, image)
    script = work / "debugfs.cmds"
    script.write_bytes(DEBUGFS.format(payload=payload).encode())
    run("debugfs", "-w", "-f", script, image)
    patch_names(image, RENAMES)
    return image


def inside(path: Path, root: Path) -> bool:
    return os.path.realpath(path) == str(root) or os.path.realpath(path).startswith(
        f"{root}{os.sep}")


@pytest.mark.slow
def test_hostile_image_extracts_everything_inside_dest_and_nothing_outside(
        hostile_image: Path, tmp_path: Path) -> None:
    box = tmp_path / "box"
    dest = box / "dest"
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_bytes(b"outside\n")
    dest.mkdir(parents=True)
    # links an earlier run or anyone else left in DEST, where the image has a folder or a file
    (dest / "inside").symlink_to(outside / "dir")
    (dest / "victim.txt").symlink_to(outside / "file")
    passwd = Path("/etc/passwd").stat()
    result = rescue("extract", hostile_image, "/", dest)
    assert result.returncode == 0, result.stdout + result.stderr  # nothing lost, all said
    assert os.listdir(box) == ["dest"]
    assert os.listdir(outside / "dir") == [] and (outside / "file").read_bytes() == b"outside\n"
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()
    assert Path("/etc/passwd").stat().st_mtime_ns == passwd.st_mtime_ns
    for path in dest.rglob("*"):
        assert inside(path.parent, dest.resolve()), path  # nothing written through a link
        assert path.is_symlink() or path.is_dir() or path.is_file(), path  # no device nodes
    # every entry with a hostile name is there, under an escaped name
    assert (dest / "..%2F..%2Fevil").read_bytes() == b"payload\n"
    assert (dest / "%2Fetc%2Fevil").read_bytes() == b"payload\n"
    assert (dest / "..%2F..%2Fyy" / "inner.txt").read_bytes() == b"payload\n"
    assert (dest / "esc%1B[2Jname").read_bytes() == b"victim\n"
    assert (dest / "bell%01%7Fx").read_bytes() == b"victim\n"
    # the planted links were replaced, never followed
    assert (dest / "inside").is_dir() and not (dest / "inside").is_symlink()
    assert (dest / "victim.txt").is_file() and not (dest / "victim.txt").is_symlink()
    assert (dest / "victim.txt").read_bytes() == b"victim\n"
    # a folder and a file named like a symlink before them are kept under a number
    assert os.readlink(dest / "dupdir01") == "inside"
    assert (dest / "dupdir01~2" / "payload.txt").read_bytes() == b"payload\n"
    assert not (dest / "inside" / "payload.txt").exists()
    assert os.readlink(dest / "dupfile1") == "victim.txt"
    assert (dest / "dupfile1~2").read_bytes() == b"payload\n"
    # links are recreated as they are, wherever they point
    links = {"abs": "/etc/passwd", "up": "../../escape", "sneaky": "inside/../../x",
             "inside/ok": "../victim.txt", "inside/bad": "../../victim.txt"}
    assert {name: os.readlink(dest / name) for name in links} == links
    for name in ("null", "loopdev", "fifo", "%2Fnull", "%2Floopdev", "%2Ffifo"):
        assert not os.path.lexists(dest / name)
    out = result.stdout
    for reported in ("SKIPPED  /\\x2fnull: character device: not created",
                     "SKIPPED  /\\x2floopdev: block device", "SKIPPED  /\\x2ffifo: FIFO",
                     "RENAMED  /dupdir01 -> dupdir01~2 (an earlier entry",
                     "RENAMED  /dupfile1 -> dupfile1~2", "RENAMED  /..\\x2f..\\x2fevil ->",
                     "0 damaged, 0 not extracted, 3 skipped"):
        assert reported in out, reported
    assert "\x1b" not in out and "\x01" not in out  # hostile names are printed escaped


@pytest.mark.slow
def test_ls_prints_hostile_names_escaped(hostile_image: Path) -> None:
    result = rescue("ls", hostile_image, "/")
    assert result.returncode == 0, result.stderr
    names = [line.split()[-1] for line in result.stdout.splitlines() if "->" not in line]
    for escaped in ("esc\\x1b[2Jname", "bell\\x01\\x7fx", "..\\x2f..\\x2fevil",
                    "\\x2fetc\\x2fevil", "\\x2fnull"):
        assert escaped in names, escaped
    assert "\x1b" not in result.stdout
    recursive = rescue("ls", hostile_image, "/", "-R")
    assert "/..\\x2f..\\x2fyy/inner.txt" in recursive.stdout.split()


@pytest.mark.parametrize(("raw", "written"), [
    (b"plain.txt", b"plain.txt"),
    (b"..", b"%2E%2E"),
    (b".", b"%2E"),
    (b"../../x", b"..%2F..%2Fx"),
    (b"a\nb", b"a%0Ab"),
    (b"\x1b[2J", b"%1B[2J"),
    (b"caf\xc3\xa9", b"caf\xc3\xa9"),
])
def test_safe_name(raw: bytes, written: bytes) -> None:
    assert safe_name(raw) == written


def test_safe_name_shortens_names_linux_cannot_hold_and_keeps_them_apart() -> None:
    first, second = safe_name(b"\xe6\x97\xa5" * 200), safe_name(b"\xe6\x97\xa5" * 201)
    assert len(first) <= 255 and len(second) <= 255 and first != second


@pytest.mark.parametrize(("name", "number", "numbered_name"), [
    (b"report.txt", 2, b"report~2.txt"),
    (b"archive.tar.gz", 3, b"archive.tar~3.gz"),
    (b".bashrc", 2, b".bashrc~2"),
    (b"README", 12, b"README~12"),
    (b"x." + b"y" * 40, 2, b"x." + b"y" * 40 + b"~2"),  # no real extension
])
def test_numbered(name: bytes, number: int, numbered_name: bytes) -> None:
    assert numbered(name, number) == numbered_name


def test_numbered_stays_within_name_max() -> None:
    name = b"n" * 251 + b".txt"
    assert numbered(name, 2) == b"n" * 249 + b"~2.txt"


@pytest.mark.parametrize(("raw", "shown"), [
    (b"a/b", "a\\x2fb"),
    (b"back\\slash", "back\\x5cslash"),
    (b"tab\there", "tab\\x09here"),
    (b"bad\xffutf8", "bad\\xffutf8"),
    (b"Gr\xc3\xbc\xc3\x9fe", "Grüße"),
])
def test_printable_name(raw: bytes, shown: str) -> None:
    assert printable(raw, name=True) == shown


def test_a_tree_deeper_than_the_descriptor_limit_extracts(tmp_path: Path) -> None:
    """One directory descriptor at a time: 300 levels under a 64-descriptor limit."""
    tree = tmp_path / "tree"
    deepest = tree.joinpath(*["d"] * 300)
    deepest.mkdir(parents=True)
    (deepest / "bottom.txt").write_bytes(b"bottom\n")
    image = tmp_path / "deep.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with ImageSession(str(image)) as session:
        fs = session.filesystem(None)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        try:
            report = extract(fs, fs.lookup("/d"), str(tmp_path / "out"))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.directories == 300 and report.complete
    assert (tmp_path / "out").joinpath(*["d"] * 300, "bottom.txt").read_bytes() == b"bottom\n"


@pytest.mark.parametrize("what", ["/", "/a"])
def test_extract_never_closes_a_descriptor_it_does_not_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """Another thread (an archive's unpacker) may open a file at any moment and take the
    number of a descriptor just closed: extraction must close each of its descriptors once,
    and never the destination's while it still walks the tree under it."""
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_bytes(b"deep\n")
    (tree / "a" / "g.txt").write_bytes(b"shallow\n")
    image = tmp_path / "small.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, image)
    real_open, real_close = os.open, os.close
    held: set[int] = set()
    squatters: list[int] = []

    def opening(*args: object, **kwargs: object) -> int:
        squatters.append(real_open("/dev/null", os.O_RDONLY))  # as if a thread took a number
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        held.add(fd)
        return fd

    def closing(fd: int) -> None:
        assert fd in held, f"descriptor {fd} closed but not open by the extraction"
        held.discard(fd)
        real_close(fd)

    with ImageSession(str(image)) as session:
        fs = session.filesystem(None)
        monkeypatch.setattr("rescue.explore.extract.os.open", opening)
        monkeypatch.setattr("rescue.explore.extract.os.close", closing)
        try:
            report = extract(fs, fs.lookup(what), str(tmp_path / "out"))
        finally:
            monkeypatch.undo()
            for fd in squatters:
                os.close(fd)
    assert report.complete and not held
    top = tmp_path / "out" / ("a" if what == "/a" else "") / ("" if what == "/a" else "a")
    assert (top / "b" / "f.txt").read_bytes() == b"deep\n"
    assert (top / "g.txt").read_bytes() == b"shallow\n"
