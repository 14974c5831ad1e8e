"""partclone's image format, version 2: what Clonezilla and Rescuezilla save a partition as.

An image is a 110-byte header (magic, partclone's version, the file system's size and block
size, how blocks are checksummed, a CRC of the header), the block bitmap (one bit per block,
least significant bit first) with a CRC of its own, then every used block in order, a checksum
after each group of `blocks_per_checksum` used blocks and after the last, shorter group.
Blocks the bitmap leaves out were not saved: they read as zeros. Only the CRC32 checksum mode
(partclone's default) and no checksum are verified here; the xxHash modes are refused rather
than read unchecked.

partclone's CRC32 is zlib's polynomial without zlib's final inversion, seeded with all ones:
`crc(data, seed) == ~zlib.crc32(data, ~seed)`, so a running zlib CRC gives it directly.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from rescue.errors import FormatError

MAGIC = b"partclone-image\0"
HEADER_SIZE = 110
_LAYOUT = struct.Struct("<16s14s4sH16sQQQQIIHHHHIBBI")
CHECKSUM_NONE, CHECKSUM_CRC32 = 0, 0x20
BITMAP_BITS = 1  # one bit per block; partclone's only bitmap mode in version 2
_ENDIAN = 0xC0DE
_ALL_ONES = 0xFFFFFFFF
BATCH_BLOCKS = 1024  # blocks read from the stream at once


class Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...


class ChecksumError(FormatError):
    """Saved data does not match its checksum: the archive is damaged there."""


@dataclass(frozen=True)
class Header:
    """What the header says about the saved file system."""

    file_system: str  # partclone's name for it: EXTFS, NTFS, FAT32, ...
    partclone_version: str
    device_size: int  # bytes of the file system's device when it was saved
    total_blocks: int
    used_blocks: int
    block_size: int
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed: bool  # the running checksum starts again after each one written

    @property
    def bitmap_size(self) -> int:
        return (self.total_blocks + 7) // 8


def sniff(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read_exact(stream: Stream, size: int, what: str) -> bytes:
    """`size` bytes of the stream, or a ChecksumError that says the image ends early."""
    parts: list[bytes] = []
    left = size
    while left:
        part = stream.read(left)
        if not part:
            raise ChecksumError(f"the partclone image ends early, inside {what}")
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def crc32(data: bytes | memoryview, seed: int = _ALL_ONES) -> int:
    """partclone's CRC32 of `data` continued from `seed`."""
    return zlib.crc32(data, seed ^ _ALL_ONES) ^ _ALL_ONES


def read_header(stream: Stream) -> tuple[Header, bytes]:
    """The header and the bitmap, both checked against their CRCs."""
    raw = read_exact(stream, HEADER_SIZE, "its header")
    if not sniff(raw):
        raise FormatError("not a partclone image: it lacks partclone's signature")
    (_, ptc_version, version, endian, fs, device_size, total, used, _used_bitmap, block_size,
     _features, _image_version, _cpu_bits, mode, checksum_size, per_checksum, reseed,
     bitmap_mode, header_crc) = _LAYOUT.unpack(raw)
    if version != b"0002":
        raise FormatError(f"partclone image version {version.decode('ascii', 'replace')} is "
                          "not read here, only version 0002 (partclone 0.3 and later); "
                          "restore it with partclone.restore")
    if endian != _ENDIAN:
        raise FormatError("partclone image written on a big-endian machine: not read here")
    if crc32(raw[:-4]) != header_crc:
        raise ChecksumError("the partclone image's header fails its checksum")
    if mode not in (CHECKSUM_NONE, CHECKSUM_CRC32):
        raise FormatError(f"partclone checksum mode {mode:#x} is not verified here, only "
                          "CRC32 and none; restore it with partclone.restore")
    if bitmap_mode != BITMAP_BITS:
        raise FormatError(f"partclone bitmap mode {bitmap_mode} is not read here")
    if not block_size or block_size % 512 or total * block_size < device_size - block_size:
        raise ChecksumError(f"the partclone image's header is inconsistent (block size "
                            f"{block_size}, {total} blocks, device of {device_size} bytes)")
    header = Header(_text(fs), _text(ptc_version), device_size, total, used, block_size, mode,
                    checksum_size if mode else 0, per_checksum if mode else 0, bool(reseed))
    bitmap = read_exact(stream, header.bitmap_size, "its bitmap")
    (bitmap_crc,) = struct.unpack("<I", read_exact(stream, 4, "its bitmap"))
    if crc32(bitmap) != bitmap_crc:
        raise ChecksumError("the partclone image's block bitmap fails its checksum")
    return header, bitmap


def used_runs(header: Header, bitmap: bytes) -> list[tuple[int, int]]:
    """(first block, count) of each run of blocks the bitmap marks saved, in order."""
    number = int.from_bytes(bitmap, "little") & ((1 << header.total_blocks) - 1)
    bits = f"{number:b}"[::-1]  # bit i is block i
    runs: list[tuple[int, int]] = []
    position = bits.find("1")
    while position >= 0:
        end = bits.find("0", position)
        end = len(bits) if end < 0 else end
        runs.append((position, end - position))
        position = bits.find("1", end)
    return runs


def blocks(stream: Stream, header: Header, runs: list[tuple[int, int]]
           ) -> Iterator[tuple[int, bytes, int]]:
    """(first block, data of consecutive blocks, checked) for every saved block in order, as
    it is read: `checked` is the block below which everything handed out so far has passed
    its checksum. A group's blocks are handed out before its checksum is read, so memory
    stays one batch whatever the group's size; a last item with no data closes the image."""
    size = header.block_size
    per_check = header.blocks_per_checksum if header.checksum_mode else 0
    running, in_group, group_first, last = _ALL_ONES, 0, 0, 0
    for first, count in runs:
        done = 0
        while done < count:
            take = min(count - done, BATCH_BLOCKS, per_check - in_group if per_check else count)
            data = read_exact(stream, take * size, f"block {first + done}")
            last = first + done + take
            if not per_check:
                yield first + done, data, last
            else:
                group_first = group_first if in_group else first + done
                running = crc32(data, running)
                in_group += take
                if in_group == per_check:
                    _check(stream, header, running, group_first, last)
                    in_group = 0
                    running = _ALL_ONES if header.reseed else running
                yield first + done, data, group_first if in_group else last
            done += take
    if in_group:
        _check(stream, header, running, group_first, last)
    if stream.read(1):
        raise ChecksumError("the partclone image goes on past its last block")
    yield last, b"", header.total_blocks


def _check(stream: Stream, header: Header, running: int, first: int, end: int) -> None:
    """The checksum saved after blocks [first, end), compared with theirs."""
    saved = read_exact(stream, header.checksum_size, f"the checksum after block {end - 1}")
    if int.from_bytes(saved[:4], "little") != running:
        size = header.block_size
        raise ChecksumError(f"saved blocks {first} to {end - 1} (bytes {first * size:#x} to "
                            f"{end * size - 1:#x} of the file system) fail their checksum")


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("ascii", "replace")
