"""Real file systems for tests: built with each system's own tools, filled, with files deleted
(so unused blocks hold stale data), and read back by those tools to judge our images."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rescue.formats import mapfile
from rescue.rangemap import FINISHED
from tests.fixtures.loop import loop_device

MIB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("ext4", "vfat", "exfat", "ntfs")
FSCK = {
    "ext4": ["e2fsck", "-fn"],
    "vfat": ["fsck.vfat", "-n"],
    "exfat": ["fsck.exfat", "-n"],
    "ntfs": ["ntfsfix", "-n"],
}
PARTCLONE = {"ext4": "partclone.ext4", "vfat": "partclone.fat", "exfat": "partclone.exfat",
             "ntfs": "partclone.ntfs"}


def run(*args: str, **kwargs: object) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          **kwargs).stdout  # type: ignore[call-overload]


def rescue_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with `report` registered."""
    code = ("import sys, rescue.cli as c; c.COMMANDS = tuple(dict.fromkeys(c.COMMANDS + "
            "('report',))); sys.exit(c.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under `root`, by path relative to it."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def make_tree(root: Path, seed: int, files: int = 12, prefix: str = "dir") -> None:
    """Nested folders with files from a few bytes to a few hundred KiB, names with spaces and
    non-ASCII letters, some fragmented across directories."""
    rng = random.Random(seed)
    for i in range(files):
        folder = root / f"{prefix} {i % 3}" / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.choice((7, 4096, 70_000, 300_000, 900_000))
        (folder / f"file-{i}-é.bin").write_bytes(rng.randbytes(size))


@contextlib.contextmanager
def fuse_mounted(kind: str, image: Path, read_only: bool = False) -> Iterator[Path]:
    """exFAT or NTFS mounted through FUSE (the kernel mounts neither here); always unmounted."""
    with contextlib.ExitStack() as stack:
        mnt = Path(tempfile.mkdtemp(prefix=f"fs-{kind}-"))
        stack.callback(os.rmdir, mnt)
        options = ["-o", "ro"] if read_only else []
        if kind == "exfat":  # exfat-fuse wants a block device
            device = stack.enter_context(loop_device(str(image), read_only=read_only))
            run("mount.exfat-fuse", *options, device, str(mnt))
        else:
            run("ntfs-3g", *options, str(image), str(mnt))
        stack.callback(subprocess.run, ["umount", str(mnt)], capture_output=True)
        yield mnt


def _fill(kind: str, image: Path, source: Path, doomed: Path) -> None:
    """Copy `source` in, copy `doomed` in and delete it, with the file system's own tools."""
    if kind == "vfat":
        for tree in (source, doomed):
            items = [str(p) for p in tree.iterdir()]
            run("mcopy", "-s", "-i", str(image), *items, "::/")
        for item in doomed.iterdir():
            run("mdeltree" if item.is_dir() else "mdel", "-i", str(image), f"::/{item.name}")
        return
    with fuse_mounted(kind, image) as mnt:
        for tree in (source, doomed):
            run("cp", "-r", *[str(p) for p in tree.iterdir()], str(mnt))
        for item in doomed.iterdir():
            run("rm", "-rf", str(mnt / item.name))


def build_fs(kind: str, image: Path, size: int, seed: int) -> dict[str, str]:
    """A `kind` file system of `size` bytes in `image` (created or, for a partition device,
    existing); returns the hashes of the files it holds."""
    work = Path(tempfile.mkdtemp(prefix="fs-tree-"))
    try:
        source, doomed = work / "keep", work / "gone"
        make_tree(source, seed)
        make_tree(doomed, seed + 1, files=6, prefix="doomed")
        if not image.exists() or image.is_file():
            with open(image, "wb") as f:
                f.truncate(size)
        if kind == "ext4":
            # mkfs.ext4 -d writes the tree; the doomed files are written then deleted with
            # debugfs so that stale data sits in free blocks
            (source / "gone").mkdir()
            for item in doomed.iterdir():
                run("cp", "-r", str(item), str(source / "gone"))
            run("mkfs.ext4", "-q", "-F", "-d", str(source), str(image))
            for item in sorted((source / "gone").rglob("*"), reverse=True):
                rel = "/" + str(item.relative_to(source))
                run("debugfs", "-w", "-R", f"{'rmdir' if item.is_dir() else 'rm'} \"{rel}\"",
                    str(image))
            run("debugfs", "-w", "-R", "rmdir /gone", str(image))
            run("rm", "-rf", str(source / "gone"))
        else:
            mkfs = {"vfat": ["mkfs.vfat"], "exfat": ["mkfs.exfat"],
                    "ntfs": ["mkntfs", "-q", "-F", "-f"]}[kind]
            run(*mkfs, str(image))
            _fill(kind, image, source, doomed)
        return tree_hashes(source)
    finally:
        run("rm", "-rf", str(work))


def extracted_hashes(kind: str, image: Path) -> dict[str, str]:
    """The files of a file-system image as its own tools read them."""
    out = Path(tempfile.mkdtemp(prefix="fs-out-"))
    try:
        if kind == "ext4":
            run("debugfs", "-R", f"rdump / {out}", str(image))
            return tree_hashes(out)
        if kind == "vfat":
            run("mcopy", "-s", "-i", str(image), "::/*", str(out))
            return tree_hashes(out)
        with fuse_mounted(kind, image, read_only=True) as mnt:
            return {k: v for k, v in tree_hashes(mnt).items()
                    if not k.startswith(("System Volume Information", "$"))}
    finally:
        run("rm", "-rf", str(out))


def comparable(kind: str, hashes: dict[str, str]) -> dict[str, str]:
    """FAT names are case-insensitive, and mtools extracts some letters in upper case."""
    return {k.casefold(): v for k, v in hashes.items()} if kind == "vfat" else hashes


def fsck_clean(kind: str, image: Path) -> tuple[bool, str]:
    result = subprocess.run([*FSCK[kind], str(image)], capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr


def partclone_used(kind: str, image: Path) -> list[tuple[int, int]]:
    """The byte ranges partclone's `--domain` map marks used: the judge of our used maps."""
    out = image.with_suffix(".pcmap")
    run(PARTCLONE[kind], "-q", "-D", "-s", str(image), "-o", str(out))
    rmap = mapfile.load(str(out), image.stat().st_size).rmap
    return [(pos, length) for pos, length, state in rmap.areas() if state == FINISHED]
