"""The one writer and reader interface over every image format, and the choice of format."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Protocol, Self

from rescue.errors import FormatError, UsageError
from rescue.formats.manifest import Manifest, read_sidecar

FORMATS = ("raw", "qcow2", "zst")
_EXTENSIONS = ((".img.zst", "zst"), (".zst", "zst"), (".qcow2", "qcow2"), (".img", "raw"),
               (".raw", "raw"))


class ImageWriter(Protocol):
    """Random-access sink for rescued data.

    The engine writes each range once it has read it, in any order; `sync` must make every
    write so far durable, because the mapfile is saved right after it and claims that data.
    `data` may be a view into a reused read buffer: it is only valid during the call, so a
    writer that keeps it (to compress later) must copy it.
    """

    size: int

    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class ImageHasher(Protocol):
    """Fed an image's bytes in order: data, or runs of zeros that a hole reads as."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def zeros(self, length: int) -> None: ...

    def hexdigest(self) -> str: ...


class ImageReader(Protocol):
    """Random-access view of an image's logical bytes; holes read as zeros."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, allocated) runs covering [0, size) in order."""
        ...

    def close(self) -> None: ...


class FdReader:
    """Base of readers that hold one open file descriptor in `_fd`.

    Closing twice is harmless (a `with` block may follow an explicit close), and every such
    reader is a context manager, so a caller never leaks the descriptor on an error.
    """

    _fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AbandonableWriter(ABC):
    """Base of writers that finish a file on `close` but can also stop without finishing.

    A `with` block left by an exception abandons the file at its last `sync` instead of
    closing it: finishing would write an index that claims the half-done work is complete.
    """

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def abandon(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def format_for(path: str, override: str | None = None) -> str:
    """The format named by --format, else by the file's extension; raw for devices and others."""
    if override:
        if override not in FORMATS:
            raise UsageError(f"unknown format {override!r}; choose one of {', '.join(FORMATS)}")
        return override
    lower = path.lower()
    for ext, fmt in _EXTENSIONS:
        if lower.endswith(ext):
            return fmt
    return "raw"


QCOW2_MAGIC = b"QFI\xfb"
ZSTD_MAGICS = (0xFD2FB528, *range(0x184D2A50, 0x184D2A60))  # a frame or a skippable frame


def detect_format(path: str) -> str:
    """The format by the file's first bytes, not its name: an image may be renamed."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except IsADirectoryError:
        raise FormatError(f"{path} is a directory, not an image") from None
    except OSError as exc:
        raise FormatError(f"cannot open image {path}: {exc.strerror}") from None
    if head == QCOW2_MAGIC:
        return "qcow2"
    if len(head) == 4 and int.from_bytes(head, "little") in ZSTD_MAGICS:
        return "zst"
    return "raw"


def open_reader(path: str) -> ImageReader:
    """Random access to any image rescue reads: qcow2, seekable zstd, raw file or device."""
    fmt = detect_format(path)
    if fmt == "qcow2":
        from rescue.formats.qcow2 import Qcow2Reader

        return Qcow2Reader(path)
    if fmt == "zst":
        from rescue.formats.zstseek import ZstSeekReader

        return ZstSeekReader(path)
    from rescue.formats.raw import RawReader

    return RawReader(path)


def read_manifest(path: str, reader: ImageReader) -> Manifest | None:
    """The manifest kept inside the image, or beside a raw image."""
    blob = getattr(reader, "manifest", None)
    if blob is not None:
        data = blob()
        return Manifest.from_bytes(data, path) if data else None
    return read_sidecar(path)
