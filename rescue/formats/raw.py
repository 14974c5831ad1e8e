"""Raw images: the disk's bytes at their own offsets, sparse where nothing was written.

A regular file is created sparse at the source's size, so never-read and all-zero areas stay
holes on disk and read back as zeros. A block device target gets every byte written.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator

from rescue.errors import DestinationError, FormatError
from rescue.formats.base import Capabilities, DamagedData, FdReader
from rescue.formats.buffers import Buffers
from rescue.io.blockdev import BlockTarget, is_block_device

_ZERO = bytes(4 << 20)
GRAIN = 64 << 10  # zeros are left as holes in pieces this large, aligned in the file
QUEUED = 16  # writes waiting for the writing thread: at most this many read buffers' worth
WRITEBACK = 32 << 20  # written bytes after which the kernel is asked to start writing them out


def is_zero(data: bytes | memoryview) -> bool:
    """True when every byte is zero; a memcmp against a zero block, no copy."""
    if len(data) <= len(_ZERO):
        return _ZERO.startswith(data)
    return all(_ZERO.startswith(data[i:i + len(_ZERO)]) for i in range(0, len(data), len(_ZERO)))


def data_runs(offset: int, view: memoryview) -> list[tuple[int, int]]:
    """The [start, end) runs of `view` (written at file `offset`) that hold data: its all-zero
    GRAIN-aligned pieces left out, so a disk's zeros stay holes even inside a read that also
    holds data."""
    if is_zero(view):
        return []
    runs: list[tuple[int, int]] = []
    position = 0
    while position < len(view):
        end = min(len(view), (offset + position) // GRAIN * GRAIN + GRAIN - offset)
        if not _ZERO.startswith(view[position:end]):
            if runs and runs[-1][1] == position:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((position, end))
        position = end
    return runs


class _WriteBehind:
    """Writes a file on a thread of its own, so the caller goes back to reading while the
    kernel copies the data (pwrite lets go of the GIL), and asks the kernel to start writing
    it out as it goes, so the final fsync has little left to wait for. Memory stays bounded
    by the queue. The first failure is kept: the next write or `drain` raises it, so a sync
    never passes over a lost write."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd, self.path = fd, path
        self.queue: queue.Queue[tuple[int, memoryview] | None] = queue.Queue(QUEUED)
        self.buffers = Buffers()
        self.error: DestinationError | None = None
        self.thread = threading.Thread(target=self._run, name="raw-write", daemon=True)
        self.thread.start()

    def put(self, offset: int, data: memoryview) -> None:
        """Queue a copy of `data`, to be written at `offset`."""
        self._raise()
        self.queue.put((offset, self.buffers.copy(data)))

    def drain(self) -> None:
        """Wait until every queued write is done; raise the first that failed."""
        self.queue.join()
        self._raise()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        low, high = -1, -1  # the range written since the kernel was last asked to write out
        while (item := self.queue.get()) is not None:
            offset, data = item
            try:
                if self.error is None:
                    _pwrite_all(self.fd, data, offset, self.path)
                    low = offset if low < 0 else min(low, offset)
                    high = max(high, offset + len(data))
                if high - low >= WRITEBACK:
                    # on dirty pages this starts their write-out, without waiting for it; the
                    # data is written all the same if the advice fails
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(self.fd, low, high - low, os.POSIX_FADV_DONTNEED)
                    low = high = -1
            except DestinationError as error:
                self.error = error
            finally:
                self.buffers.give(data)
                self.queue.task_done()
        self.queue.task_done()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, path: str) -> None:
    try:
        written = os.pwrite(fd, data, offset)
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
    except OSError as exc:
        raise DestinationError(
            f"cannot write {len(data)} bytes at {offset:#x} to {path}: {exc.strerror}"
        ) from None


class RawWriter:
    """Writes rescued data in place; `sync` is an fsync. A disk is written as a block target
    (buffered, not claimed); a file on a writing thread of its own, its zeros left as holes."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self._block: BlockTarget | None = None
        self._behind: _WriteBehind | None = None
        try:
            self.is_device = is_block_device(path)
            self.capabilities = Capabilities(device=self.is_device)
            if self.is_device:
                self._block = BlockTarget(path, direct=False, exclusive=False)
                self.fd = self._block.buffered
            else:
                self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                if os.fstat(self.fd).st_size < size:
                    os.ftruncate(self.fd, size)  # sparse: holes read as zeros
        except OSError as exc:
            raise DestinationError(f"cannot open destination {path}: {exc.strerror}") from None
        if not self.is_device:
            self._behind = _WriteBehind(self.fd, path)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self._behind is not None:
            # the file is sparse and was created by us: a hole already reads as zeros
            view = memoryview(data).cast("B")
            for start, end in data_runs(offset, view):
                self._behind.put(offset + start, view[start:end])
            return
        assert self._block is not None
        try:
            self._block.write(offset, data)
        except OSError as exc:
            raise DestinationError(
                f"cannot write {len(data)} bytes at {offset:#x} to {self.path}: {exc.strerror}"
            ) from None

    def sync(self) -> None:
        try:
            if self._block is not None:
                self._block.sync()
            else:
                assert self._behind is not None
                self._behind.drain()
                os.fsync(self.fd)
        except OSError as exc:
            raise DestinationError(f"cannot sync {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        """Sync and release the file; a second call does nothing."""
        if self.fd < 0:
            return
        try:
            self.sync()
        finally:
            if self._behind is not None:
                self._behind.stop()
            if self._block is not None:
                self._block.close()
            else:
                os.close(self.fd)
            self.fd = -1


class RawReader(FdReader):
    """A raw image or device read at random; allocation from SEEK_DATA/SEEK_HOLE."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise FormatError(f"cannot open image {path}: {exc.strerror}") from None
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes cut short at the end of the image; a failed or short read is DamagedData."""
        length = max(0, min(length, self.size - offset))
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise DamagedData(offset, length, f"cannot read image {self.path} at {offset:#x}: "
                                              f"{exc.strerror}") from None
        if len(data) < length:
            raise DamagedData(offset, length, f"{self.path} is shorter than expected at "
                                              f"{offset + len(data):#x}")
        return data

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        pos = 0
        while pos < self.size:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains (devices report all data)
                data = self.size
            if data > pos:
                yield pos, data - pos, False
            if data >= self.size:
                return
            hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), self.size)
            yield data, hole - data, True
            pos = hole
