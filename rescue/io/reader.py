"""The one "bytes at an offset" interface, and the one error a failed read raises.

Everything rescue reads from is a Reader: a source disk, an image of any format, a file, one
partition of any of them. The partition and file-system parsers, the signature probe and the
explorer take any Reader, so none of them knows what kind of thing it reads.
"""

from __future__ import annotations

from typing import Protocol

from rescue.errors import ExitCode, RescueError


class Unreadable(RescueError):
    """Bytes at `offset` could not be read: a bad area, a timeout, a failed read of a file.

    `kind` is "media" or "timeout": the rescue algorithm treats the two differently.
    """

    exit_code = ExitCode.UNREADABLE

    def __init__(self, offset: int, length: int, kind: str = "media", detail: str = "") -> None:
        super().__init__(f"{kind} error reading {length} bytes at {offset:#x} {detail}".strip())
        self.offset, self.length, self.kind = offset, length, kind


class Reader(Protocol):
    """`size` bytes, read at any offset.

    `read` returns exactly `length` bytes, fewer only past the end, or raises Unreadable. A
    source may return a view of a buffer it reuses, valid only until its next read, so the
    bytes are never copied on the rescue's hot path: whoever keeps them takes `bytes(...)`,
    which costs nothing when they are bytes already.
    """

    size: int

    def read(self, offset: int, length: int) -> bytes | memoryview: ...
