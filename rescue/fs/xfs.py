"""XFS on disk, as much as explore needs beside libfsxfs: where each inode lies, and the
names a directory holds even when the inodes they point to cannot be read (libfsxfs leaves
such a name out of its listing, so a file whose inode is damaged would vanish unnoticed).

Directories of every format are read: short form (inside the inode), block, leaf and node
(data blocks found through the inode's extents) and B-tree (extents found through its
block-map tree), on version 4 and version 5 file systems.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rescue.errors import FormatError

SUPERBLOCK_SIZE = 512
# (offset, length, what) of the volume -> bytes; a FormatError where they cannot be read.
Read = Callable[[int, int, str], bytes]

_VERSION_5 = 5
_FEATURES2_FTYPE = 0x200  # version 4: directory entries carry the file type
_INCOMPAT_FTYPE = 0x1  # version 5: the same
_INODE_MAGIC = b"IN"
_CORE_V2, _CORE_V3 = 100, 176  # where an inode's data fork begins
_FLAGS2_NREXT64 = 1 << 4  # the inode counts its extents in 64 bits
_FORMAT_LOCAL, _FORMAT_EXTENTS, _FORMAT_BTREE = 1, 2, 3
_DATA_SPACE = 32 << 30  # a directory's names lie below this offset; its indexes above
_BLOCK_MAGICS = {b"XDB3": 64, b"XD2B": 16}  # single-block directory: header size
_DATA_MAGICS = {b"XDD3": 64, b"XD2D": 16}
_BMAP_MAGICS = {b"BMA3": 72, b"BMAP": 24}
_UNUSED = 0xFFFF
_MAX_TREE_DEPTH = 8
_FILE_TYPES = {1: "file", 2: "dir", 3: "char", 4: "block", 5: "fifo", 6: "socket",
               7: "symlink"}


@dataclass(frozen=True)
class DirectoryName:
    name: bytes
    inode: int
    kind: str | None  # from the entry's file type where the file system records one


@dataclass(frozen=True)
class Extent:
    logical: int  # in blocks of the file
    start: int  # byte offset in the volume
    blocks: int


@dataclass(frozen=True)
class XfsGeometry:
    block_size: int
    ag_blocks: int
    inode_size: int
    inodes_per_block_log: int
    ag_block_log: int
    directory_block_size: int
    version: int
    file_types: bool  # directory entries carry a file type byte

    @classmethod
    def parse(cls, superblock: bytes) -> XfsGeometry:
        if len(superblock) < SUPERBLOCK_SIZE or superblock[:4] != b"XFSB":
            raise FormatError("no XFS superblock")
        block_size, = struct.unpack_from(">I", superblock, 4)
        ag_blocks, = struct.unpack_from(">I", superblock, 84)
        version = struct.unpack_from(">H", superblock, 100)[0] & 0xF
        inode_size, = struct.unpack_from(">H", superblock, 104)
        inodes_per_block_log, ag_block_log = superblock[123], superblock[124]
        features2, = struct.unpack_from(">I", superblock, 200)
        incompatible, = struct.unpack_from(">I", superblock, 216)
        if not (_power_of_two(block_size, 512, 65536) and _power_of_two(inode_size, 256, 2048)
                and 0 < ag_blocks <= 1 << ag_block_log <= 1 << 31
                and inode_size << inodes_per_block_log == block_size):
            raise FormatError("the XFS superblock's geometry is impossible")
        return cls(block_size, ag_blocks, inode_size, inodes_per_block_log, ag_block_log,
                   block_size << min(superblock[192], 8), version,
                   bool(incompatible & _INCOMPAT_FTYPE if version == _VERSION_5
                        else features2 & _FEATURES2_FTYPE))

    def inode_offset(self, number: int) -> int:
        """Where inode `number` lies in the volume: its number spells its allocation group,
        the block in that group and its place in the block."""
        in_group_bits = self.ag_block_log + self.inodes_per_block_log
        group, in_group = number >> in_group_bits, number & ((1 << in_group_bits) - 1)
        block = in_group >> self.inodes_per_block_log
        place = in_group & ((1 << self.inodes_per_block_log) - 1)
        return self.block_offset(group << self.ag_block_log | block) + place * self.inode_size

    def block_offset(self, block: int) -> int:
        """Where file-system block `block` (group and block in it) lies in the volume."""
        group, in_group = block >> self.ag_block_log, block & ((1 << self.ag_block_log) - 1)
        return (group * self.ag_blocks + in_group) * self.block_size


def _power_of_two(value: int, low: int, high: int) -> bool:
    return low <= value <= high and not value & (value - 1)


class XfsDirectories:
    """The names in XFS directories, read from the on-disk structures alone."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self.geometry = XfsGeometry.parse(read(0, SUPERBLOCK_SIZE, "the XFS superblock"))

    def names(self, directory: int) -> Iterator[DirectoryName]:
        """The names in directory inode `directory`, "." and ".." left out."""
        inode = self._inode(directory)
        version, layout = inode[4], inode[5]
        fork = inode[_CORE_V3 if version >= 3 else _CORE_V2:]
        forkoff = inode[82]
        if forkoff:
            fork = fork[:forkoff * 8]
        size, = struct.unpack_from(">Q", inode, 56)
        if layout == _FORMAT_LOCAL:
            yield from self._short_form(fork)
            return
        if layout == _FORMAT_EXTENTS:
            extents = _extent_records(fork, _extent_count(inode, version), self.geometry)
        elif layout == _FORMAT_BTREE:
            extents = self._tree_extents(fork)
        else:
            raise FormatError(f"directory inode {directory} has an unknown data layout")
        yield from self._data_blocks(sorted(extents, key=lambda e: e.logical),
                                     min(size, _DATA_SPACE))

    def _inode(self, number: int) -> bytes:
        geometry = self.geometry
        data = self._read(geometry.inode_offset(number), geometry.inode_size, f"inode {number}")
        if data[:2] != _INODE_MAGIC:
            raise FormatError(f"inode {number} is not an inode")
        return data

    def _short_form(self, fork: bytes) -> Iterator[DirectoryName]:
        """A small directory kept inside its inode: a count, the parent, then the names."""
        if len(fork) < 2:
            return
        count, wide = fork[0], fork[1]
        number_size = 8 if wide else 4
        position = 2 + number_size
        for _ in range(count):
            if position >= len(fork):
                return
            length = fork[position]
            name = fork[position + 3:position + 3 + length]
            position += 3 + length
            kind = None
            if self.geometry.file_types:
                kind = _FILE_TYPES.get(fork[position]) if position < len(fork) else None
                position += 1
            if not length or position + number_size > len(fork):
                return
            number = int.from_bytes(fork[position:position + number_size], "big")
            position += number_size
            yield DirectoryName(name, number, kind)

    def _tree_extents(self, fork: bytes) -> list[Extent]:
        """The extents of a B-tree file: its root in the inode points to blocks of keys and
        pointers, down to leaves of extent records."""
        if len(fork) < 4:
            return []
        level, count = struct.unpack_from(">HH", fork)
        room = (len(fork) - 4) // 16
        pointers = _pointers(fork, 4 + room * 8, min(count, room))
        extents: list[Extent] = []
        self._tree_level(pointers, level - 1, extents, set())
        return extents

    def _tree_level(self, pointers: list[int], level: int, extents: list[Extent],
                    visited: set[int]) -> None:
        """Each block once: a damaged tree whose pointers meet or loop costs no more reads
        than it has blocks."""
        geometry = self.geometry
        if level < 0 or level > _MAX_TREE_DEPTH:
            raise FormatError("an XFS block-map tree is deeper than any can be")
        for pointer in pointers:
            if pointer in visited:
                continue
            visited.add(pointer)
            block = self._read(geometry.block_offset(pointer), geometry.block_size,
                               f"block-map block {pointer}")
            header = _BMAP_MAGICS.get(block[:4])
            if header is None:
                raise FormatError(f"block-map block {pointer} is not one")
            count = struct.unpack_from(">H", block, 6)[0]
            room = (geometry.block_size - header) // 16
            if level == 0:
                extents += _extent_records(block[header:], min(count, room), geometry)
            else:
                self._tree_level(_pointers(block, header + room * 8, min(count, room)),
                                 level - 1, extents, visited)

    def _data_blocks(self, extents: list[Extent], size: int) -> Iterator[DirectoryName]:
        """The names in each directory block of the data space, whichever extents hold it."""
        geometry = self.geometry
        per_block = geometry.directory_block_size // geometry.block_size
        starts = [extent.logical for extent in extents]
        seen: set[int] = set()
        for extent in extents:
            first = extent.logical // per_block
            last = (extent.logical + extent.blocks - 1) // per_block
            for index in range(first, last + 1):
                if index in seen or index * geometry.directory_block_size >= size:
                    continue
                seen.add(index)
                block = self._directory_block(extents, starts, index * per_block, per_block)
                if block is not None:
                    yield from self._block_names(block)

    def _directory_block(self, extents: list[Extent], starts: list[int], logical: int,
                         count: int) -> bytes | None:
        """Blocks logical..logical+count of the file (`extents` in file order, `starts` their
        first blocks), or None where one is not mapped."""
        geometry = self.geometry
        pieces = []
        for block in range(logical, logical + count):
            at = bisect.bisect_right(starts, block) - 1
            if at < 0 or block >= extents[at].logical + extents[at].blocks:
                return None
            extent = extents[at]
            offset = extent.start + (block - extent.logical) * geometry.block_size
            pieces.append(self._read(offset, geometry.block_size, f"directory block {block}"))
        return b"".join(pieces)

    def _block_names(self, block: bytes) -> Iterator[DirectoryName]:
        magic = block[:4]
        if magic in _BLOCK_MAGICS:  # one block holds the names and, at its end, their index
            position = _BLOCK_MAGICS[magic]
            index_entries, = struct.unpack_from(">I", block, len(block) - 8)
            end = len(block) - 8 - 8 * index_entries
        elif magic in _DATA_MAGICS:
            position, end = _DATA_MAGICS[magic], len(block)
        else:
            raise FormatError("an XFS directory block is not one")
        while position + 8 <= end:
            if struct.unpack_from(">H", block, position)[0] == _UNUSED:
                length, = struct.unpack_from(">H", block, position + 2)
                if length < 8 or length % 8:
                    raise FormatError("an XFS directory block's free space is impossible")
                position += length
                continue
            number, length = struct.unpack_from(">QB", block, position)
            name = block[position + 9:position + 9 + length]
            kind = None
            if self.geometry.file_types:
                kind = _FILE_TYPES.get(block[position + 9 + length]) \
                    if position + 9 + length < end else None
            used = 9 + length + self.geometry.file_types + 2  # with its tag
            position += (used + 7) // 8 * 8
            if not length or position > end:
                raise FormatError("an XFS directory entry runs past its block")
            if name not in (b".", b".."):
                yield DirectoryName(name, number, kind)


def _extent_count(inode: bytes, version: int) -> int:
    flags2, = struct.unpack_from(">Q", inode, 120) if version >= 3 else (0,)
    if flags2 & _FLAGS2_NREXT64:
        return int(struct.unpack_from(">Q", inode, 24)[0])
    return int(struct.unpack_from(">I", inode, 76)[0])


def _extent_records(data: bytes, count: int, geometry: XfsGeometry) -> list[Extent]:
    """Packed 128-bit extent records: an unwritten flag, file offset, start block, length."""
    extents = []
    for position in range(0, min(count, len(data) // 16) * 16, 16):
        high, low = struct.unpack_from(">QQ", data, position)
        if high >> 63:
            continue  # preallocated, never written: no names there
        logical = (high & ((1 << 63) - 1)) >> 9
        start = ((high & 0x1FF) << 43) | (low >> 21)
        extents.append(Extent(logical, geometry.block_offset(start), low & ((1 << 21) - 1)))
    return extents


def _pointers(data: bytes, at: int, count: int) -> list[int]:
    return [struct.unpack_from(">Q", data, at + 8 * number)[0] for number in range(count)
            if at + 8 * number + 8 <= len(data)]
