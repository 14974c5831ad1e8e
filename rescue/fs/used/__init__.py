"""Used-block maps: which bytes of a partition a file system needs, and which are metadata.

Each native parser (ext, FAT, exFAT, NTFS) opens a file system with one class that knows its
layout; the same class answers "which blocks are used", "where is the metadata" and "which
file owns which bytes" (for `rescue report`). Anything a parser cannot trust falls back to the
whole partition with a warning: imaging too much is slow, imaging too little loses data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from rescue.errors import FormatError
from rescue.fs.partitions import READ_ERRORS
from rescue.io.reader import Reader

Extent = tuple[int, int]  # (offset, length) in bytes from the start of the file system
# Whether [offset, offset+length) holds data read from the disk (not a bad or unread area).
Readability = Callable[[int, int], bool]


def always_readable(offset: int, length: int) -> bool:
    return True


@dataclass(frozen=True)
class FileRecord:
    """One file as the file system describes it, for mapping damage to names.

    `size` is None when the file's own metadata (inode, MFT record) could not be read: the
    file is known only by its directory entry, so all of it counts as lost.
    """

    path: str
    size: int | None
    data: tuple[Extent, ...]  # where the file's bytes are, clipped to its size
    metadata: tuple[Extent, ...]  # its inode/record, extent-tree or indirect blocks, entry
    complete: bool = True  # False when part of its block map was unreadable
    # where each extent of `data` starts within the file; None: back to back from byte 0
    # (a sparse file's holes take no extent, so its extents are not back to back)
    offsets: tuple[int, ...] | None = None
    is_dir: bool = False

    def pieces(self) -> Iterator[tuple[int, int, int]]:
        """(offset in the file, offset in the file system, length) of each data extent."""
        offsets = self.offsets
        position = 0
        for index, (where, length) in enumerate(self.data):
            start = position if offsets is None else offsets[index]
            yield start, where, length
            position = start + length


class FileSystem(Protocol):
    """What every native parser provides."""

    fs_type: str
    size: int  # bytes the file system spans
    warnings: tuple[str, ...]  # what the parser could not trust and worked around

    def used(self) -> list[Extent]: ...

    def metadata(self) -> list[Extent]: ...

    def files(self, readable: Readability = always_readable) -> Iterator[FileRecord]: ...


@dataclass(frozen=True)
class UsedMap:
    """The result for one partition (offsets relative to its start)."""

    fs_type: str | None  # "ext4", "vfat", "exfat", "ntfs", "minix", ... or None if unknown
    size: int
    used: tuple[Extent, ...]
    metadata: tuple[Extent, ...]  # read first in metadata-first order; inside `used`
    method: str  # "native", "partclone" or "whole"
    warnings: tuple[str, ...] = ()

    @property
    def used_bytes(self) -> int:
        return sum(length for _, length in self.used)


def normalize(extents: Iterable[Extent], limit: int, align: int = 1) -> tuple[Extent, ...]:
    """Sorted, merged extents clipped to [0, limit), widened to `align` boundaries."""
    spans = sorted((off // align * align, -(-(off + length) // align) * align)
                   for off, length in extents if length > 0)
    merged: list[list[int]] = []
    for begin, end in spans:
        begin, end = max(begin, 0), min(end, limit)
        if begin >= end:
            continue
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return tuple((begin, end - begin) for begin, end in merged)


def bitmap_runs(bitmap: bytes, bits: int, chunk: int = 4096) -> Iterator[tuple[int, int]]:
    """(first, count) runs of set bits among the first `bits` bits, least significant first.

    Works a chunk at a time so a large fragmented bitmap never costs big-integer shifts."""
    run_start, run_end = 0, 0
    for base in range(0, (bits + 7) // 8, chunk):
        piece = bitmap[base:base + chunk]
        if not piece.strip(b"\0"):
            continue
        width = min(len(piece) * 8, bits - base * 8)
        value = int.from_bytes(piece, "little") & ((1 << width) - 1)
        pos = base * 8
        while value:
            zeros = (value & -value).bit_length() - 1
            value >>= zeros
            pos += zeros
            ones = (~value & (value + 1)).bit_length() - 1
            if pos == run_end:
                run_end += ones
            else:
                if run_end > run_start:
                    yield run_start, run_end - run_start
                run_start, run_end = pos, pos + ones
            value >>= ones
            pos += ones
    if run_end > run_start:
        yield run_start, run_end - run_start


def follow_chain(fat: Sequence[int], first: int, clusters: int) -> tuple[list[int], int]:
    """The clusters of a FAT or exFAT chain from `first`, and the entry that stopped the walk.

    The walk stops at a loop or at any entry outside the data clusters [2, clusters + 2), so a
    damaged table can neither hang nor point outside the volume; whether that last entry is a
    proper end of chain is the caller's judgement, as the end markers differ by FAT type."""
    chain: list[int] = []
    cluster = first
    seen: set[int] = set()
    while 2 <= cluster < clusters + 2 and cluster not in seen:
        seen.add(cluster)
        chain.append(cluster)
        cluster = fat[cluster]
    return chain, cluster


def cluster_extents(offsets: Iterable[int], cluster_size: int, limit: int | None = None
                    ) -> list[Extent]:
    """Byte extents of clusters at `offsets` in the chain's order (the file's), neighbours
    merged, clipped to `limit` bytes: a fragmented file's last cluster need not be its
    highest, so the order is kept."""
    extents: list[Extent] = []
    remaining = limit
    for offset in offsets:
        length = cluster_size if remaining is None else min(cluster_size, remaining)
        if length <= 0:
            break
        if extents and sum(extents[-1]) == offset:
            extents[-1] = (extents[-1][0], extents[-1][1] + length)
        else:
            extents.append((offset, length))
        if remaining is not None:
            remaining -= length
    return extents


def checked_read(reader: Reader, offset: int, length: int, what: str) -> bytes:
    """Exactly `length` bytes or a FormatError naming `what`: metadata past the end or on an
    unreadable sector makes the file system untrustworthy, never a crash."""
    if offset < 0 or length < 0 or offset + length > reader.size:
        raise FormatError(f"{what} lies outside the file system (byte {offset})")
    try:
        data = bytes(reader.read(offset, length))
    except FormatError:
        raise
    except READ_ERRORS as exc:
        raise FormatError(f"cannot read {what} at byte {offset}: {exc}") from None
    if len(data) != length:
        raise FormatError(f"{what} is truncated at byte {offset}")
    return data
