"""Raw images: the disk's bytes at their own offsets, sparse where nothing was written.

A regular file is created sparse at the source's size, so never-read and all-zero areas stay
holes on disk and read back as zeros. A block device target gets every byte written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from rescue.errors import DestinationError, FormatError
from rescue.formats.base import Capabilities, DamagedData, FdReader
from rescue.io.blockdev import BlockTarget, is_block_device

_ZERO = bytes(4 << 20)


def is_zero(data: bytes | memoryview) -> bool:
    """True when every byte is zero; a memcmp against a zero block, no copy."""
    if len(data) <= len(_ZERO):
        return _ZERO.startswith(data)
    return all(_ZERO.startswith(data[i:i + len(_ZERO)]) for i in range(0, len(data), len(_ZERO)))


class RawWriter:
    """Writes rescued data in place; `sync` is an fsync. A disk is written as a block target
    (buffered, not claimed), a file directly."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self._block: BlockTarget | None = None
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

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if not self.is_device and is_zero(data):
            return  # the file is sparse and was created by us: the hole already reads as zeros
        try:
            if self._block is not None:
                self._block.write(offset, data)
                return
            written = os.pwrite(self.fd, data, offset)
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], offset + written)
        except OSError as exc:
            raise DestinationError(
                f"cannot write {len(data)} bytes at {offset:#x} to {self.path}: {exc.strerror}"
            ) from None

    def sync(self) -> None:
        try:
            if self._block is not None:
                self._block.sync()
            else:
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
