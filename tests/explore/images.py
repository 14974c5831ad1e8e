"""Real file systems made by their own mkfs tools, populated by their own drivers, for tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.loop import loop_device

REPO_ROOT = Path(__file__).resolve().parents[2]
FS_SIZE = 64 << 20
PART_START = 1 << 20  # the GPT disk's partition 1 starts at 1 MiB
# How finely each file system keeps a modification time as its driver here writes it
# (exfat-fuse keeps no 10 ms part: it reads back whole seconds itself).
TIME_RESOLUTION_NS = {"ext4": 1, "ntfs": 100, "vfat": 2_000_000_000, "exfat": 2_000_000_000}
POSIX_MODES = ("ext4",)
# The whole-second times given to the tree: a few well in the past, with nanoseconds.
TIMES = (1_234_567_890_123_456_789, 1_500_000_000_987_654_321, 1_600_000_002_000_000_000)


def run(*args: str | os.PathLike[str], **kwargs: object) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          **kwargs).stdout  # type: ignore[call-overload]


def rescue(*args: str | os.PathLike[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The `rescue` CLI as a user runs it, with the explore commands registered."""
    code = ("import sys, rescue.cli as c\n"
            "if 'explore' not in c.COMMANDS: c.COMMANDS += ('explore',)\n"
            "raise SystemExit(c.main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TZ": "UTC"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


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


def make_gpt_disk(filesystem: Path, disk: Path) -> None:
    """A GPT disk with `filesystem` as partition 1, starting at 1 MiB."""
    size = PART_START + filesystem.stat().st_size + (1 << 20)
    with open(disk, "wb") as f:
        f.truncate(size)
    sectors = filesystem.stat().st_size // 512
    subprocess.run(["sfdisk", "-q", str(disk)], check=True, capture_output=True, text=True,
                   input=f"label: gpt\nstart={PART_START // 512}, size={sectors}, "
                   "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data\n")
    run("dd", f"if={filesystem}", f"of={disk}", "bs=1M", f"seek={PART_START >> 20}",
        "conv=notrunc,sparse", "status=none")


def image_to(source: Path, dest: Path) -> Path:
    """Image `source` with `rescue image` (qcow2 or .img.zst by the name); its map is kept."""
    result = rescue("image", source, dest)
    assert result.returncode == 0, result.stderr
    return dest
