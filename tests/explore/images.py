"""Real file systems made by their own mkfs tools, populated by their own drivers, for tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.fixtures.cli import rescue, run
from tests.fixtures.loop import loop_device

FS_SIZE = 64 << 20
PART_START = 1 << 20  # the GPT disk's partition 1 starts at 1 MiB
# How finely each file system keeps a modification time as its driver here writes it
# (exfat-fuse keeps no 10 ms part: it reads back whole seconds itself).
TIME_RESOLUTION_NS = {"ext4": 1, "ntfs": 100, "vfat": 2_000_000_000, "exfat": 2_000_000_000}
POSIX_MODES = ("ext4",)
# The whole-second times given to the tree: a few well in the past, with nanoseconds.
TIMES = (1_234_567_890_123_456_789, 1_500_000_000_987_654_321, 1_600_000_002_000_000_000)


def make_tree(root: Path, *, symlinks: bool) -> None:
    """Files of assorted sizes (empty to several clusters, one sparse), nested folders,
    non-ASCII names, varied modes and times."""
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    files = {
        "readme.txt": b"hello\n",
        "empty": b"",
        "docs/report.bin": os.urandom(300_000),
        "docs/deep/notes.txt": b"note " * 1000,
        "docs/deep/deeper/Grüße.txt": "Grüße 😀\n".encode(),
        "docs/zeros-and-data.bin": bytes(200_000) + os.urandom(5000),
    }
    for index, (name, data) in enumerate(files.items()):
        path = root / name
        path.write_bytes(data)
        path.chmod((0o640, 0o600, 0o755, 0o444)[index % 4])
    if symlinks:
        (root / "docs" / "link-to-readme").symlink_to("../readme.txt")
    for index, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        stamp = TIMES[index % len(TIMES)]
        os.utime(path, ns=(stamp, stamp), follow_symlinks=False)


def tree_records(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """relative path → (kind, mode, mtime_ns, sha256 or link target) for every entry."""
    records = {}
    for path in root.rglob("*"):
        info = path.lstat()
        relative = str(path.relative_to(root))
        if path.is_symlink():
            records[relative] = ("symlink", 0, info.st_mtime_ns, os.readlink(path))
        elif path.is_dir():
            records[relative] = ("dir", info.st_mode & 0o7777, info.st_mtime_ns, "")
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            records[relative] = ("file", info.st_mode & 0o7777, info.st_mtime_ns, digest)
    return records


@contextlib.contextmanager
def mounted(device: str, mountpoint: Path, command: tuple[str, ...]) -> Iterator[Path]:
    """`device` mounted by `command` (mount, ntfs-3g, exfat-fuse), always unmounted."""
    mountpoint.mkdir(exist_ok=True)
    run(*command, device, mountpoint)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)


def make_filesystem(kind: str, source: Path, image: Path) -> None:
    """`image` (FS_SIZE bytes) holding a `kind` file system with a copy of `source`."""
    with open(image, "wb") as f:
        f.truncate(FS_SIZE)
    if kind == "vfat":  # this kernel has no vfat driver: mtools writes it
        run("mkfs.vfat", "-F", "32", image)
        entries = sorted(str(p) for p in source.iterdir())
        run("mcopy", "-s", "-p", "-m", "-i", image, *entries, "::/",
            env={**os.environ, "TZ": "UTC"})
        return
    mkfs, command = {
        "ext4": (("mkfs.ext4", "-q", "-F", "-I", "256"), ("mount",)),  # 256: nanosecond times
        "ntfs": (("mkntfs", "-q", "-F", "-f"), ("ntfs-3g",)),
        "exfat": (("mkfs.exfat",), ("mount.exfat-fuse",)),
    }[kind]
    run(*mkfs, image)
    with loop_device(str(image)) as device, \
            mounted(device, image.with_suffix(".mnt"), command) as mountpoint:
        run("cp", "-a", "--no-preserve=ownership", f"{source}/.", mountpoint)


def make_gpt_disk(filesystems: Sequence[Path], disk: Path) -> None:
    """A GPT disk with `filesystems` (whole MiBs each) as partitions 1, 2, ... one after
    the other from 1 MiB on."""
    starts = [PART_START]
    for filesystem in filesystems:
        starts.append(starts[-1] + filesystem.stat().st_size)
    with open(disk, "wb") as f:
        f.truncate(starts[-1] + (1 << 20))
    table = "".join(f"start={start // 512}, size={filesystem.stat().st_size // 512}, "
                    "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data\n"
                    for start, filesystem in zip(starts, filesystems, strict=False))
    subprocess.run(["sfdisk", "-q", str(disk)], check=True, capture_output=True, text=True,
                   input=f"label: gpt\n{table}")
    for start, filesystem in zip(starts, filesystems, strict=False):
        run("dd", f"if={filesystem}", f"of={disk}", "bs=1M", f"seek={start >> 20}",
            "conv=notrunc,sparse", "status=none")


# What an untrusted image may hold: 0666 device nodes (a char and a block one that exist
# here) and a set-user-ID root program, named as in the image.
HOSTILE_NODES = {"null": ("c", 1, 3), "loop0": ("b", 7, 0)}
SETUID_PROGRAM = "id"


def make_untrusted_filesystem(kind: str, image: Path) -> None:
    """`image` (16 MiB) of `kind` holding a set-user-ID root copy of /usr/bin/id and, where
    the file system can hold them, HOSTILE_NODES: each made by the file system's own tools."""
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    if kind == "vfat":
        run("mkfs.vfat", image)
        run("mcopy", "-i", image, "/usr/bin/id", f"::/{SETUID_PROGRAM}")
        return
    if kind == "ext4":
        tree = image.with_suffix(".tree")
        tree.mkdir()
        fill_hostile(tree)
        run("mkfs.ext4", "-q", "-F", "-d", tree, image)
        return
    mkfs, command = {"ntfs": (("mkntfs", "-q", "-F", "-f"), ("ntfs-3g", "-o", "permissions")),
                     "exfat": (("mkfs.exfat",), ("mount.exfat-fuse",))}[kind]
    run(*mkfs, image)
    with loop_device(str(image)) as device, \
            mounted(device, image.with_suffix(".mnt"), command) as mountpoint:
        fill_hostile(mountpoint, unix=kind == "ntfs")  # exfat-fuse keeps no modes or nodes


def fill_hostile(directory: Path, *, unix: bool = True) -> None:
    program = directory / SETUID_PROGRAM
    program.write_bytes(Path("/usr/bin/id").read_bytes())
    if not unix:
        return
    os.chown(program, 0, 0)
    program.chmod(0o4755)
    for name, (kind, major, minor) in HOSTILE_NODES.items():
        run("mknod", "-m", "0666", directory / name, kind, str(major), str(minor))


def image_to(source: Path, dest: Path) -> Path:
    """Image `source` with `rescue image` (qcow2 or .img.zst by the name); its map is kept."""
    result = rescue("image", source, dest)
    assert result.returncode == 0, result.stderr
    return dest
