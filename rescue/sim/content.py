"""The bytes of a simulated disk: mixed like a real disk's, cheap at any size, never misplaced
unseen.

Each 1 MiB chunk is random, text, zeros or a pattern. Building a fresh megabyte per chunk would
make reading a 1 TB model take hours, so chunks come from a small cached pool of buffers
(`base`), and every sector of a non-zero chunk is stamped with its chunk's number (eight hex
digits at bytes 8 to 16). Sectors of one chunk differ from each other through the pool's
bytes, and chunks through their stamps, so data written at the wrong place never compares equal.
Stamping is one strided copy of eight bytes per sector, so a source can hand out a view of its
own re-stamped copy of a pool buffer instead of a new megabyte.
"""

from __future__ import annotations

import random
from array import array
from functools import lru_cache

SECTOR = 512
CHUNK = 1 << 20
RANDOM_SLOTS = 4  # distinct random megabytes per seed
ZEROS, TEXT, PATTERN = RANDOM_SLOTS, RANDOM_SLOTS + 1, RANDOM_SLOTS + 2
_WORDS_PER_SECTOR = SECTOR // 8
_TEXT = "the quick brown fox jumps over the lazy dog; rescue keeps every readable byte. "


def slot(index: int, seed: int) -> int:
    """Which pool buffer chunk `index` is made of: random, text, zeros or a pattern."""
    kind = (index * 2654435761 + seed) % 7
    if kind in (0, 1):
        return (index * 40503 >> 4) % RANDOM_SLOTS
    return {2: TEXT, 3: TEXT, 4: ZEROS}.get(kind, PATTERN)


def base(number: int, seed: int) -> bytes:
    """Pool buffer `number` before stamping: 1 MiB whose sectors all differ; only the random
    ones depend on the seed."""
    return _base(number, seed if number < RANDOM_SLOTS else 0)


@lru_cache(maxsize=3 * RANDOM_SLOTS + 3)
def _base(number: int, seed: int) -> bytes:
    if number < RANDOM_SLOTS:
        return random.Random(number * 7919 + seed).randbytes(CHUNK)
    if number == ZEROS:
        return bytes(CHUNK)
    sectors = []
    for sector in range(CHUNK // SECTOR):
        if number == TEXT:
            line = f"chunk   ........ sector {sector:03x}: " + _TEXT * 7
            sectors.append(line[:SECTOR - 1].encode() + b"\n")
        else:
            pattern = bytearray(bytes(range(256)) * 2)
            pattern[16:18] = sector.to_bytes(2, "little")
            sectors.append(bytes(pattern))
    return b"".join(sectors)


def stamp(buffer: bytearray, index: int, first: int, last: int) -> None:
    """Write chunk `index`'s number into sectors [first, last) of `buffer`, which holds a whole
    chunk (or, with first = 0, the chunk's sectors from where `buffer` starts)."""
    words = memoryview(buffer).cast("Q")
    words[first * _WORDS_PER_SECTOR + 1:last * _WORDS_PER_SECTOR:_WORDS_PER_SECTOR] = \
        array("Q", b"%08x" % index) * (last - first)


def content(offset: int, length: int, seed: int = 0) -> bytes:
    """The true bytes of a simulated disk at [offset, offset+length)."""
    out = bytearray()
    while length > 0:
        index, within = divmod(offset, CHUNK)
        take = min(length, CHUNK - within)
        number = slot(index, seed)
        if number == ZEROS:
            out += bytes(take)
        else:
            first, last = within // SECTOR, -(-(within + take) // SECTOR)
            piece = bytearray(base(number, seed)[first * SECTOR:last * SECTOR])
            stamp(piece, index, 0, last - first)
            out += memoryview(piece)[within - first * SECTOR:within - first * SECTOR + take]
        offset += take
        length -= take
    return bytes(out)


class ContentView:
    """Hands out views of the true bytes without building them anew: a read inside one chunk
    gets a view of this object's own copy of the pool buffer, stamped where it is read. The view
    is valid until the next read, as the Reader protocol allows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._buffers: dict[int, bytearray] = {}

    def read(self, offset: int, length: int) -> memoryview:
        index, within = divmod(offset, CHUNK)
        if within + length > CHUNK:
            return memoryview(content(offset, length, self.seed))
        number = slot(index, self.seed)
        if number == ZEROS:
            return memoryview(base(ZEROS, self.seed))[:length]
        buffer = self._buffers.get(number)
        if buffer is None:
            buffer = self._buffers[number] = bytearray(base(number, self.seed))
        stamp(buffer, index, within // SECTOR, -(-(within + length) // SECTOR))
        return memoryview(buffer)[within:within + length]
