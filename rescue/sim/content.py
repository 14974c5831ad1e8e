"""The bytes of a simulated disk: mixed like a real disk's, cheap at any size, never misplaced
unseen.

Each 1 MiB chunk is random, text, zeros or a pattern; the kinds repeat every 7 chunks. Building
a fresh megabyte per chunk would make reading a 1 TB model take hours, so chunk `i` is made of
the cached megabyte of its place in that period (`base(i % 7)`), and every sector of a non-zero
chunk is stamped with its chunk's number (eight hex digits at bytes 8 to 16). Sectors of one
chunk differ through the base's bytes, and chunks through their stamps, so data written at the
wrong place never compares equal. A source keeps its own copy of the period (plus its first
chunk again at the end, so a read across any one boundary is contiguous) and hands out views of
it, stamped where they are read: one strided copy of eight bytes per sector.
"""

from __future__ import annotations

import random
from array import array
from functools import lru_cache

SECTOR = 512
CHUNK = 1 << 20
PERIOD = 7  # (index * 2654435761 + seed) % 7 repeats every 7 chunks
_SECTORS = CHUNK // SECTOR
_WORDS_PER_SECTOR = SECTOR // 8
_TEXT = "the quick brown fox jumps over the lazy dog; rescue keeps every readable byte. "


def kind(index: int, seed: int) -> str:
    """What chunk `index` holds: random, text, zeros or pattern, as a real disk mixes them."""
    return ("random", "random", "text", "text", "zeros", "pattern", "pattern")[
        (index * 2654435761 + seed) % PERIOD]


@lru_cache(maxsize=3 * PERIOD)
def base(position: int, seed: int) -> bytes:
    """The megabyte of chunks at `position` of the period, before stamping; its sectors all
    differ (but for zeros)."""
    made = kind(position, seed)
    if made == "random":
        return random.Random(position * 7919 + seed).randbytes(CHUNK)
    if made == "zeros":
        return bytes(CHUNK)
    sectors = []
    for sector in range(_SECTORS):
        if made == "text":
            line = f"chunk   ........ sector {sector:03x}: " + _TEXT * 7
            sectors.append(line[:SECTOR - 1].encode() + b"\n")
        else:
            pattern = bytearray(bytes(range(256)) * 2)
            pattern[16:18] = sector.to_bytes(2, "little")
            sectors.append(bytes(pattern))
    return b"".join(sectors)


def stamp(words: array, index: int, first: int, last: int) -> None:
    """Write chunk `index`'s number into sectors [first, last) of `words` (bytes as 8-byte
    words, sectors counted from the start); an array's strided copy is the fastest there is."""
    words[first * _WORDS_PER_SECTOR + 1:last * _WORDS_PER_SECTOR:_WORDS_PER_SECTOR] = \
        array("Q", b"%08x" % index) * (last - first)


def content(offset: int, length: int, seed: int = 0) -> bytes:
    """The true bytes of a simulated disk at [offset, offset+length)."""
    out = bytearray()
    while length > 0:
        index, within = divmod(offset, CHUNK)
        take = min(length, CHUNK - within)
        if kind(index, seed) == "zeros":
            out += bytes(take)
        else:
            first, last = within // SECTOR, -(-(within + take) // SECTOR)
            piece = array("Q", base(index % PERIOD, seed)[first * SECTOR:last * SECTOR])
            stamp(piece, index, 0, last - first)
            out += memoryview(piece).cast("B")[within - first * SECTOR:
                                               within - first * SECTOR + take]
        offset += take
        length -= take
    return bytes(out)


class ContentView:
    """Hands out views of the true bytes without building them anew: a read spanning at most
    two chunks gets a view of this object's own copy of the period, stamped where it is read.
    The view is valid until the next read, as the Reader protocol allows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._period: array | None = None  # built at the first read: 8 MiB

    def read(self, offset: int, length: int) -> memoryview:
        if length <= 0:
            return memoryview(b"")
        first, last = offset // CHUNK, (offset + length - 1) // CHUNK
        position = first % PERIOD
        if position + last - first > PERIOD:  # past the period's copy of its first chunk
            return memoryview(content(offset, length, self.seed))
        period = self._period
        if period is None:
            period = self._period = array("Q", b"".join(
                base(p % PERIOD, self.seed) for p in range(PERIOD + 1)))
        for index in range(first, last + 1):
            if kind(index, self.seed) != "zeros":
                begin = max(offset - index * CHUNK, 0)
                end = min(offset + length - index * CHUNK, CHUNK)
                place = (position + index - first) * _SECTORS
                stamp(period, index, place + begin // SECTOR, place - (-end // SECTOR))
        start = position * CHUNK + offset % CHUNK
        return memoryview(period).cast("B")[start:start + length]
