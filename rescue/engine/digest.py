"""The image's fingerprint computed while it is written, on the other core.

A healthy disk is read front to back, so the image's logical bytes arrive in order: a thread can
hash them (and the holes between them, which cost nothing) while the next reads are in flight,
instead of reading the whole image again afterwards. The first write out of order (a later pass
filling a gap) ends the streaming; the caller then hashes the finished image the slow way.
"""

from __future__ import annotations

import queue
import threading

from rescue.formats.fingerprint import Fingerprint
from rescue.formats.image import ImageWriter

_STOP = None


class DigestingWriter:
    """Passes writes through to `writer` and fingerprints them while they come in order."""

    def __init__(self, writer: ImageWriter) -> None:
        self.writer = writer
        self.size = writer.size
        self._cursor = 0
        self._broken = False
        self._fingerprint = Fingerprint()
        self._queue: queue.Queue[bytes | int | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._hash, name="image-digest", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> object:  # set_manifest, is_device, ... of the writer
        return getattr(self.writer, name)

    def _hash(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, int):  # a run of zeros (a hole)
                self._fingerprint.zeros(item)
            else:
                self._fingerprint.update(item)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.writer.write(offset, data)
        if self._broken:
            return
        if offset < self._cursor:
            self._stop_streaming()
            return
        if offset > self._cursor:
            self._queue.put(offset - self._cursor)
        self._queue.put(bytes(data))
        self._cursor = offset + len(data)

    def _stop_streaming(self) -> None:
        self._broken = True
        self._queue.put(_STOP)

    def sync(self) -> None:
        self.writer.sync()

    def close(self) -> None:
        if not self._broken:
            self._stop_streaming()
        self._thread.join()
        self.writer.close()

    def fingerprint(self) -> str | None:
        """The image's fingerprint if every byte came in order (holes as zeros), else None.
        Call once, after the last write."""
        if self._broken:
            return None
        if self._cursor < self.size:
            self._queue.put(self.size - self._cursor)
        self._broken = True  # no more writes may be hashed
        self._queue.put(_STOP)
        self._thread.join()
        return self._fingerprint.hexdigest()
