"""What every image reader and writer offers, and what each declares it can do beyond that.

A format's extras (a manifest inside the image, checks of its own, in-order writing, an
unfinished file that can be dropped) are declared in its `capabilities`, and callers branch on
that declaration, never on which methods an object happens to have: a wrapper passes the
declaration on, and a method added for another reason never turns a capability on by
accident. The `TypeGuard` functions below read a declaration and let the
type checker see the methods that come with it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, Self, TypeGuard

from rescue.errors import ExitCode
from rescue.io.reader import Reader, Unreadable

Ranges = list[tuple[int, int]]  # (offset, length) of logical image bytes, sorted


class DamagedData(Unreadable):
    """An image could not give back bytes it holds: a cluster or frame failed its checksum or
    its decompression, or the image file itself failed to read or ended early.

    It is an Unreadable, so whoever reads a disk or an image catches one error. Its message is
    the format's own account of the damage; it exits like the damaged-image FormatError it
    replaces, because a damaged image given as input is bad input, not a bad sector.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, offset: int, length: int, message: str) -> None:
        Exception.__init__(self, message)
        self.offset, self.length, self.kind = offset, length, "media"


@dataclass(frozen=True)
class Capabilities:
    """What a reader or writer can do beyond the common interface.

    Declared by its class, or by the instance where the file decides (a raw writer on a block
    device; a qcow2 written by another tool has no checksums).
    """

    manifest: bool = False  # keeps a manifest inside the image: set_manifest, manifest
    checks: bool = False  # the format checks itself: check_structure, read_checked
    checksums: bool = False  # every cluster or frame carries a checksum of its content, so
    # a check proves the data, not only the structure
    sequential: bool = False  # writes only in order; a run of zeros goes to write_zeros
    abandon: bool = False  # can stop at its last sync without finishing the file: abandon
    device: bool = False  # writes a block device in place: nothing can be kept beside it
    fills: bool = False  # decodes straight into a caller's buffer: read_checked_into


class ImageWriter(Protocol):
    """Random-access sink for rescued data.

    The engine writes each range once it has read it, in any order; `sync` must make every
    write so far durable, because the mapfile is saved right after it and claims that data.
    `data` may be a view into a reused read buffer: it is only valid during the call, so a
    writer that keeps it (to compress later) must copy it.
    """

    size: int
    capabilities: Capabilities

    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class ManifestWriter(ImageWriter, Protocol):
    """A writer whose format keeps the manifest inside the image."""

    def set_manifest(self, data: bytes) -> None:
        """Store an opaque blob with the image; durable at the next sync or close."""
        ...


class SequentialWriter(ImageWriter, Protocol):
    """A writer that takes bytes only in order, and a run of zeros without the zeros."""

    def write_zeros(self, length: int) -> None: ...


class DiscardableWriter(ImageWriter, Protocol):
    """A writer that can stop without finishing the file (see AbandonableWriter)."""

    def abandon(self) -> None: ...


class ImageHasher(Protocol):
    """Fed an image's bytes in order: data, or runs of zeros that a hole reads as."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def zeros(self, length: int) -> None: ...

    def hexdigest(self) -> str: ...


class ImageReader(Reader, Protocol):
    """Random-access view of an image's logical bytes; holes read as zeros."""

    capabilities: Capabilities

    def read(self, offset: int, length: int) -> bytes: ...

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, allocated) runs covering [0, size) in order."""
        ...

    def details(self) -> dict[str, object]:
        """What the format adds to the image's description (a qcow2's cluster size), for
        `rescue info`; empty where it adds nothing."""
        ...

    def close(self) -> None: ...


class ManifestReader(ImageReader, Protocol):
    """A reader whose format keeps the manifest inside the image."""

    def manifest(self) -> bytes | None:
        """The blob the writer stored, or None."""
        ...


class CheckedReader(ImageReader, Protocol):
    """A reader whose format carries checks of its own (qcow2, seekable zstd)."""

    def check_structure(self) -> tuple[Ranges, list[str]]:
        """Damaged logical ranges and damage without one, found in the tables alone."""
        ...

    def read_checked(self, offset: int, length: int) -> tuple[bytes, Ranges]:
        """Like `read`, but a cluster or frame that fails its checks reads as zeros and is
        returned as a damaged range (clipped to the request) instead of raising."""
        ...


class FillingReader(CheckedReader, Protocol):
    """A checked reader that decodes into a caller's buffer, allocating nothing."""

    def read_checked_into(self, offset: int, view: memoryview) -> Ranges:
        """`read_checked` into `view`, as much of it as the image holds; the damaged
        ranges."""
        ...


def keeps_manifest(writer: ImageWriter) -> TypeGuard[ManifestWriter]:
    return writer.capabilities.manifest


def writes_in_order(writer: ImageWriter) -> TypeGuard[SequentialWriter]:
    return writer.capabilities.sequential


def can_abandon(writer: ImageWriter) -> TypeGuard[DiscardableWriter]:
    return writer.capabilities.abandon


def holds_manifest(reader: ImageReader) -> TypeGuard[ManifestReader]:
    return reader.capabilities.manifest


def checks_itself(reader: ImageReader) -> TypeGuard[CheckedReader]:
    return reader.capabilities.checks


def fills_buffers(reader: ImageReader) -> TypeGuard[FillingReader]:
    return reader.capabilities.checks and reader.capabilities.fills


class FdReader:
    """Base of readers that hold one open file descriptor in `_fd`.

    Closing twice is harmless (a `with` block may follow an explicit close), and every such
    reader is a context manager, so a caller never leaks the descriptor on an error. It
    declares no capabilities and no details; a format that has some declares its own.
    """

    _fd = -1
    capabilities = Capabilities()

    def details(self) -> dict[str, object]:
        return {}

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
