"""The one writer and reader interface over every image format, and the choice of format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from rescue.errors import UsageError

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


class ImageReader(Protocol):
    """Random-access view of an image's logical bytes; holes read as zeros."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, allocated) runs covering [0, size) in order."""
        ...

    def close(self) -> None: ...


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
