"""Reused buffers for writers that keep what they are given until another thread is done.

A writer must copy the bytes it is handed (they live in the reader's buffer), and a fresh
megabyte from the allocator costs a page fault for every 4 KiB of it: between uses the
allocator gives such blocks back to the kernel. Copying into a buffer that was used before
costs the copy alone.
"""

from __future__ import annotations

GRANULE = 1 << 20  # a new buffer's size is rounded up to this, so one serves many lengths
KEPT = 64  # free buffers kept at most; more are left to the allocator


class Buffers:
    """Copies into reused bytearrays; thread-safe, since a list's append and pop are atomic."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []

    def copy(self, data: bytes | memoryview) -> memoryview:
        """`data` copied into a buffer of this pool; hand the view back with `give` once no
        one reads it any more."""
        length = len(data)
        buffer = self._free.pop() if self._free else None
        if buffer is None or len(buffer) < length:
            buffer = bytearray(-(-length // GRANULE) * GRANULE)
        view = memoryview(buffer)[:length]
        view[:] = data
        return view

    def give(self, data: bytes | memoryview) -> None:
        """Take back a view `copy` returned (bytes from elsewhere are left alone)."""
        if isinstance(data, memoryview) and isinstance(data.obj, bytearray) \
                and len(self._free) < KEPT:
            self._free.append(data.obj)
