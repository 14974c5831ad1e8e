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
from typing import Protocol

from rescue.formats.image import ImageReader

CHUNK = 1 << 20
READ_SIZE = 4 << 20
_ZEROS = memoryview(bytes(CHUNK))
_ZERO_CHUNK_DIGEST = hashlib.sha256(_ZEROS).digest()
_ZERO_DIGEST_BATCH = 4096  # zero-chunk digests fed at once: a 1 TB hole stays small in memory


class ImageHasher(Protocol):
    """Fed an image's bytes in order: data, or runs of zeros that a hole reads as."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def zeros(self, length: int) -> None: ...

    def hexdigest(self) -> str: ...


class Fingerprint:
    """The fingerprint of bytes fed in order (see the module docstring)."""

    def __init__(self) -> None:
        self._chunks = hashlib.sha256()
        self._partial = bytearray()  # the start of a chunk not yet complete

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data).cast("B")
        view = view[self._top_up(view):]
        whole = len(view) - len(view) % CHUNK
        for pos in range(0, whole, CHUNK):
            self._chunks.update(hashlib.sha256(view[pos:pos + CHUNK]).digest())
        self._partial += view[whole:]

    def zeros(self, length: int) -> None:
        length -= self._top_up(_ZEROS[:min(length, CHUNK)])
        chunks, rest = divmod(length, CHUNK)
        for done in range(0, chunks, _ZERO_DIGEST_BATCH):
            self._chunks.update(_ZERO_CHUNK_DIGEST * min(_ZERO_DIGEST_BATCH, chunks - done))
        self._partial += _ZEROS[:rest]

    def _top_up(self, view: memoryview) -> int:
        """Complete a started chunk from the front of `view`; returns the bytes taken."""
        if not self._partial:
            return 0
        taken = min(CHUNK - len(self._partial), len(view))
        self._partial += view[:taken]
        if len(self._partial) == CHUNK:
            self._chunks.update(hashlib.sha256(self._partial).digest())
            self._partial.clear()
        return taken

    def hexdigest(self) -> str:
        total = self._chunks.copy()
        if self._partial:
            total.update(hashlib.sha256(self._partial).digest())
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
