"""Block sources: a device or a file opened read-only, read with O_DIRECT where possible.

O_DIRECT matters on a failing disk: the page cache would turn one bad sector into a failed
read-ahead of many good ones and hide which sector failed. The source is never written.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from typing import Protocol

from rescue.errors import SourceError, SourceLostError
from rescue.io.blockdev import BLKGETSIZE64, BLKPBSZGET, BLKSSZGET, LOST_ERRORS, ioctl_int
from rescue.io.reader import Reader, Unreadable

# Any other errno (EIO and its friends) means "this area could not be read": a bad area;
# LOST_ERRORS mean the source itself is gone.
TIMEOUT_ERRORS = frozenset({errno.ETIMEDOUT, errno.ETIME})


class Source(Reader, Protocol):
    """What the rescue engine reads from: a real device or a simulated failing one."""

    path: str
    sector_size: int
    physical_sector_size: int

    def read(self, offset: int, length: int) -> memoryview:
        """Exactly `length` bytes at `offset` (clipped at the end), or raise Unreadable.
        The view is only valid until the next read: keep a copy if you need it longer."""
        ...

    def vanished(self) -> str | None:
        """Why the source is gone (it left the system, shrank, its backing stopped answering),
        or None when nothing says so. Reads nothing: cheap enough to ask after read errors."""
        ...

    def close(self) -> None: ...


def _unusable(path: str, exc: OSError, what: str) -> SourceError | SourceLostError:
    """A source that cannot be opened: gone (a dead FUSE server, no medium: exit 4, resumable
    once it is back), or unusable for another reason (exit 2)."""
    if exc.errno in LOST_ERRORS:
        return SourceLostError(f"source {path} is gone ({exc.strerror}); reconnect it and run "
                               "the same command again")
    return SourceError(f"{what} source {path}: {exc.strerror}")


class BlockSource:
    """A block device or regular file, read-only, with one reused aligned buffer."""

    def __init__(self, path: str, max_read: int = 1 << 20) -> None:
        self.path = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SourceError(f"source {path} does not exist") from None
        except OSError as exc:
            raise _unusable(path, exc, "cannot open") from None
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(f"source {path} is a directory, not a disk or image file")
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise SourceError(f"source {path} is neither a block device nor a regular file")
        self.is_device = stat.S_ISBLK(st.st_mode)
        self.identity = (st.st_rdev, 0) if self.is_device else (st.st_dev, st.st_ino)
        self.fd, self.direct = self._open(path)
        try:
            if self.is_device:
                self.size = ioctl_int(self.fd, BLKGETSIZE64, "Q")
                self.sector_size = ioctl_int(self.fd, BLKSSZGET, "i")
                self.physical_sector_size = ioctl_int(self.fd, BLKPBSZGET, "I")
            else:
                self.size = st.st_size
                self.sector_size = self.physical_sector_size = 512
        except OSError as exc:
            os.close(self.fd)
            raise _unusable(path, exc, "cannot query") from None
        if self.size == 0:
            os.close(self.fd)
            raise SourceError(f"source {path} is empty (size 0)")
        self._buffer = mmap.mmap(-1, max_read + self.sector_size)  # page-aligned for O_DIRECT
        self._view = memoryview(self._buffer)

    def _open(self, path: str) -> tuple[int, bool]:
        """Open a device exclusively where the kernel allows it, so nothing can mount it
        while it is read. EBUSY means it is mounted or claimed already: it is read all the
        same, and `exclusive` stays False so the caller can say so."""
        self.exclusive = self.is_device
        try:
            return self._open_flags(path, os.O_DIRECT), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # file systems without O_DIRECT say EINVAL
                raise _unusable(path, exc, "cannot open") from None
        try:
            return self._open_flags(path, 0), False
        except OSError as exc:
            raise _unusable(path, exc, "cannot open") from None

    def _open_flags(self, path: str, extra: int) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC | extra
        if self.exclusive:
            try:
                return os.open(path, flags | os.O_EXCL)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                self.exclusive = False
        return os.open(path, flags)

    def _fall_back_to_buffered(self) -> None:
        os.close(self.fd)
        self.fd = self._open_flags(self.path, 0)
        self.direct = False

    def read(self, offset: int, length: int) -> memoryview:
        length = min(length, self.size - offset)
        if length <= 0:
            return self._view[:0]
        if length > len(self._buffer) - self.sector_size:
            raise ValueError(f"read of {length} bytes exceeds the buffer")
        ss = self.sector_size
        request = -(-length // ss) * ss if self.direct else length
        try:
            got = os.preadv(self.fd, [self._view[:request]], offset)
        except OSError as exc:
            if exc.errno == errno.EINVAL and self.direct:
                self._fall_back_to_buffered()
                return self.read(offset, length)
            if exc.errno in LOST_ERRORS:
                raise SourceLostError(f"source {self.path} vanished: {exc.strerror}") from None
            kind = "timeout" if exc.errno in TIMEOUT_ERRORS else "media"
            raise Unreadable(offset, length, kind, exc.strerror or "") from None
        if got < length:
            reason = self.vanished() or (f"it ended at {offset + got:#x}, before its size "
                                         f"{self.size:#x}")
            raise SourceLostError(f"source {self.path} vanished: {reason}")
        return self._view[:length]

    def vanished(self) -> str | None:
        try:
            st = os.fstat(self.fd)
            if not self.is_device:
                os.stat(self.path)  # a file behind a dead FUSE or network mount fails here
                return f"it shrank to {st.st_size} bytes" if st.st_size < self.size else None
            size = ioctl_int(self.fd, BLKGETSIZE64, "Q")
        except OSError as exc:
            return exc.strerror if exc.errno in LOST_ERRORS else None
        if size == 0:
            return "its size is now 0 (no medium)"
        node = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        if not os.path.exists(node):
            return "the device left the system"
        return _loop_backing_lost(node)

    def close(self) -> None:
        """Close the device; a source that has gone may fail even that, which loses nothing.
        The buffer is left to the garbage collector: a view of the last read may still be
        alive (in an error being reported), and mmap refuses to close then."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _loop_backing_lost(node: str) -> str | None:
    """Why a loop device's backing file cannot be reached (a dead FUSE or network mount
    answers its stat with ENOTCONN or ESTALE), or None; None too for other devices. A
    partition's loop settings are in its disk's folder, one level up."""
    for folder in (node, os.path.join(node, "..")):
        try:
            with open(os.path.join(folder, "loop", "backing_file"), encoding="utf-8") as f:
                backing = f.read().rstrip("\n").removesuffix(" (deleted)")
            break
        except OSError:
            continue
    else:
        return None
    try:
        os.stat(backing)
    except OSError as exc:
        if exc.errno in LOST_ERRORS:
            return f"its backing file {backing} is unreachable ({exc.strerror})"
    return None
