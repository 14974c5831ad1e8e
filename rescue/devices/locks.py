"""Who is using which disk or image, across every rescue process on the machine.

A job takes a shared lock on what it reads and an exclusive one on what it writes, so a second
job that would write what the first reads or writes (or read what it writes) is refused with
one line naming the holder's PID and command. The locks are the kernel's flock(2) locks on small
files in one folder (/run/rescue/locks as root), keyed by a device's number or a file's real
path: they vanish with their process, so a `kill -9` never leaves a stale lock, and the kernel's
own table (/proc/locks) says who holds each one, so nothing we wrote can go out of date.

A block device is used together with everything built on its sectors: a job on /dev/sdb locks
sdb and every partition and holder (md, LVM) on it. Of two devices that share sectors one is
built on the other, so two jobs on them always meet on one lock file, where a write meets any
other use; a job on sdb1 and one on sdb2 never meet.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import stat
import struct
import time
from dataclasses import dataclass

from rescue.devices.discover import BlockTree
from rescue.errors import RefusedError

RUN_DIR = "/run/rescue/locks"
PROC_LOCKS = "/proc/locks"
BUSY_ATTEMPTS = 3  # a lock held by another is tried this often,
BUSY_PAUSE = 0.02  # this many seconds apart, before the use is refused


@dataclass(frozen=True)
class Holder:
    """A process holding a lock: `writing` for an exclusive lock, reading for a shared one."""

    pid: int
    writing: bool

    @property
    def command(self) -> str:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            return "command unknown"
        return " ".join(word.decode(errors="replace") for word in words if word) or "?"

    def describe(self) -> str:
        return (f"being {'written' if self.writing else 'read'} by PID {self.pid} "
                f"({self.command})")


def lock_dir() -> str:
    """/run/rescue/locks, shared by every process of the machine; a user who cannot write
    there gets a folder of their own under $XDG_RUNTIME_DIR or /tmp."""
    folders = [RUN_DIR]
    if os.environ.get("XDG_RUNTIME_DIR"):
        folders.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "rescue", "locks"))
    folders.append(f"/tmp/rescue-{os.getuid()}/locks")
    for folder in folders:
        with contextlib.suppress(OSError):
            os.makedirs(folder, mode=0o700, exist_ok=True)
            info = os.stat(folder)
            if info.st_uid == os.getuid() and os.access(folder, os.W_OK):
                return folder
    raise RefusedError(f"no folder for locks: {', '.join(folders)} cannot be used")


def _device_number(path: str) -> int | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_rdev if stat.S_ISBLK(info.st_mode) else None


_STATX = getattr(ctypes.CDLL(None, use_errno=True), "statx", None)  # glibc 2.28 and later
_AT_FDCWD = -100
_STATX_INO_BTIME = 0x100 | 0x800
_STATX_SIZE = 256
_STATX_INO = struct.Struct("<Q")  # struct statx: stx_ino at byte 32
_STATX_BTIME = struct.Struct("<qI")  # stx_btime (seconds, nanoseconds) at byte 80


def _inode(path: str) -> str:
    """The file's inode number and, where the file system records it, when that inode was
    made (ns): an inode number is handed to a new file once the old one is gone, the pair
    names one file for good. Raises OSError when there is no such file."""
    if _STATX is None:
        return str(os.stat(path).st_ino)
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if _STATX(_AT_FDCWD, os.fsencode(path), 0, _STATX_INO_BTIME, buffer) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), path)
    (number,) = _STATX_INO.unpack_from(buffer.raw, 32)
    if not int.from_bytes(buffer.raw[:4], "little") & 0x800:
        return str(number)
    seconds, nanoseconds = _STATX_BTIME.unpack_from(buffer.raw, 80)
    return f"{number}-{seconds * 1_000_000_000 + nanoseconds}"


def _file_keys(path: str) -> list[str]:
    """A file by its real path (it may not exist yet) and, once it exists, by its inode too,
    so another name for it (a hard link, a bind mount) meets the same lock. The inode's birth
    time is part of its key: a job's map is replaced at every save and a job may delete a
    file it locked, and a new file given the freed inode number is another file."""
    real = os.path.realpath(path)
    keys = [f"file-{hashlib.sha256(real.encode()).hexdigest()[:32]}"]
    with contextlib.suppress(OSError):
        keys.append(f"inode-{os.stat(real).st_dev}-{_inode(real)}")
    return keys


def _device_key(number: tuple[int, int]) -> str:
    return f"dev-{number[0]}-{number[1]}"


@dataclass(frozen=True)
class _Node:
    """One lock file: `name` is the device or file it stands for; `overlaps`: it shares
    sectors with the path asked about (else it is elsewhere on the same disk)."""

    key: str
    name: str
    overlaps: bool = True


def _nodes(path: str, *, whole_disks: bool = False) -> list[_Node]:
    """The lock files a use of `path` takes: a file's, or a device's and those of everything
    built on it. With `whole_disks`, every device on the same disks too (to find neighbours).
    Devices come shallowest first: a disk before its partitions."""
    rdev = _device_number(path)
    if rdev is None:
        return [_Node(key, path) for key in _file_keys(path)]
    tree = BlockTree.read()
    name = tree.name_of(rdev)
    if name is None:
        return [_Node(_device_key((os.major(rdev), os.minor(rdev))), path)]
    numbers = {device: number for number, device in tree.names.items()}
    devices = tree.descendants(name)
    if whole_disks:
        devices = devices.union(*(tree.descendants(disk) for disk in tree.disks_of(name)))
    ordered = sorted(devices, key=lambda device: (len(tree.ancestors(device)), device))
    return [_Node(_device_key(numbers[device]), f"/dev/{device}",
                  tree.overlaps(name, device)) for device in ordered if device in numbers]


def _holders_by_inode() -> dict[tuple[int, int, int], list[Holder]]:
    """The kernel's table of flock locks: (major, minor, inode) → holders."""
    table: dict[tuple[int, int, int], list[Holder]] = {}
    try:
        with open(PROC_LOCKS) as f:
            lines = f.read().splitlines()
    except OSError:
        return table
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" marks a waiter, not a holder
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
            table.setdefault(key, []).append(Holder(int(fields[4]), fields[3] == "WRITE"))
    return table


def _holders(lock_path: str, table: dict[tuple[int, int, int], list[Holder]]) -> list[Holder]:
    try:
        info = os.stat(lock_path)
    except FileNotFoundError:
        return []
    return table.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino), [])


@dataclass(frozen=True)
class Use:
    """A process using `name`: a device or file sharing sectors with the path asked about
    (`overlaps`), or another device on the same disk."""

    name: str
    holder: Holder
    overlaps: bool


def users(path: str) -> list[Use]:
    """Every rescue process using `path`, what shares sectors with it, or the rest of its
    disk; each process once, by the shallowest device it uses (the disk it reads whole, not
    each partition of it)."""
    folder = lock_dir()
    table = _holders_by_inode()
    found: dict[int, Use] = {}
    for node in _nodes(path, whole_disks=True):
        for holder in _holders(os.path.join(folder, node.key), table):
            known = found.get(holder.pid)
            if known is None or (node.overlaps and not known.overlaps):
                found[holder.pid] = Use(node.name, holder, node.overlaps)
    return list(found.values())


class Locks:
    """The locks one job holds; released together by `release()` or when the process ends."""

    def __init__(self) -> None:
        self._held: list[tuple[str, int]] = []

    def read(self, path: str) -> None:
        """Share `path` with other readers; refuse while anything writes it."""
        self._take(path, writing=False)

    def write(self, path: str) -> None:
        """Hold `path` alone; refuse while anything reads or writes it."""
        self._take(path, writing=True)

    def _take(self, path: str, writing: bool) -> None:
        folder = lock_dir()
        taken = len(self._held)
        for node in _nodes(path):
            lock_path = os.path.join(folder, node.key)
            descriptor = _lock(lock_path, writing)
            if descriptor is None:
                while len(self._held) > taken:
                    _unlock(*self._held.pop())
                raise RefusedError(_refusal(path, writing))
            self._held.append((lock_path, descriptor))

    def release(self) -> None:
        while self._held:
            _unlock(*self._held.pop())

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(path: str, writing: bool) -> str:
    """One line naming who is in the way (it may have gone meanwhile: then only that)."""
    for use in users(path):
        if use.overlaps and (writing or use.holder.writing):
            what = path if use.name == path else f"{path}: {use.name}"
            return f"{what} is {use.holder.describe()}"
    return f"{path} is in use by another rescue job"


def _lock(lock_path: str, writing: bool) -> int | None:
    """An open descriptor holding the lock, or None when another holds a conflicting one.
    The file may be removed by its last holder at any moment: lock, then check that the name
    still leads to the file locked, else start again. A holder letting go holds the lock
    alone for an instant while it removes the file, so a refusal is tried again first."""
    attempts = 0
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_EX if writing else fcntl.LOCK_SH)
                        | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            attempts += 1
            if attempts == BUSY_ATTEMPTS:
                return None
            time.sleep(BUSY_PAUSE)
            continue
        try:
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _unlock(lock_path: str, descriptor: int) -> None:
    """Remove the lock file when no one else holds it, so the folder does not grow."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                os.unlink(lock_path)
    except OSError:
        pass  # another holder remains (or took it meanwhile): the file stays
    finally:
        os.close(descriptor)
