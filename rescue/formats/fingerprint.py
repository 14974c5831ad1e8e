"""The digest of a whole image: BLAKE3 of its logical bytes, holes read as zeros.

BLAKE3 is a standard hash that `b3sum` recomputes from a raw image, a restored disk, `zstd -dc
IMAGE.img.zst` or the raw file `qemu-img convert -O raw` makes of a qcow2, and it costs less
than half of SHA-256 per byte. Holes have to be hashed too: they are fed from one zero buffer
that is never written, so its pages all map the kernel's zero page and cost the hashing alone.

Older manifests recorded other digests, still verified: the "fingerprint" (one SHA-256 over the
SHA-256s of the image's 1 MiB chunks) and, older still, a plain SHA-256 of the image.

Whoever reads or writes an image in order hands its bytes to a `BackgroundHasher`, which hashes
them on a thread of its own, so reading and writing never wait for the hash unless its queue is
full (the hashes let go of the GIL on large inputs).
"""

from __future__ import annotations

import functools
import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

import blake3

from rescue.formats.base import ImageHasher, ImageReader

CHUNK = 1 << 20  # the unit of the older chunk fingerprint
READ_SIZE = 4 << 20
ZERO_PIECE = 16 << 20  # holes are hashed in pieces this large
_ZEROS = memoryview(bytes(ZERO_PIECE))  # never written: every page stays the shared zero page
_ZERO_CHUNK_DIGEST = hashlib.sha256(_ZEROS[:CHUNK]).digest()
COPY_SLOT = 1 << 20  # bytes that may change under the hasher are copied in slots this large
QUEUE_DEPTH = 16  # pieces handed to the hashing thread and not yet hashed


def _zero_pieces(length: int) -> Iterator[memoryview]:
    """`length` zeros as views of the one zero buffer."""
    for pos in range(0, length, ZERO_PIECE):
        yield _ZEROS[:min(ZERO_PIECE, length - pos)]


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


class _WholeImageHash:
    """One standard hash of every byte of the image, holes included."""

    def __init__(self, digest: _Hash) -> None:
        self._digest = digest

    def update(self, data: bytes | memoryview, /) -> None:
        self._digest.update(data)

    def zeros(self, length: int) -> None:
        for piece in _zero_pieces(length):
            self._digest.update(piece)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Blake3(_WholeImageHash):
    """BLAKE3 of an image's bytes, fed in order: what new manifests record. With `threads`
    above 1 each piece is hashed on that many threads (BLAKE3 is a tree of chunks): worth it
    where the cores are otherwise idle, as while a raw image is written, and a cost where
    they compress."""

    def __init__(self, threads: int = 1) -> None:
        super().__init__(blake3.blake3(max_threads=threads))


class Fingerprint:
    """The chunk fingerprint older manifests recorded: SHA-256 over the SHA-256s of 1 MiB
    chunks, so a whole zero chunk costs one precomputed digest. Only verifies them."""

    def __init__(self) -> None:
        self._chunks = hashlib.sha256()
        self._chunk = hashlib.sha256()  # the chunk being gathered
        self._filled = 0  # its bytes so far

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data).cast("B")
        while view:
            taken = min(CHUNK - self._filled, len(view))
            self._chunk.update(view[:taken])
            self._add(taken)
            view = view[taken:]

    def zeros(self, length: int) -> None:
        if self._filled:  # complete the chunk already started
            taken = min(CHUNK - self._filled, length)
            self.update(_ZEROS[:taken])
            length -= taken
        whole, rest = divmod(length, CHUNK)
        batch = 4096  # zero-chunk digests fed at once: a 1 TB hole stays small in memory
        for done in range(0, whole, batch):
            self._chunks.update(_ZERO_CHUNK_DIGEST * min(batch, whole - done))
        self.update(_ZEROS[:rest])

    def _add(self, added: int) -> None:
        self._filled += added
        if self._filled == CHUNK:
            self._chunks.update(self._chunk.digest())
            self._chunk, self._filled = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        total = self._chunks.copy()
        if self._filled:
            total.update(self._chunk.digest())
        return total.hexdigest()


class PlainSha256(_WholeImageHash):
    """SHA-256 of the whole image: what the oldest manifests recorded. Only verifies them."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha256())


_Piece = tuple[bytes | memoryview | None, int, Callable[[], None] | None]


class BackgroundHasher:
    """Feeds `hasher` on a thread of its own, in order, through a bounded queue.

    Large immutable `bytes` are hashed where they are, and so are large bytes handed with a
    `release`, untouched until it is called; anything else is copied into slots of its own
    (reused once hashed), small pieces gathered into one slot, so a caller may reuse its buffer
    at once and the thread is woken once per slot, not per piece. A hole is handed on as its
    length. `hexdigest` (once, at the end) waits for the rest; `close` drops what is queued.
    """

    def __init__(self, hasher: ImageHasher, depth: int = QUEUE_DEPTH) -> None:
        self._hasher = hasher
        self._queue: queue.Queue[_Piece | None] = queue.Queue(depth)
        self._slots: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._unmade = depth + 2  # slots not made yet: more than the queue holds
        self._slot: memoryview | None = None  # the slot being filled
        self._filled = 0  # its bytes so far
        self._error: BaseException | None = None
        self._dropped = False
        self._thread = threading.Thread(target=self._run, name="image-hash", daemon=True)
        self._thread.start()

    def update(self, data: bytes | memoryview, /,
               release: Callable[[], None] | None = None) -> None:
        view = memoryview(data).cast("B")
        if len(view) >= COPY_SLOT and (release is not None or isinstance(data, bytes)):
            self._flush()
            self._queue.put((data, 0, release))
            return
        while view:
            if self._slot is None:
                self._slot, self._filled = self._free_slot(), 0
            taken = min(COPY_SLOT - self._filled, len(view))
            self._slot[self._filled:self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == COPY_SLOT:
                self._flush()
        if release is not None:  # copied: the caller's bytes are free again
            release()

    def _free_slot(self) -> memoryview:
        """A free copy slot; waits for one only when all are in the queue."""
        if self._unmade and self._slots.empty():
            self._unmade -= 1
            return memoryview(bytearray(COPY_SLOT))
        return self._slots.get()

    def _flush(self) -> None:
        """Queue the slot being filled, if it holds anything."""
        if self._slot is not None and self._filled:
            slot, self._slot = self._slot, None
            self._queue.put((slot[:self._filled], 0, functools.partial(self._slots.put, slot)))

    def zeros(self, length: int) -> None:
        if length:
            self._flush()
            self._queue.put((None, length, None))

    def hexdigest(self) -> str:
        self._flush()
        self._end()
        if self._error is not None:
            raise self._error
        return self._hasher.hexdigest()

    def close(self) -> None:
        """Stop hashing: what is queued is let go of unhashed."""
        self._dropped = True
        self._end()

    def _end(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            data, zeros, release = piece
            try:
                if self._error is None and not self._dropped:
                    if data is None:
                        self._hasher.zeros(zeros)
                    else:
                        self._hasher.update(data)
            except BaseException as error:  # raised to the caller by hexdigest
                self._error = error
            finally:
                if release is not None:
                    release()


def chunk_digest(data: bytes | memoryview) -> bytes:
    """A chunk's own digest (BLAKE3), to find the chunks a target got wrong by reading it
    back: hashed where it is decoded or read, in parallel, and compared."""
    return blake3.blake3(data).digest()


@functools.lru_cache(maxsize=4)
def zero_chunk_digest(length: int) -> bytes:
    """`chunk_digest` of `length` zeros: every hole chunk of a restore has the same one."""
    hasher = blake3.blake3()
    for piece in _zero_pieces(length):
        hasher.update(piece)
    return hasher.digest()


def hash_image(reader: ImageReader, hasher: ImageHasher | None = None) -> str:
    """Hash the image's logical bytes (holes as zeros, never read), its BLAKE3 unless another
    hasher is given; reading and hashing overlap."""
    background = BackgroundHasher(hasher or Blake3())
    try:
        for offset, length, allocated in reader.extents():
            if not allocated:
                background.zeros(length)
                continue
            for pos in range(offset, offset + length, READ_SIZE):
                background.update(reader.read(pos, min(READ_SIZE, offset + length - pos)))
        return background.hexdigest()
    finally:
        background.close()
