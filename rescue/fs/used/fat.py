"""FAT12/16/32: used clusters from the FAT itself, metadata = reserved area, FATs, root
directory and every directory's cluster chain.

Every copy of the FAT is consulted for the used map, so a cluster one damaged copy forgets is
still imaged. Clusters marked bad by the file system are never read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from rescue.errors import FormatError
from rescue.fs.used import (
    Extent,
    FileRecord,
    Readability,
    always_readable,
    checked_read,
    cluster_extents,
    follow_chain,
    normalize,
)
from rescue.io.reader import Reader

ENTRY_SIZE = 32
ATTR_LONG_NAME = 0x0F
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
DELETED = 0xE5
LOWER_BASE, LOWER_EXT = 0x08, 0x10


class FatFS:
    """One FAT file system read through `reader` (offsets relative to its start)."""

    warnings: tuple[str, ...] = ()

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        boot = checked_read(reader, 0, 512, "FAT boot sector")
        (sector, per_cluster, reserved, fats, root_entries, total16, _, fat16,
         ) = struct.unpack_from("<HBHBHHBH", boot, 11)
        total32, fat32, _, _, root_cluster = struct.unpack_from("<IIHHI", boot, 32)
        if boot[510:512] != b"\x55\xaa" or sector not in (512, 1024, 2048, 4096) \
                or per_cluster == 0 or per_cluster & (per_cluster - 1) or reserved == 0 \
                or fats == 0:
            raise FormatError("no valid FAT boot sector")
        self.sector = sector
        self.cluster_size = sector * per_cluster
        self.fat_sectors = fat16 or fat32
        total = total16 or total32
        root_sectors = -(-root_entries * ENTRY_SIZE // sector)
        self.fat_offset = reserved * sector
        self.fats = fats
        self.root_offset = self.fat_offset + fats * self.fat_sectors * sector
        self.root_size = root_sectors * sector
        self.data_offset = self.root_offset + self.root_size
        self.size = total * sector
        if self.fat_sectors == 0 or self.data_offset >= self.size:
            raise FormatError("FAT boot sector damaged: impossible geometry")
        if self.size > reader.size:
            raise FormatError(f"FAT file system claims {self.size} bytes but its partition "
                              f"holds {reader.size}")
        self.clusters = (self.size - self.data_offset) // self.cluster_size
        self.bits = 12 if self.clusters < 4085 else 16 if self.clusters < 65525 else 32
        self.fs_type = f"fat{self.bits}"
        self.root_cluster = root_cluster if self.bits == 32 else 0
        if self.bits == 32 and not 2 <= root_cluster < self.clusters + 2:
            raise FormatError(f"FAT32 root directory cluster {root_cluster} is out of range")
        if self.fat_sectors * sector * 8 < (self.clusters + 2) * self.bits:
            raise FormatError("FAT boot sector damaged: the FAT is too small for the volume")
        self._fat = self._read_fat(0)
        self._bad = 0xFF7 if self.bits == 12 else 0xFFF7 if self.bits == 16 else 0x0FFFFFF7
        self._end = self._bad + 1  # this value and above end a chain

    def _read_fat(self, copy: int) -> list[int]:
        length = self.fat_sectors * self.sector
        data = checked_read(self.reader, self.fat_offset + copy * length, length,
                            f"FAT copy {copy + 1}")
        count = self.clusters + 2
        if self.bits == 32:
            return [v & 0x0FFFFFFF for v in struct.unpack_from(f"<{count}I", data)]
        if self.bits == 16:
            return list(struct.unpack_from(f"<{count}H", data))
        entries = []
        for n in range(count):
            pair = data[n * 3 // 2] | data[n * 3 // 2 + 1] << 8
            entries.append(pair >> 4 if n & 1 else pair & 0xFFF)
        return entries

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_size

    # ---- used map ----------------------------------------------------------------------------

    def metadata(self) -> list[Extent]:
        extents: list[Extent] = [(0, self.data_offset)]  # boot, FSInfo, FATs, root (FAT12/16)
        directories = [self.root_cluster] if self.root_cluster else []
        directories += self._directory_clusters()
        for first in directories:
            extents += self.chain_extents(first)
        return extents

    def used(self) -> list[Extent]:
        """The metadata and every cluster any FAT copy marks allocated (not free, not bad)."""
        tables = [self._fat]
        for copy in range(1, self.fats):
            try:
                tables.append(self._read_fat(copy))
            except FormatError:
                continue  # an unreadable mirror: the first copy still counts
        extents = self.metadata()
        run_start = None
        for cluster in range(2, self.clusters + 3):
            allocated = cluster < self.clusters + 2 and any(
                table[cluster] and table[cluster] != self._bad for table in tables)
            if allocated and run_start is None:
                run_start = cluster
            elif not allocated and run_start is not None:
                extents.append((self.cluster_offset(run_start),
                                (cluster - run_start) * self.cluster_size))
                run_start = None
        return extents

    # ---- chains and directories --------------------------------------------------------------

    def chain(self, first: int) -> tuple[list[int], bool]:
        """Clusters of a chain, and whether it ended properly (no loop, no wild pointer)."""
        clusters, last = follow_chain(self._fat, first, self.clusters)
        return clusters, last >= self._end or (last == 0 and not clusters)

    def chain_extents(self, first: int, limit: int | None = None) -> list[Extent]:
        """Byte extents of a chain, merged where clusters are contiguous, clipped to `limit`."""
        return cluster_extents(map(self.cluster_offset, self.chain(first)[0]),
                               self.cluster_size, limit)

    def _directory_clusters(self) -> list[int]:
        return [entry.first for _, entry in self._walk(always_readable) if entry.is_dir]

    def _directory_areas(self, first: int) -> list[Extent]:
        if first == 0:  # the fixed FAT12/16 root directory
            return [(self.root_offset, self.root_size)]
        return self.chain_extents(first)

    def directory(self, first: int, readable: Readability = always_readable
                  ) -> Iterator[DirEntry]:
        """The entries of the directory starting at cluster `first` (0: the FAT12/16 root);
        parts that are not `readable` are skipped."""
        return self._entries(self._directory_areas(first), readable)

    def _walk(self, readable: Readability) -> Iterator[tuple[str, DirEntry]]:
        stack: list[tuple[str, int]] = [("", self.root_cluster)]
        seen = {self.root_cluster}
        while stack:
            prefix, first = stack.pop()
            for entry in self._entries(self._directory_areas(first), readable):
                path = f"{prefix}/{entry.name}"
                yield path, entry
                if entry.is_dir and entry.first and entry.first not in seen:
                    seen.add(entry.first)
                    stack.append((path, entry.first))

    def _entries(self, areas: list[Extent], readable: Readability) -> Iterator[DirEntry]:
        long_parts: list[tuple[int, bytes]] = []
        for offset, length in areas:
            if not readable(offset, length):
                # read entry by entry so the readable parts of a directory still count
                pieces = [(pos, ENTRY_SIZE) for pos in range(offset, offset + length, ENTRY_SIZE)
                          if readable(pos, ENTRY_SIZE)]
            else:
                pieces = [(offset, length)]
            for piece_offset, piece_length in pieces:
                try:
                    data = checked_read(self.reader, piece_offset, piece_length,
                                        "FAT directory")
                except FormatError:
                    continue
                for pos in range(0, piece_length, ENTRY_SIZE):
                    raw = data[pos:pos + ENTRY_SIZE]
                    if raw[0] == 0:
                        return
                    entry_offset = piece_offset + pos
                    attr = raw[11]
                    if raw[0] == DELETED:
                        long_parts = []
                    elif attr == ATTR_LONG_NAME:
                        long_parts.append((raw[0] & 0x3F, raw))
                    elif attr & ATTR_VOLUME_ID:
                        long_parts = []
                    else:
                        name = _long_name(long_parts, raw) or _short_name(raw)
                        long_parts = []
                        if name in (".", ".."):
                            continue
                        first = struct.unpack_from("<H", raw, 20)[0] << 16 \
                            if self.bits == 32 else 0
                        first |= struct.unpack_from("<H", raw, 26)[0]
                        size = struct.unpack_from("<I", raw, 28)[0]
                        yield DirEntry(name, entry_offset, first, size,
                                       bool(attr & ATTR_DIRECTORY), raw)

    def files(self, readable: Readability = always_readable) -> Iterator[FileRecord]:
        for path, entry in self._walk(readable):
            clusters, ended = self.chain(entry.first) if entry.first else ([], True)
            if entry.is_dir:
                data = self.chain_extents(entry.first) if entry.first else []
                size = len(clusters) * self.cluster_size
            else:
                data = self.chain_extents(entry.first, entry.size) if entry.first else []
                size = entry.size
                ended = ended and len(clusters) * self.cluster_size >= size
            fat_entries = normalize(((self.fat_offset + c * self.bits // 8, 2 if self.bits < 32
                                      else 4) for c in clusters), self.data_offset)
            yield FileRecord(path, size, tuple(data),
                             ((entry.offset, ENTRY_SIZE), *fat_entries), ended,
                             is_dir=entry.is_dir)


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    offset: int  # where the short entry is
    first: int  # first cluster, 0 for none
    size: int
    is_dir: bool
    raw: bytes  # the 32-byte short entry: attributes and times


def _long_name(parts: list[tuple[int, bytes]], short: bytes) -> str:
    """The long name the entries before a short entry spell, or "" when they do not belong to
    it (their checksum of the short name differs, as after a rename by a system that knows no
    long names). UTF-16 is decoded whole, so a character in two parts stays one."""
    if not parts:
        return ""
    checksum = 0
    for byte in short[:11]:
        checksum = ((checksum >> 1) | (checksum & 1) << 7) + byte & 0xFF
    if any(part[13] != checksum for _, part in parts):
        return ""
    chars = b"".join(part[1:11] + part[14:26] + part[28:32] for _, part in sorted(parts))
    text = chars.decode("utf-16-le", "surrogatepass")
    return text.split("\0", 1)[0].replace("\uffff", "")


def _short_name(raw: bytes) -> str:
    base = raw[0:8].rstrip(b" ")
    ext = raw[8:11].rstrip(b" ")
    if base[:1] == b"\x05":
        base = b"\xe5" + base[1:]
    flags = raw[12]
    text = base.decode("cp437").lower() if flags & LOWER_BASE else base.decode("cp437")
    if ext:
        ext_text = ext.decode("cp437")
        text += "." + (ext_text.lower() if flags & LOWER_EXT else ext_text)
    return text
