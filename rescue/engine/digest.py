"""The image's BLAKE3 computed while it is written.

A healthy disk is read front to back, so the image's logical bytes arrive in order: they are
hashed on a thread of their own (holes as zeros) while the next reads are in flight, instead of
reading the whole image again afterwards. The first write out of order (a later pass filling a
gap) ends the streaming; the caller then hashes the finished image the slow way.
"""

from __future__ import annotations

from dataclasses import replace

from rescue.formats.base import ImageWriter, keeps_manifest
from rescue.formats.fingerprint import BackgroundHasher, Blake3


class DigestingWriter:
    """Passes writes through to `writer` and hashes them while they come in order, on
    `threads` threads (see Blake3).

    It declares what `writer` declares, less what it cannot pass on: in-order writing (runs
    of zeros) and abandoning, which an imaging job, its only user, never asks of it.
    """

    def __init__(self, writer: ImageWriter, threads: int = 1) -> None:
        self.writer = writer
        self.size = writer.size
        self.capabilities = replace(writer.capabilities, sequential=False, abandon=False)
        self._cursor = 0
        self._hasher: BackgroundHasher | None = BackgroundHasher(Blake3(threads))

    def set_manifest(self, data: bytes) -> None:
        """Store the manifest in the image, where the writer declares it keeps one."""
        if not keeps_manifest(self.writer):
            raise TypeError(f"{type(self.writer).__name__} keeps no manifest in the image")
        self.writer.set_manifest(data)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.writer.write(offset, data)
        if self._hasher is None:
            return
        if offset < self._cursor:
            self._stop_hashing()
            return
        if offset > self._cursor:
            self._hasher.zeros(offset - self._cursor)
        self._hasher.update(data)
        self._cursor = offset + len(data)

    def sync(self) -> None:
        self.writer.sync()

    def close(self) -> None:
        self._stop_hashing()
        self.writer.close()

    def _stop_hashing(self) -> None:
        if self._hasher is not None:
            self._hasher.close()
            self._hasher = None

    def fingerprint(self) -> str | None:
        """The image's BLAKE3 if every byte came in order (holes as zeros), else None.
        Call once, after the last write."""
        if self._hasher is None:
            return None
        self._hasher.zeros(self.size - self._cursor)
        try:
            return self._hasher.hexdigest()
        finally:
            self._stop_hashing()  # no more writes may be hashed
