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

from rescue.formats.base import ImageHasher, ImageReader

CHUNK = 1 << 20
READ_SIZE = 4 << 20
_ZEROS = memoryview(bytes(CHUNK))
_ZERO_CHUNK_DIGEST = hashlib.sha256(_ZEROS).digest()
_ZERO_DIGEST_BATCH = 4096  # zero-chunk digests fed at once: a 1 TB hole stays small in memory
_IN_FLIGHT = 32  # chunks handed to the pool and not yet collected
# Chunks are independent, so they hash on the other cores at once (hashlib lets go of the GIL)
# while one core is left to the thread that reads and writes the image; the pool starts its
# threads only when first used.
_POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="fingerprint")


def _sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def _chunk_buffer() -> memoryview:
    """A chunk buffer, written through a view: copying into a view is several times faster
    than slice assignment to a bytearray."""
    return memoryview(bytearray(CHUNK))


class Fingerprint:
    """The fingerprint of bytes fed in order (see the module docstring).

    Chunks are hashed on the pool while more arrive. Whole chunks of immutable `bytes` are
    hashed where they are; anything else is first copied into chunk buffers of its own, reused
    once hashed, so callers may reuse their buffers at once."""

    def __init__(self) -> None:
        self._chunks = hashlib.sha256()
        self._current = _chunk_buffer()
        self._filled = 0  # bytes of the chunk being gathered in _current
        # each chunk's digest in order, with the buffer to reuse once it is hashed
        self._in_flight: deque[tuple[memoryview | None, Future[bytes]]] = deque()
        self._spare: list[memoryview] = []

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data).cast("B")
        if self._filled:  # complete the chunk already started
            view = view[self._gather(view):]
        if isinstance(data, bytes):  # immutable: its whole chunks are hashed in place
            whole = len(view) - len(view) % CHUNK
            for pos in range(0, whole, CHUNK):
                self._submit(view[pos:pos + CHUNK], None)
            view = view[whole:]
        while view:
            view = view[self._gather(view):]

    def _gather(self, view: memoryview) -> int:
        """Copy what fits of `view` into the chunk being gathered; returns the bytes taken."""
        taken = min(CHUNK - self._filled, len(view))
        self._current[self._filled:self._filled + taken] = view[:taken]
        self._fill(taken)
        return taken

    def zeros(self, length: int) -> None:
        if self._filled:
            length -= self._gather(_ZEROS[:min(CHUNK - self._filled, length)])
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
        self._submit(self._current, self._current)
        self._current = self._spare.pop() if self._spare else _chunk_buffer()
        self._filled = 0

    def _submit(self, chunk: memoryview, reuse: memoryview | None) -> None:
        self._in_flight.append((reuse, _POOL.submit(_sha256, chunk)))
        self._collect(_IN_FLIGHT)

    def _collect(self, keep: int) -> None:
        """Feed finished chunk digests in order until at most `keep` are still in flight."""
        while len(self._in_flight) > keep:
            reuse, digest = self._in_flight.popleft()
            self._chunks.update(digest.result())
            if reuse is not None:
                self._spare.append(reuse)

    def add_chunk_digests(self, digests: bytes) -> None:
        """Feed the digests of chunks hashed elsewhere (see `chunk_digests`), at a chunk
        boundary; only the image's last chunk may be short."""
        assert not self._filled, "chunk digests go in at a chunk boundary"
        self._collect(0)
        self._chunks.update(digests)

    def hexdigest(self) -> str:
        self._collect(0)
        total = self._chunks.copy()
        if self._filled:
            total.update(_sha256(self._current[:self._filled]))
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


def chunk_digests(data: bytes | memoryview) -> bytes:
    """The SHA-256s of `data`'s chunks, back to back: a reader that hashes what it reads
    anyway (restore, for its read-back) feeds them to a Fingerprint instead of hashing twice."""
    return b"".join(_sha256(data[pos:pos + CHUNK]) for pos in range(0, len(data), CHUNK))


def zero_chunk_digests(length: int) -> bytes:
    """`chunk_digests` of `length` zeros, without hashing whole chunks."""
    whole, rest = divmod(length, CHUNK)
    return _ZERO_CHUNK_DIGEST * whole + (_sha256(_ZEROS[:rest]) if rest else b"")


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
