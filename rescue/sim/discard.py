"""An image writer that keeps nothing: for measuring a rescue of a simulated disk by its
reads alone (a 1 TB model needs no terabyte of disk)."""

from __future__ import annotations

from rescue.formats.base import Capabilities


class DiscardWriter:
    """Takes every write and forgets it; `written` counts the bytes."""

    capabilities = Capabilities()

    def __init__(self, size: int) -> None:
        self.size = size
        self.written = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.written += len(data)

    def sync(self) -> None:
        """Nothing is kept, so nothing to make durable."""

    def close(self) -> None:
        """Nothing to release."""
