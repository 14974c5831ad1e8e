"""The image fingerprint: one SHA-256 over the SHA-256s of the image's 1 MiB chunks.

A plain SHA-256 of a disk image has to hash every zero of its holes, and an image of used
blocks only is mostly holes: hashing them took longer than imaging the data. Over chunk
digests an all-zero chunk costs one precomputed digest, while every byte still counts.
Standard tools recompute it from a raw image or a restored disk:

    split -b 1M --filter='sha256sum | head -c 64 | tr a-f A-F | basenc --base16 -d' disk.img \\
        | sha256sum
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from rescue.formats.image import ImageHasher, ImageReader

CHUNK = 1 << 20
READ_SIZE = 4 << 20
_ZEROS = memoryview(bytes(CHUNK))
_ZERO_CHUNK_DIGEST = hashlib.sha256(_ZEROS).digest()
_ZERO_DIGEST_BATCH = 4096  # zero-chunk digests fed at once: a 1 TB hole stays small in memory
_IN_FLIGHT = 8  # chunks handed to the pool and not yet collected
# Chunks are independent, so they hash on the other cores at once (hashlib lets go of the GIL)
# while one core is left to the thread that reads and writes the image; the pool starts its
# threads only when first used.
_POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="fingerprint")


def _sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


class Fingerprint:
    """The fingerprint of bytes fed in order (see the module docstring).

    Bytes are gathered into chunk buffers of its own, hashed on the pool while more arrive and
    reused once hashed: callers may reuse their buffers at once, and no chunk costs a fresh
    allocation."""

    def __init__(self) -> None:
        self._chunks = hashlib.sha256()
        self._current = bytearray(CHUNK)
        self._filled = 0  # bytes of the chunk being gathered in _current
        self._in_flight: deque[tuple[bytearray, Future[bytes]]] = deque()  # in order
        self._spare: list[bytearray] = []

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data).cast("B")
        while view:
            taken = min(CHUNK - self._filled, len(view))
            self._current[self._filled:self._filled + taken] = view[:taken]
            self._fill(taken)
            view = view[taken:]

    def zeros(self, length: int) -> None:
        if self._filled:
            taken = min(CHUNK - self._filled, length)
            self._current[self._filled:self._filled + taken] = _ZEROS[:taken]
            self._fill(taken)
            length -= taken
            if self._filled:
                return  # the run ended inside that chunk
        chunks, rest = divmod(length, CHUNK)
        if chunks:
            self._collect(0)
            for done in range(0, chunks, _ZERO_DIGEST_BATCH):
                self._chunks.update(_ZERO_CHUNK_DIGEST * min(_ZERO_DIGEST_BATCH, chunks - done))
        self._current[:rest] = _ZEROS[:rest]
        self._filled = rest

    def _fill(self, added: int) -> None:
        """Count bytes added to the current chunk; a full chunk goes to the pool."""
        self._filled += added
        if self._filled < CHUNK:
            return
        chunk = self._current
        self._in_flight.append((chunk, _POOL.submit(_sha256, chunk)))
        self._current = self._spare.pop() if self._spare else bytearray(CHUNK)
        self._filled = 0
        self._collect(_IN_FLIGHT)

    def _collect(self, keep: int) -> None:
        """Feed finished chunk digests in order until at most `keep` are still in flight."""
        while len(self._in_flight) > keep:
            chunk, digest = self._in_flight.popleft()
            self._chunks.update(digest.result())
            self._spare.append(chunk)

    def hexdigest(self) -> str:
        self._collect(0)
        total = self._chunks.copy()
        if self._filled:
            total.update(_sha256(memoryview(self._current)[:self._filled]))
        return total.hexdigest()


class PlainSha256:
    """SHA-256 of the whole image: what older manifests recorded instead of a fingerprint."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, data: bytes | memoryview, /) -> None:
        self._digest.update(data)

    def zeros(self, length: int) -> None:
        for pos in range(0, length, CHUNK):
            self._digest.update(_ZEROS[:min(CHUNK, length - pos)])

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def hash_image(reader: ImageReader, hasher: ImageHasher | None = None) -> str:
    """Hash the image's logical bytes (holes as zeros, never read): its fingerprint unless
    another hasher is given."""
    hasher = hasher or Fingerprint()
    for offset, length, allocated in reader.extents():
        if not allocated:
            hasher.zeros(length)
            continue
        for pos in range(offset, offset + length, READ_SIZE):
            hasher.update(reader.read(pos, min(READ_SIZE, offset + length - pos)))
    return hasher.hexdigest()
