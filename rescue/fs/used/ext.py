"""ext2/3/4: used blocks from the block bitmaps, metadata from the group layout, files by
walking directories from the root inode.

Handles flex_bg (bitmaps and inode tables of many groups packed together), uninitialised
groups (BLOCK_UNINIT bitmaps are never read: only the group's own metadata is used), meta_bg,
sparse_super and sparse_super2 backups, 64-bit descriptors, bigalloc clusters, extents, ext2/3
indirect blocks and inline-data directories.

A damaged primary superblock or descriptor table is replaced by a backup copy, as `e2fsck -b`
does: the copies mke2fs leaves in groups 1, 3^n, 5^n, 7^n (and the last group) are probed for
every block size, and the first one that agrees with its own location is used. Backup
descriptors carry the flags of the day they were written, so BLOCK_UNINIT is then ignored and
every bitmap is read: an uninitialised bitmap can only add used blocks.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from rescue.errors import FormatError
from rescue.fs.signatures import BY_NAME, SIGNATURES, in_bytes
from rescue.fs.used import (
    Extent,
    FileRecord,
    Readability,
    always_readable,
    bitmap_runs,
    checked_read,
)
from rescue.io.reader import Reader

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
# Where the table puts ext's magic in the volume, which is where it lies in every superblock
# copy relative to the copy's start plus SUPERBLOCK_OFFSET.
_MAGIC_AT, _MAGIC = BY_NAME["ext"].marks[0]
SB_GROUP_NR = 0x5A  # u16: the group a superblock copy was written to
SB_UUID = slice(0x68, 0x78)
SB_CHECKSUM = 0x3FC  # crc32c of the bytes before it, with metadata_csum

COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
INCOMPAT_FLEX_BG = 0x200
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

BG_BLOCK_UNINIT = 0x2
INODE_FLAG_EXTENTS = 0x80000
INODE_FLAG_INLINE_DATA = 0x10000000
EXTENT_MAGIC = 0xF30A
ROOT_INODE = 2
MAX_EXTENT_DEPTH = 5
INODE_BASE_SIZE = 128  # the fields every inode has; i_extra_isize and in-inode xattrs follow
I_BLOCK = slice(40, 100)
FAST_SYMLINK = 60  # a shorter symlink target lives in i_block itself

# Backups are probed where mke2fs puts them with its default group size (a bitmap block's
# bits, at most 65528 blocks), for every block size e2fsck tries: 1 KiB to 64 KiB.
BACKUP_BLOCK_SIZES = tuple(1024 << shift for shift in range(7))
MAX_BLOCKS_PER_GROUP = 65528

XATTR_MAGIC = 0xEA020000
XATTR_INDEX_SYSTEM = 7
XATTR_ENTRY = struct.Struct("<BBHIII")  # name length, name index, value offset, value inode,
#                                         value size, hash; the name follows, padded to 4
EXTENT_HEADER = struct.Struct("<HHHHI")  # magic, entries, max, depth, generation
EXTENT_LEAF = struct.Struct("<IHHI")  # logical block, length, start hi, start lo
EXTENT_INDEX = struct.Struct("<IIHH")  # logical block, leaf lo, leaf hi, unused
DIR_ENTRY = struct.Struct("<IHBB")  # inode, record length, name length, file type


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = crc >> 1 ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32C without the final inversion, the way ext4 stores its checksums."""
    table = CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ crc >> 8
    return crc


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "little")


@dataclass(frozen=True)
class Inode:
    number: int
    offset: int  # byte offset of the on-disk inode
    mode: int
    size: int
    flags: int
    raw: bytes  # the whole on-disk inode, in-inode extended attributes included

    @property
    def data_inside(self) -> bool:
        """Whether the content lives in the inode itself: inline data, or a symlink target
        short enough for i_block (a "fast" symlink)."""
        return bool(self.flags & INODE_FLAG_INLINE_DATA) or (
            stat.S_ISLNK(self.mode) and self.size < FAST_SYMLINK
            and not self.flags & INODE_FLAG_EXTENTS)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def block(self) -> bytes:
        """i_block: extent tree root, block map or the first 60 bytes of inline data."""
        return self.raw[I_BLOCK]

    def inline_tail(self) -> tuple[int, bytes]:
        """Inline data past the first 60 bytes: the in-inode attribute "system.data", with
        its byte offset on disk; (0, b"") when there is none or the attribute area is damaged.
        Value offsets count from the first entry, after the 4-byte header."""
        raw = self.raw
        if len(raw) < INODE_BASE_SIZE + 2:
            return 0, b""
        header = INODE_BASE_SIZE + _u16(raw, INODE_BASE_SIZE)
        if header + 4 > len(raw) or _u32(raw, header) != XATTR_MAGIC:
            return 0, b""
        first = pos = header + 4
        while pos + XATTR_ENTRY.size <= len(raw) and _u32(raw, pos):
            name_len, index, value_offset, value_inode, value_size, _ = \
                XATTR_ENTRY.unpack_from(raw, pos)
            name = raw[pos + XATTR_ENTRY.size:pos + XATTR_ENTRY.size + name_len]
            if index == XATTR_INDEX_SYSTEM and name == b"data" and not value_inode:
                start = first + value_offset
                if start + value_size > len(raw):
                    return 0, b""
                return self.offset + start, raw[start:start + value_size]
            pos += (XATTR_ENTRY.size + name_len + 3) & ~3
        return 0, b""


@dataclass(frozen=True)
class BlockMap:
    """Where an inode's data lives: (logical block, physical block, count) runs, the blocks of
    the map itself (extent-tree or indirect blocks), and whether all of it could be read."""

    runs: tuple[tuple[int, int, int], ...]
    map_blocks: tuple[int, ...]
    complete: bool


def _try_read(reader: Reader, offset: int, length: int) -> bytes | None:
    try:
        return checked_read(reader, offset, length, "ext superblock copy")
    except FormatError:
        return None


def _checksum_ok(sb: bytes) -> bool:
    return not _u32(sb, 0x64) & RO_COMPAT_METADATA_CSUM \
        or _u32(sb, SB_CHECKSUM) == crc32c(sb[:SB_CHECKSUM])


def backup_superblocks(reader: Reader) -> Iterator[tuple[int, int, bytes]]:
    """(group, block, superblock) of every backup copy found at the usual places whose magic,
    block size, group size, group number and checksum agree with where it was found."""
    # What replaces an ext file system in place (encryption, BitLocker, LVM, swap, md RAID):
    # with one of these at the start, superblock copies further on are leftovers.
    head = in_bytes(_try_read(reader, 0, min(8192, reader.size)) or b"")
    if any(signature.found(head) for signature in SIGNATURES if signature.container):
        return
    for block_size in BACKUP_BLOCK_SIZES:
        per_group = min(8 * block_size, MAX_BLOCKS_PER_GROUP)
        first = 1 if block_size == 1024 else 0
        blocks = reader.size // block_size
        if blocks <= first + per_group:
            continue
        last = (blocks - first - 1) // per_group
        groups = {1, last}
        for base in (3, 5, 7):
            power = base
            while power <= last:
                groups.add(power)
                power *= base
        for group in sorted(groups):
            block = first + group * per_group
            data = _try_read(reader, block * block_size, SUPERBLOCK_SIZE)
            if data is not None and _has_magic(data) \
                    and _u32(data, 0x18) == block_size.bit_length() - 11 \
                    and _u32(data, 0x20) == per_group and _u32(data, 0x14) == first \
                    and _u16(data, SB_GROUP_NR) == group & 0xFFFF and _checksum_ok(data):
                yield group, block, data


def _has_magic(superblock: bytes) -> bool:
    """Whether a superblock (the primary or a backup, read from its own start) has ext's magic."""
    at = _MAGIC_AT - SUPERBLOCK_OFFSET
    return superblock[at:at + len(_MAGIC)] == _MAGIC


def has_backup_superblock(reader: Reader) -> bool:
    """Whether an ext file system whose primary superblock is lost can be opened from a copy."""
    return next(backup_superblocks(reader), None) is not None


class ExtFS:
    """One ext2/3/4 file system read through `reader` (offsets relative to its start)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.warnings: tuple[str, ...] = ()  # set when a backup stood in for the primary
        self.backup: tuple[int, int] | None = None  # (group, block) of the copy in use
        try:
            primary = checked_read(reader, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, "ext superblock")
        except FormatError as exc:
            self._recover("superblock", exc, None)
            return
        # a primary that still has its magic names the file system its copies must belong to
        uuid = primary[SB_UUID] if _has_magic(primary) else None
        if uuid is not None and _u32(primary, 0x60) & INCOMPAT_JOURNAL_DEV:
            raise FormatError("ext external journal device, not a file system")
        try:
            self._use_superblock(primary)
        except FormatError as exc:
            self._recover("superblock", exc, uuid)
            return
        try:
            self._descriptors = self._read_descriptors(self._superblock_block(0))
        except FormatError as exc:
            self._recover("group descriptors", exc, uuid)

    def _use_superblock(self, sb: bytes) -> None:
        """Take the geometry from `sb`, or raise FormatError if it is impossible."""
        if not _has_magic(sb):
            raise FormatError("no ext2/3/4 superblock magic")
        u32 = lambda off: _u32(sb, off)  # noqa: E731
        u16 = lambda off: _u16(sb, off)  # noqa: E731
        self.compat, self.incompat, self.ro_compat = u32(0x5C), u32(0x60), u32(0x64)
        log_block = u32(0x18)
        if log_block > 6:
            raise FormatError(f"ext superblock damaged: block size 2^{10 + log_block}")
        self.block_size = 1024 << log_block
        bigalloc = bool(self.ro_compat & RO_COMPAT_BIGALLOC)
        log_cluster = u32(0x1C) if bigalloc else log_block
        if not log_block <= log_cluster <= log_block + 16:
            raise FormatError("ext superblock damaged: bad cluster size")
        self.cluster_size = 1024 << log_cluster
        self.blocks = u32(0x04) | (u32(0x150) << 32 if self.incompat & INCOMPAT_64BIT else 0)
        self.first_data_block = u32(0x14)
        self.blocks_per_group = u32(0x20)
        self.clusters_per_group = u32(0x24) if bigalloc else self.blocks_per_group
        self.inodes_per_group = u32(0x28)
        self.inodes = u32(0x00)
        rev = u32(0x4C)
        self.inode_size = u16(0x58) if rev >= 1 else INODE_BASE_SIZE
        self.desc_size = u16(0xFE) if self.incompat & INCOMPAT_64BIT else 32
        self.reserved_gdt = u16(0xCE)
        self.first_meta_bg = u32(0x104)
        self.backup_groups = (u32(0x24C), u32(0x250))
        self.journal_inode = u32(0xE0) if self.compat & COMPAT_HAS_JOURNAL else 0
        if (self.blocks_per_group == 0 or self.inodes_per_group == 0
                or self.blocks <= self.first_data_block or self.desc_size < 32
                or self.desc_size > self.block_size or self.inode_size < INODE_BASE_SIZE
                or self.inode_size > self.block_size
                or self.clusters_per_group > 8 * self.block_size):
            raise FormatError("ext superblock damaged: impossible geometry")
        self.size = self.blocks * self.block_size
        if self.size > self.reader.size:
            raise FormatError(f"ext file system claims {self.size} bytes but its partition "
                              f"holds {self.reader.size}")
        self.groups = -(-(self.blocks - self.first_data_block) // self.blocks_per_group)
        if self.groups * self.inodes_per_group < self.inodes:
            raise FormatError("ext superblock damaged: inode count exceeds the groups")
        if not _checksum_ok(sb):  # last: an impossible field says more than a bad sum
            raise FormatError("ext superblock checksum does not match")
        has_journal = bool(self.compat & COMPAT_HAS_JOURNAL)
        self.fs_type = "ext2" if not has_journal else (
            "ext4" if self.incompat & ~0x6 or self.ro_compat & ~0x3 else "ext3")

    def _recover(self, part: str, damage: FormatError, uuid: bytes | None) -> None:
        """Open the file system from the first backup superblock that validates, with the
        descriptors that follow it, or raise why none could stand in for the primary.

        Copies of different file systems (one made over another leaves the old copies where
        the new one does not write) make every copy suspect: then none is used."""
        copies = sorted(backup_superblocks(self.reader))
        names = {data[SB_UUID] for _, _, data in copies}
        if len(names | ({uuid} if uuid is not None else set())) > 1:
            raise FormatError(f"{damage}; its superblock copies name different file systems")
        reason = "none found"
        for group, block, data in copies:
            try:
                self._use_superblock(data)
                self._descriptors = self._read_descriptors(block, backup=True)
                self._check_root()
            except FormatError as exc:
                reason = f"group {group}: {exc}"
                continue
            self.backup = (group, block)
            self.warnings = (f"ext primary {part} damaged ({damage}); used the backup in "
                             f"group {group} (block {block})",)
            return
        raise FormatError(f"{damage}; no usable backup superblock ({reason})")

    def _check_root(self) -> None:
        """The root directory must start with "." naming itself: copies left by an earlier
        file system point at inode tables that now hold something else."""
        root = self.inode(ROOT_INODE)
        if not root.is_dir:
            raise FormatError("ext root inode is not a directory")
        if root.flags & INODE_FLAG_INLINE_DATA:
            if _u32(root.block, 0) != ROOT_INODE:  # inline directories start with the parent
                raise FormatError("ext root directory names another parent")
            return
        first = [phys for logical, phys, _ in self.block_map(root).runs if logical == 0]
        if not first:
            raise FormatError("ext root directory has no first block")
        block = checked_read(self.reader, first[0] * self.block_size, self.block_size,
                             "ext root directory")
        number, _, name_len, _ = DIR_ENTRY.unpack_from(block)
        if number != ROOT_INODE or block[8:8 + name_len] != b".":
            raise FormatError("ext root directory does not start with itself")

    # ---- layout ------------------------------------------------------------------------------

    def _has_backup(self, group: int) -> bool:
        """Whether `group` keeps a copy of the superblock (and, without meta_bg, the GDT)."""
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_groups
        if not self.ro_compat & RO_COMPAT_SPARSE_SUPER or group == 1:
            return True
        for base in (3, 5, 7):
            power = base
            while power < group:
                power *= base
            if power == group:
                return True
        return False

    def _group_start(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def _superblock_block(self, group: int) -> int:
        """The block holding `group`'s superblock copy: for group 0 the block holding byte
        1024, which is not the group's first block with 1 KiB bigalloc blocks."""
        return SUPERBLOCK_OFFSET // self.block_size if group == 0 else self._group_start(group)

    @property
    def _descs_per_block(self) -> int:
        return self.block_size // self.desc_size

    def _gdt_blocks(self) -> int:
        return -(-self.groups // self._descs_per_block)

    def _descriptor_block(self, index: int, superblock: int, backup: bool) -> int:
        """Where descriptor block `index` is read: right after the superblock copy in use, or
        with meta_bg in its meta group's first group (the copy in the second group when
        reading backups, as libext2fs does)."""
        if not self.incompat & INCOMPAT_META_BG or index < self.first_meta_bg:
            return superblock + 1 + index
        group = index * self._descs_per_block
        if backup and self._group_start(group + 1) + self._has_backup(group) < self.blocks:
            group += 1
        return self._superblock_block(group) + self._has_backup(group)

    def _read_descriptors(self, superblock: int, backup: bool = False
                          ) -> list[tuple[int, int, int, int]]:
        """(block bitmap, inode bitmap, inode table, flags) of each group,
        read after the superblock copy in block `superblock`. Each group's bitmaps and inode
        table must lie inside it (inside the file system with flex_bg), as e2fsck demands."""
        wide = self.desc_size >= 64
        flex = bool(self.incompat & INCOMPAT_FLEX_BG)
        table_blocks = self._itable_blocks()
        result: list[tuple[int, int, int, int]] = []
        for index in range(self._gdt_blocks()):
            block = self._descriptor_block(index, superblock, backup)
            data = checked_read(self.reader, block * self.block_size, self.block_size,
                                "ext group descriptors")
            for slot in range(self._descs_per_block):
                group = len(result)
                if group == self.groups:
                    break
                d = data[slot * self.desc_size:(slot + 1) * self.desc_size]
                lo = struct.unpack_from("<IIIHHHHIHHHH", d)
                hi = struct.unpack_from("<IIIHHHH", d, 32) if wide else (0,) * 7
                bbitmap = lo[0] | hi[0] << 32
                ibitmap = lo[1] | hi[1] << 32
                itable = lo[2] | hi[2] << 32
                first, end, where = (self.first_data_block, self.blocks, "the file system") \
                    if flex else (self._group_start(group), min(
                        self._group_start(group + 1), self.blocks), "its group")
                for what, start, count in (("block bitmap", bbitmap, 1),
                                           ("inode bitmap", ibitmap, 1),
                                           ("inode table", itable, table_blocks)):
                    if not first <= start <= end - count:
                        raise FormatError(f"ext group {group} {what} at block {start} is "
                                          f"outside {where}")
                result.append((bbitmap, ibitmap, itable, lo[6]))
        return result

    def _itable_blocks(self) -> int:
        return -(-self.inodes_per_group * self.inode_size // self.block_size)

    def _group_header(self, group: int) -> list[Extent]:
        """Superblock copy, descriptor blocks and reserved GDT blocks kept in `group`."""
        bs = self.block_size
        start = self._superblock_block(group)
        extents: list[Extent] = []
        if group == 0:
            extents.append((0, SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE))  # boot area + superblock
        if self._has_backup(group):
            extents.append((start * bs, bs))
            meta = self.incompat & INCOMPAT_META_BG
            old_blocks = min(self.first_meta_bg, self._gdt_blocks()) if meta else \
                self._gdt_blocks()
            extents.append(((start + 1) * bs, (old_blocks + self.reserved_gdt) * bs))
        if self.incompat & INCOMPAT_META_BG:
            per = self._descs_per_block
            meta_group, index = divmod(group, per)
            if meta_group >= self.first_meta_bg and index in (0, 1, per - 1):
                extents.append(((start + self._has_backup(group)) * bs, bs))
        return extents

    def metadata(self) -> list[Extent]:
        """Superblocks, descriptors, bitmaps, inode tables, the journal and directories."""
        bs = self.block_size
        extents: list[Extent] = []
        for group, (bbitmap, ibitmap, itable, _) in enumerate(self._descriptors):
            extents += self._group_header(group)
            extents += [(bbitmap * bs, bs), (ibitmap * bs, bs),
                        (itable * bs, self._itable_blocks() * bs)]
        if self.journal_inode:
            extents += self._inode_extents(self.journal_inode)
        extents += self._directory_extents()
        return extents

    def used(self) -> list[Extent]:
        """Every block the bitmaps mark used, plus all metadata (BLOCK_UNINIT groups' bitmaps
        are not initialised on disk: their own metadata is all they use).

        From a backup, whose flags may be stale, every bitmap is read; and as its block count
        may predate a resize, the rest of the partition counts as used too."""
        extents = self.metadata()
        if self.backup is not None:
            extents.append((self.size, self.reader.size - self.size))
        cs = self.cluster_size
        bits = self.clusters_per_group
        first_cluster = self.first_data_block * self.block_size // cs
        total_clusters = -(-self.size // cs)
        for group, (bbitmap, _, _, flags) in enumerate(self._descriptors):
            if flags & BG_BLOCK_UNINIT and self.backup is None:
                continue
            base = first_cluster + group * bits
            count = min(bits, total_clusters - base)
            data = checked_read(self.reader, bbitmap * self.block_size, self.block_size,
                                f"ext group {group} block bitmap")
            extents += [((base + first) * cs, run * cs) for first, run in bitmap_runs(data, count)]
        return extents

    # ---- inodes and their blocks ---------------------------------------------------------------

    def inode_offset(self, number: int) -> int:
        if not 1 <= number <= self.inodes:
            raise FormatError(f"ext inode {number} does not exist")
        group, index = divmod(number - 1, self.inodes_per_group)
        return self._descriptors[group][2] * self.block_size + index * self.inode_size

    def inode(self, number: int) -> Inode:
        offset = self.inode_offset(number)
        raw = checked_read(self.reader, offset, self.inode_size, f"ext inode {number}")
        return Inode(number, offset, _u16(raw, 0), _u32(raw, 4) | _u32(raw, 108) << 32,
                     _u32(raw, 32), raw)

    def block_map(self, inode: Inode, readable: Readability = always_readable) -> BlockMap:
        """The inode's data runs; an unreadable or damaged map block makes it incomplete."""
        if inode.data_inside:
            return BlockMap((), (), True)
        walker = _MapWalker(self, readable)
        if inode.flags & INODE_FLAG_EXTENTS:
            walker.extent_node(inode.block, MAX_EXTENT_DEPTH)
        else:
            walker.block_pointers(inode.block)
        return BlockMap(tuple(walker.runs), tuple(walker.map_blocks), walker.complete)

    def _inode_extents(self, number: int) -> list[Extent]:
        """Data and map blocks of one inode, for metadata that must be read early."""
        bs = self.block_size
        try:
            mapping = self.block_map(self.inode(number))
        except FormatError:
            return []  # the used map still covers it through the bitmaps
        return [(phys * bs, count * bs) for _, phys, count in mapping.runs] + \
            [(block * bs, bs) for block in mapping.map_blocks]

    def data_extents(self, mapping: BlockMap, size: int) -> list[Extent]:
        """Byte extents of the file's contents, clipped to its size."""
        return [(where, length) for _, where, length in self.data_pieces(mapping, size)]

    def data_pieces(self, mapping: BlockMap, size: int) -> list[tuple[int, int, int]]:
        """(offset in the file, byte offset, length) of the file's contents, clipped to its
        size; holes take no piece."""
        bs = self.block_size
        pieces = []
        for logical, phys, count in mapping.runs:
            length = min(count * bs, size - logical * bs)
            if length > 0:
                pieces.append((logical * bs, phys * bs, length))
        return pieces

    # ---- directories -------------------------------------------------------------------------

    def dir_entries(self, inode: Inode, readable: Readability
                     ) -> Iterator[tuple[str, int, Extent]]:
        """(name, inode number, where the entry is) of a directory, '.' and '..' left out."""
        if inode.flags & INODE_FLAG_INLINE_DATA:  # the parent's number, then entries
            yield from _parse_entries(inode.block[4:], inode.offset + I_BLOCK.start + 4)
            tail_offset, tail = inode.inline_tail()
            yield from _parse_entries(tail, tail_offset)
            return
        mapping = self.block_map(inode, readable)
        bs = self.block_size
        for offset, length in self.data_extents(mapping, inode.size):
            for pos in range(offset, offset + length, bs):
                if not readable(pos, bs):
                    continue
                try:
                    block = checked_read(self.reader, pos, bs, "ext directory block")
                except FormatError:
                    continue
                yield from _parse_entries(block, pos)

    def _walk(self, readable: Readability
              ) -> Iterator[tuple[str, int, Inode | None, Extent]]:
        """Depth-first (path, inode number, inode or None if unreadable, entry extent)."""
        root = self.inode(ROOT_INODE)
        stack: list[tuple[str, Inode]] = [("", root)]
        seen = {ROOT_INODE}
        while stack:
            prefix, directory = stack.pop()
            for name, number, entry in self.dir_entries(directory, readable):
                path = f"{prefix}/{name}"
                try:
                    offset = self.inode_offset(number)
                except FormatError:
                    continue
                inode = None
                if readable(offset, self.inode_size):
                    try:
                        inode = self.inode(number)
                    except FormatError:
                        continue
                yield path, number, inode, entry
                if inode is not None and inode.is_dir and number not in seen:
                    seen.add(number)
                    stack.append((path, inode))

    def _directory_extents(self) -> list[Extent]:
        """Blocks of every directory, found by walking from the root; a damaged tree only
        shortens this list (the bitmaps still cover every directory)."""
        extents: list[Extent] = []
        try:
            directories = [self.inode(ROOT_INODE)]
            directories += [inode for _, _, inode, _ in self._walk(always_readable)
                            if inode is not None and inode.is_dir]
        except FormatError:
            return extents
        for inode in directories:
            try:
                mapping = self.block_map(inode)
            except FormatError:
                continue
            extents += self.data_extents(mapping, inode.size)
            extents += [(b * self.block_size, self.block_size) for b in mapping.map_blocks]
        return extents

    def files(self, readable: Readability = always_readable) -> Iterator[FileRecord]:
        """Every file and directory under the root with the bytes it depends on."""
        bs = self.block_size
        for path, number, inode, entry in self._walk(readable):
            inode_extent = (self.inode_offset(number), self.inode_size)
            if inode is None:
                yield FileRecord(path, None, (), (inode_extent, entry), complete=False)
                continue
            mapping = self.block_map(inode, readable)
            pieces = self.data_pieces(mapping, inode.size)
            yield FileRecord(path, inode.size, tuple((where, n) for _, where, n in pieces),
                             (inode_extent, entry, *((b * bs, bs) for b in mapping.map_blocks)),
                             mapping.complete, tuple(start for start, _, _ in pieces),
                             inode.is_dir)


class _MapWalker:
    """Collects data runs and map blocks of one inode, bounded against damaged trees."""

    def __init__(self, fs: ExtFS, readable: Readability) -> None:
        self.fs = fs
        self.readable = readable
        self.runs: list[tuple[int, int, int]] = []
        self.map_blocks: list[int] = []
        self.complete = True

    def _block(self, number: int) -> bytes | None:
        fs = self.fs
        if not fs.first_data_block <= number < fs.blocks or len(self.map_blocks) > fs.blocks:
            self.complete = False
            return None
        self.map_blocks.append(number)
        offset = number * fs.block_size
        if not self.readable(offset, fs.block_size):
            self.complete = False
            return None
        try:
            return checked_read(fs.reader, offset, fs.block_size, "ext map block")
        except FormatError:
            self.complete = False
            return None

    def extent_node(self, node: bytes, depth_left: int) -> None:
        magic, entries, _, depth, _ = EXTENT_HEADER.unpack_from(node)
        capacity = (len(node) - EXTENT_HEADER.size) // 12
        if magic != EXTENT_MAGIC or entries > capacity or depth >= depth_left:
            self.complete = False
            return
        for i in range(entries):
            pos = EXTENT_HEADER.size + 12 * i
            if depth == 0:
                logical, length, hi, lo = EXTENT_LEAF.unpack_from(node, pos)
                if length > 32768:  # unwritten: allocated, reads as zeros
                    length -= 32768
                start = lo | hi << 32
                if start + length > self.fs.blocks:
                    self.complete = False
                    continue
                self.runs.append((logical, start, length))
            else:
                _, lo, hi, _ = EXTENT_INDEX.unpack_from(node, pos)
                child = self._block(lo | hi << 32)
                if child is not None:
                    self.extent_node(child, depth)

    def block_pointers(self, i_block: bytes) -> None:
        """ext2/3 block map: 12 direct pointers, then single, double, triple indirect."""
        pointers = struct.unpack("<15I", i_block)
        per_block = self.fs.block_size // 4
        logical = 0
        for pointer in pointers[:12]:
            self._data(logical, pointer)
            logical += 1
        for level, pointer in enumerate(pointers[12:], start=1):
            logical = self._indirect(pointer, level, logical, per_block)

    def _indirect(self, pointer: int, level: int, logical: int, per_block: int) -> int:
        span = per_block ** level
        if pointer == 0:
            return logical + span
        block = self._block(pointer)
        if block is None:
            return logical + span
        for child in struct.unpack(f"<{per_block}I", block):
            if level == 1:
                self._data(logical, child)
                logical += 1
            else:
                logical = self._indirect(child, level - 1, logical, per_block)
        return logical

    def _data(self, logical: int, block: int) -> None:
        if block == 0:
            return
        if block >= self.fs.blocks:
            self.complete = False
            return
        if self.runs and self.runs[-1][0] + self.runs[-1][2] == logical \
                and self.runs[-1][1] + self.runs[-1][2] == block:
            first_logical, first_block, count = self.runs[-1]
            self.runs[-1] = (first_logical, first_block, count + 1)
        else:
            self.runs.append((logical, block, 1))


def _parse_entries(block: bytes, base: int) -> Iterator[tuple[str, int, Extent]]:
    pos = 0
    while pos + DIR_ENTRY.size <= len(block):
        number, rec_len, name_len, _ = DIR_ENTRY.unpack_from(block, pos)
        if rec_len < DIR_ENTRY.size or pos + rec_len > len(block):
            return  # a damaged block: the rest of it cannot be trusted
        name = block[pos + 8:pos + 8 + name_len]
        if number and name not in (b".", b"..") and name_len <= rec_len - 8:
            yield name.decode("utf-8", "surrogateescape"), number, (base + pos, rec_len)
        pos += rec_len
