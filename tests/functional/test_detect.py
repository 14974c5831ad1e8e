"""Only images are images: every command that reads an image takes qcow2 and .img.zst by their
signatures, a raw image only by its name, a block device or --format raw, and refuses the rest
with one line that says what the file is and what to do.

The foreign files are written by the tools that own those formats (qemu-img, zstd, gzip, xz,
bzip2, lz4, partclone); only LUKS and EnCase headers are laid out here from their published
specifications, because no tool on this machine writes them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, b3sum, rescue
from tests.fixtures.loop import loop_device

MIB = 1 << 20


def tool(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stderr}"


def fat_image(path: Path) -> Path:
    """A real file system image (FAT, mkfs.vfat) holding one file, at `path`."""
    tool("mkfs.vfat", "-C", "-n", "DETECT", str(path), str(4 * 1024))
    (path.parent / "hello.txt").write_text("hello from a raw image\n")
    tool("mcopy", "-i", str(path), str(path.parent / "hello.txt"), "::hello.txt")
    return path


def qemu(fmt: str, *options: str) -> Callable[[Path, Path], None]:
    def make(raw: Path, out: Path) -> None:
        tool("qemu-img", "convert", "-O", fmt, *options, str(raw), str(out))
    return make


def packer(*command: str) -> Callable[[Path, Path], None]:
    def make(raw: Path, out: Path) -> None:
        with open(out, "wb") as f:
            done = subprocess.run([*command, str(raw)], stdout=f, timeout=120)
        assert done.returncode == 0
    return make


def partclone(raw: Path, out: Path) -> None:
    tool("mkfs.ext4", "-q", "-F", str(raw))
    tool("partclone.ext4", "-c", "-s", str(raw), "-o", str(out), "-L", f"{out}.log")


def header(magic: bytes, at: int = 0) -> Callable[[Path, Path], None]:
    def make(raw: Path, out: Path) -> None:
        out.write_bytes(bytes(at) + magic + bytes(64 * 1024))
    return make


# name, how to make it from a raw image, what the refusal names, the advice it gives; the
# disks QEMU reads are read through it instead, and info names QEMU's driver
FOREIGN = {
    "vmdk": (qemu("vmdk"), r"\(vmdk\)", r"qemu-storage-daemon"),
    "vmdk-stream": (qemu("vmdk", "-o", "subformat=streamOptimized"), r"\(vmdk\)",
                    r"qemu-storage-daemon"),
    "vhdx": (qemu("vhdx"), r"\(vhdx\)", r"qemu-storage-daemon"),
    "vdi": (qemu("vdi"), r"\(vdi\)", r"qemu-storage-daemon"),
    "vhd": (qemu("vpc"), r"\(vpc\)", r"qemu-storage-daemon"),
    "vhd-fixed": (qemu("vpc", "-o", "subformat=fixed"), r"\(vpc\)", r"qemu-storage-daemon"),
    "qed": (qemu("qed"), r"\(qed\)", r"qemu-storage-daemon"),
    "zst": (packer("zstd", "-q", "-c"), r"plain zstd stream", r"zstd -d"),
    "gz": (packer("gzip", "-c"), r"gzip", r"gunzip"),
    "xz": (packer("xz", "-0", "-c"), r"xz", r"unxz"),
    "bz2": (packer("bzip2", "-c"), r"bzip2", r"bunzip2"),
    "lz4": (packer("lz4", "-q", "-c"), r"lz4", r"lz4 -d"),
    "partclone": (partclone, r"partclone image", r"partclone\.restore"),
    "luks": (header(b"LUKS\xba\xbe\x00\x02"), r"LUKS encrypted", r"cryptsetup"),
    "e01": (header(b"EVF\x09\x0d\x0a\xff\x00\x01"), r"EnCase", r"ewfexport"),
}


@pytest.fixture(scope="module")
def raw_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fat_image(tmp_path_factory.mktemp("raw") / "disk.img")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each foreign file, named as its own tools name it."""
    folder = tmp_path_factory.mktemp("foreign")
    made = {}
    for name, (make, _, _) in FOREIGN.items():
        raw = folder / f"{name}-source.img"
        raw.write_bytes(os.urandom(MIB) + bytes(MIB))
        made[name] = folder / f"disk.{name}"
        make(raw, made[name])
    return made


@pytest.mark.parametrize("name", list(FOREIGN))
def test_foreign_containers_are_named_and_refused(foreign: dict[str, Path], name: str) -> None:
    """A foreign container is named, with what to do, even when renamed to a raw name; one
    QEMU reads is read through it, and verified as a disk without checksums."""
    _, what, advice = FOREIGN[name]
    renamed = foreign[name].with_name(f"{name}-renamed.img")
    shutil.copyfile(foreign[name], renamed)
    done = rescue("verify", str(renamed))
    if advice == "qemu-storage-daemon":
        shown = rescue("info", str(foreign[name]))
        assert shown.returncode == 0 and re.search(rf"{what}(.|\n)*{advice}", shown.stdout)
        assert done.returncode == 0 and "no checksums and no manifest" in done.stdout, done.stderr
        return
    assert_clean_failure(rescue("info", str(foreign[name])), ExitCode.USAGE,
                         rf"{what}.*{advice}")
    if name == "luks":  # a raw image of an encrypted partition begins with LUKS's signature
        assert done.returncode == 0 and "no checksums and no manifest" in done.stdout, done.stderr
    else:
        assert_clean_failure(done, ExitCode.USAGE, what)


# every command that reads an image, with the arguments it needs after the image
READERS = {
    "info": [], "verify": [], "ls": [], "extract": ["/", "{tmp}/out"], "mount": ["{tmp}/mnt"],
    "report": ["--map", "{tmp}/any.map"], "convert": ["{tmp}/out.qcow2"],
}
# What each command prints once it has read the raw FAT disk (mount: see test_mount).
READ_AS_RAW = {"info": "(raw)", "verify": "no checksums", "ls": "vfat", "extract": "1 files",
               "report": "no file is affected", "convert": "out.qcow2: qcow2"}


@pytest.mark.parametrize("command", list(READERS))
def test_every_command_reads_through_the_one_detector(
        tmp_path: Path, foreign: dict[str, Path], raw_disk: Path, command: str) -> None:
    """Each command refuses a gzip stream and a text file, and reads a raw image named as one,
    or named otherwise when --format raw says so (convert: --source-format raw)."""
    (tmp_path / "any.map").write_text("0x0 +\n0x0 0x400000 +\n")
    (tmp_path / "mnt").mkdir()
    extra = [arg.format(tmp=tmp_path) for arg in READERS[command]]
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 100)
    try:
        assert_clean_failure(rescue(command, str(foreign["gz"]), *extra), ExitCode.USAGE,
                             r"gzip.*gunzip")
        assert_clean_failure(rescue(command, str(notes), *extra), ExitCode.USAGE,
                             r"notes\.txt is not a disk image.*--format raw")
    finally:
        if command == "mount" and os.path.ismount(tmp_path / "mnt"):  # wrongly mounted
            rescue("umount", str(tmp_path / "mnt"))
    if command == "mount":
        return  # mounting needs FUSE and root: test_mount covers it; the refusals came first
    unnamed = tmp_path / "disk.data"
    shutil.copyfile(raw_disk, unnamed)
    option = "--source-format" if command == "convert" else "--format"
    done = rescue(command, str(unnamed), *extra, option, "raw")
    assert done.returncode == 0, done.stderr
    assert READ_AS_RAW[command] in done.stdout, done.stdout


@pytest.fixture(scope="module")
def good_images(raw_disk: Path) -> dict[str, Path]:
    """The raw disk as qcow2 and as .img.zst, made by rescue."""
    images = {}
    for suffix in (".qcow2", ".img.zst"):
        images[suffix] = raw_disk.with_name(f"good{suffix}")
        done = rescue("convert", str(raw_disk), str(images[suffix]))
        assert done.returncode == 0, done.stderr
    return images


@pytest.mark.parametrize("suffix", [".qcow2", ".img.zst", ".zst"])
@pytest.mark.parametrize("damage", ["garbage", "first sector zeroed", "empty", "one byte"])
def test_a_damaged_image_is_not_taken_for_raw(tmp_path: Path, good_images: dict[str, Path],
                                              suffix: str, damage: str) -> None:
    """A file named as one of our formats whose signature is gone is a damaged image."""
    image = tmp_path / f"disk{suffix}"
    data = bytearray(good_images[".qcow2" if suffix == ".qcow2" else ".img.zst"].read_bytes())
    if damage == "garbage":
        data[:] = hashlib.sha512(data).digest() * 64
    elif damage == "first sector zeroed":
        data[:512] = bytes(512)
    else:
        del data[0 if damage == "empty" else 1:]
    image.write_bytes(data)
    for command in ("info", "verify"):
        assert_clean_failure(rescue(command, str(image)), ExitCode.USAGE,
                             rf"damaged image: .*disk{suffix}")


@pytest.mark.parametrize("size", [0, 1, 511])
def test_empty_and_too_small_files_are_refused(tmp_path: Path, size: int) -> None:
    image = tmp_path / "tiny.img"
    image.write_bytes(b"\x01" * size)
    for args in (["info", str(image)], ["verify", str(image)],
                 ["ls", str(image), "--format", "raw"],
                 ["convert", str(image), str(tmp_path / "out.qcow2")]):
        assert_clean_failure(rescue(*args), ExitCode.USAGE, r"tiny\.img is .*too small")


def test_a_raw_image_is_taken_only_by_its_name(tmp_path: Path, raw_disk: Path) -> None:
    """The same raw bytes are a disk under a raw name, and refused under any other."""
    for name in ("disk.img", "disk.raw", "disk.dd", "disk.bin", "disk.iso", "DISK.IMG"):
        image = tmp_path / name
        shutil.copyfile(raw_disk, image)
        done = rescue("ls", str(image), "/")
        assert done.returncode == 0 and "hello.txt" in done.stdout, done.stderr
    for name in ("disk", "disk.txt", "disk.img.part"):
        image = tmp_path / name
        shutil.copyfile(raw_disk, image)
        assert_clean_failure(rescue("ls", str(image), "/"), ExitCode.USAGE,
                             rf"{name} is not a disk image rescue knows")


def test_an_output_format_that_contradicts_the_image_is_refused(tmp_path: Path,
                                                                raw_disk: Path) -> None:
    """--format raw onto an existing qcow2 (by name, or renamed) would write raw bytes into
    it: refused, and the qcow2 is left as it was."""
    qcow2 = tmp_path / "disk.qcow2"
    assert rescue("image", str(raw_disk), str(qcow2)).returncode == 0
    before = qcow2.read_bytes()
    assert_clean_failure(rescue("image", str(raw_disk), str(qcow2), "--format", "raw"),
                         ExitCode.USAGE, r"disk\.qcow2 is named as a qcow2 image but --format "
                                         r"raw was given")
    assert_clean_failure(rescue("convert", str(raw_disk), str(tmp_path / "new.qcow2"),
                                "--format", "raw"), ExitCode.USAGE, r"--format raw")
    renamed = tmp_path / "disk"
    shutil.copyfile(qcow2, renamed)
    shutil.copyfile(f"{qcow2}.map", f"{renamed}.map")
    assert_clean_failure(rescue("image", str(raw_disk), str(renamed)), ExitCode.USAGE,
                         r"disk already holds a qcow2 image")
    assert qcow2.read_bytes() == before and renamed.read_bytes() == before
    assert not Path(f"{qcow2}.manifest.json").exists()
    assert not Path(f"{renamed}.manifest.json").exists()


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("image", ["disk.gz", "notes.txt", "empty.img"])
def test_restore_refuses_a_non_image_and_writes_nothing(
        tmp_path: Path, foreign: dict[str, Path], image: str) -> None:
    """What restore once wrote over a disk (a gzip stream's bytes, a text file over sector
    0) or crashed on (an empty image) is refused before the target is touched."""
    source = {"disk.gz": foreign["gz"], "notes.txt": tmp_path / "notes.txt",
              "empty.img": tmp_path / "empty.img"}[image]
    (tmp_path / "notes.txt").write_text("shopping list\n" * 100)
    (tmp_path / "empty.img").write_bytes(b"")
    backing = tmp_path / "target.img"
    backing.write_bytes(b"\xa5" * (4 * MIB))
    with loop_device(str(backing)) as device:
        done = rescue("restore", str(source), device, "--yes")
    assert_clean_failure(done, ExitCode.USAGE, r"gzip|not a disk image|empty")
    assert backing.read_bytes() == b"\xa5" * (4 * MIB)


def test_a_raw_image_under_another_name_needs_format_raw_except_for_its_own_job(
        tmp_path: Path) -> None:
    """The job that writes a raw image knows its format: resuming it reads it back (for the
    BLAKE3) without asking; any later command is told to pass --format raw."""
    image = tmp_path / "out.data"
    command = ("image", "sim:size=2M,bad=1M+4k", str(image))
    for _ in range(2):  # the second run resumes and hashes the image by reading it
        done = rescue(*command)
        assert done.returncode == ExitCode.UNREADABLE, done.stderr
    assert_clean_failure(rescue("info", str(image)), ExitCode.USAGE, r"--format raw")
    done = rescue("info", str(image), "--format", "raw")
    assert done.returncode == 0, done.stderr
    assert f"blake3:      {b3sum(image.read_bytes())}" in done.stdout
