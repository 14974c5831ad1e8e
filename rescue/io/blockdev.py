"""Block devices as the kernel shows them: their ioctls, their geometry, and writing to them.

One place for what reading a source and writing a target both need from the kernel: the ioctl
numbers, the errno values that mean the device itself is gone, and the page-aligned buffers that
O_DIRECT wants. `BlockTarget` writes a device: O_DIRECT where the device and the data allow it,
so a restore does not fill the page cache with what it will never read again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import mmap
import os
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

BLKGETSIZE64 = 0x80081272  # size in bytes
BLKSSZGET = 0x1268  # logical sector size
BLKPBSZGET = 0x127B  # physical sector size
BLKZEROOUT = 0x127F  # _IO(0x12, 127): the device zeroes a range itself
BLKRRPART = 0x125F  # _IO(0x12, 95): re-read the partition table

# The device itself is gone: unplugged, no medium, or the server behind it (FUSE, network)
# stopped answering; nothing more can be done with it until it is back.
LOST_ERRORS = frozenset({errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM, errno.ESHUTDOWN,
                         errno.ENOTCONN, errno.ESTALE})
# The device cannot zero a range itself: the zeros are written instead.
_NO_ZEROOUT = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY})

ZEROS_SIZE = 4 << 20  # zeros are written in pieces of this size
READ_BACK_WORKERS = 4  # reads in flight while a target is read back

Digest = TypeVar("Digest")


def ioctl_int(fd: int, request: int, fmt: str) -> int:
    """An ioctl that fills in one integer of struct format `fmt`."""
    buf = bytearray(struct.calcsize(fmt))
    fcntl.ioctl(fd, request, buf)
    return struct.unpack(fmt, buf)[0]


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer, as O_DIRECT wants."""
    return mmap.mmap(-1, max(size, mmap.PAGESIZE))


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def geometry(path: str) -> tuple[int, int]:
    """(size in bytes, logical sector size) of a block device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return ioctl_int(fd, BLKGETSIZE64, "Q"), ioctl_int(fd, BLKSSZGET, "i")
    finally:
        os.close(fd)


def rotational(path: str) -> bool:
    """Whether the block device spins, as the kernel says (a partition asks its disk); unknown
    counts as spinning, where reads interleaved with writes cost seeks."""
    try:
        device = os.stat(path).st_rdev
        node = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}"
        queue = f"{node}/queue" if os.path.isdir(f"{node}/queue") else f"{node}/../queue"
        with open(f"{queue}/rotational") as flag:
            return flag.read().strip() != "0"
    except (OSError, ValueError):
        return True


class Watermark:
    """How many bytes from its start a target holds durably: a writer advances it after each
    fsync, and a read-back may follow it up to there while the writing goes on."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._end = 0
        self._ended = False  # the writer stopped: it moves no further

    def advance(self, end: int) -> None:
        with self._changed:
            self._end = max(self._end, end)
            self._changed.notify_all()

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def reached(self, end: int) -> bool:
        with self._changed:
            return self._end >= end

    def wait(self, end: int) -> bool:
        """Wait until `end` is durable (True) or the writer stopped short of it (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self._end >= end or self._ended)
            return self._end >= end


def read_chunks(path: str, length: int, chunk: int, digest: Callable[[memoryview], Digest],
                start: int = 0, workers: int = READ_BACK_WORKERS,
                written: Watermark | None = None
                ) -> Generator[tuple[int, memoryview, Digest], None, None]:
    """`length` bytes of the device from `start`, as (offset from `start`, bytes, their
    `digest`) of `chunk` bytes each, in order, read past the page cache where the device
    allows it, so a read-back reads the disk and not what was just written to it. `workers`
    reads (each digested on its thread) are in flight at once: a disk answers several reads
    sooner than the same reads one after another. With `written`, a chunk is read only once
    the watermark has passed it; the chunks end early where the writer stopped short. Each
    view is valid until the next; a short read yields less."""
    try:
        fd, sector = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC), 0
    except OSError:
        fd, sector = os.open(path, os.O_RDONLY | os.O_CLOEXEC), 1

    def read(offset: int, buffer: memoryview) -> tuple[int, memoryview, int, Digest]:
        size = min(chunk, length - offset)
        request = -(-size // sector) * sector  # O_DIRECT reads whole sectors
        got = min(os.preadv(fd, [buffer[:request]], start + offset), size)
        return offset, buffer, got, digest(buffer[:got])

    free = [memoryview(aligned_buffer(chunk)) for _ in range(workers + 1)]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="read-back")
    pending: deque[Future[tuple[int, memoryview, int, Digest]]] = deque()

    def durable(offset: int) -> bool:
        """Whether the chunk at `offset` may be read; with no read in flight, waits for it."""
        end = min(offset + chunk, length)
        return written is None or (written.reached(end) if pending else written.wait(end))

    try:
        sector = sector or ioctl_int(fd, BLKSSZGET, "i")
        offsets = iter(range(0, length, chunk))
        upcoming = next(offsets, None)
        while True:
            while free and upcoming is not None and durable(upcoming):
                pending.append(pool.submit(read, upcoming, free.pop()))
                upcoming = next(offsets, None)
            if not pending:
                return
            offset, lent, got, hashed = pending.popleft().result()
            yield offset, lent[:got], hashed
            free.append(lent)  # the consumer is done with it
    finally:
        pool.shutdown(cancel_futures=True)
        os.close(fd)


def write_error(path: str, exc: OSError, what: str) -> str:
    """One line for a failed open or write of the device `path`; `what` names the attempt."""
    if exc.errno in LOST_ERRORS:
        return f"{path} vanished ({exc.strerror})"
    if exc.errno == errno.EBUSY:
        return f"{what} {path}: it is in use (mounted or claimed by the kernel)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{what} {path}: it is read-only ({exc.strerror})"
    return f"{what} {path}: {exc.strerror}"


class BlockTarget:
    """A block device opened for writing; its methods raise OSError.

    `direct`: sector-multiple writes go through O_DIRECT where the device takes it; the data
    of such writes must then start page aligned. `exclusive`: the device is claimed (O_EXCL),
    so nothing can mount it while it is written.
    """

    def __init__(self, path: str, *, direct: bool, exclusive: bool) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CLOEXEC
        self.buffered = os.open(path, flags | (os.O_EXCL if exclusive else 0))
        try:
            self.sector = ioctl_int(self.buffered, BLKSSZGET, "i")
        except OSError:
            os.close(self.buffered)
            raise
        self.direct: int | None = None
        if direct:
            with contextlib.suppress(OSError):
                self.direct = os.open(path, flags | os.O_DIRECT)

    @functools.cached_property
    def _zeros(self) -> mmap.mmap:
        return aligned_buffer(ZEROS_SIZE)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data` at `offset`."""
        view = memoryview(data).cast("B")
        length = len(view)
        aligned = self.direct is not None and length % self.sector == 0
        fd = self.direct if aligned and self.direct is not None else self.buffered
        done = 0
        while done < length:
            written = os.pwritev(fd, [view[done:]], offset + done)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written

    def write_zeros(self, offset: int, length: int) -> None:
        for start in range(0, length, ZEROS_SIZE):
            size = min(ZEROS_SIZE, length - start)
            self.write(offset + start, memoryview(self._zeros)[:size])

    def zero(self, offset: int, length: int) -> None:
        """Let the device zero the range (BLKZEROOUT); write zeros where it cannot."""
        if length % self.sector == 0:
            try:
                fcntl.ioctl(self.buffered, BLKZEROOUT, struct.pack("QQ", offset, length))
                return
            except OSError as exc:
                if exc.errno not in _NO_ZEROOUT:
                    raise
        self.write_zeros(offset, length)

    def sync(self) -> None:
        os.fsync(self.buffered)

    def reread_partitions(self) -> None:
        """Ask the kernel to read the new partition table; devices without partition
        scanning refuse, which is no error."""
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.buffered, BLKRRPART)

    def close(self) -> None:
        """Release the device; a second call does nothing."""
        for fd in (self.direct, self.buffered):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.direct, self.buffered = None, -1
