"""exFAT: used clusters from the allocation bitmap, metadata = boot regions, FAT, bitmap,
up-case table and every directory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from rescue.errors import FormatError
from rescue.fs.signatures import BY_NAME, MBR_SIGNATURE, in_bytes
from rescue.fs.used import (
    Extent,
    FileRecord,
    Readability,
    always_readable,
    bitmap_runs,
    checked_read,
    cluster_extents,
    follow_chain,
    normalize,
)
from rescue.io.reader import Reader

ENTRY_SIZE = 32
TYPE_BITMAP, TYPE_UPCASE, TYPE_FILE = 0x81, 0x82, 0x85
TYPE_STREAM, TYPE_NAME = 0xC0, 0xC1
ATTR_DIRECTORY = 0x10
FLAG_NO_FAT_CHAIN = 0x02
END_OF_CHAIN = 0xFFFFFFF7  # this value and above (bad, end) stop a chain


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    offset: int  # where the entry set starts
    set_size: int  # bytes of the entry set
    first: int
    size: int
    contiguous: bool
    is_dir: bool


class ExfatFS:
    """One exFAT file system read through `reader` (offsets relative to its start)."""

    fs_type = "exfat"
    warnings: tuple[str, ...] = ()

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        boot = checked_read(reader, 0, 512, "exFAT boot sector")
        if not BY_NAME["exfat"].found(in_bytes(boot)) or boot[510:512] != MBR_SIGNATURE:
            raise FormatError("no valid exFAT boot sector")
        (volume_sectors, fat_offset, fat_sectors, heap_offset, clusters, root,
         ) = struct.unpack_from("<QIIIII", boot, 72)
        sector_shift, cluster_shift, fats = boot[108], boot[109], boot[110]
        if not 9 <= sector_shift <= 12 or sector_shift + cluster_shift > 25 or fats not in (1, 2):
            raise FormatError("exFAT boot sector damaged: impossible geometry")
        self.sector = 1 << sector_shift
        self.cluster_size = self.sector << cluster_shift
        self.size = volume_sectors * self.sector
        self.fat_offset = fat_offset * self.sector
        self.fat_size = fat_sectors * self.sector * fats
        self.heap_offset = heap_offset * self.sector
        self.clusters = clusters
        self.root = root
        if self.size > reader.size:
            raise FormatError(f"exFAT file system claims {self.size} bytes but its partition "
                              f"holds {reader.size}")
        if self.heap_offset + clusters * self.cluster_size > self.size \
                or fat_sectors * self.sector < (clusters + 2) * 4 \
                or not 2 <= root < clusters + 2:
            raise FormatError("exFAT boot sector damaged: cluster heap outside the volume")
        data = checked_read(reader, self.fat_offset, (clusters + 2) * 4, "exFAT FAT")
        self._fat = struct.unpack(f"<{clusters + 2}I", data)
        self._bitmap: Extent | None = None
        self._upcase: Extent | None = None
        self._root_entries = list(self._entries(self.chain_extents(root, None, False),
                                                always_readable, system=True))
        if self._bitmap is None:
            raise FormatError("exFAT root directory has no allocation bitmap")
        self.bitmap: Extent = self._bitmap

    def cluster_offset(self, cluster: int) -> int:
        return self.heap_offset + (cluster - 2) * self.cluster_size

    def chain(self, first: int, size: int | None, contiguous: bool) -> tuple[list[int], bool]:
        """Clusters of a file, and whether its chain was intact."""
        if contiguous:
            count = -(-(size or 0) // self.cluster_size)
            if first < 2 or first + count > self.clusters + 2:
                return [], False
            return list(range(first, first + count)), True
        clusters, last = follow_chain(self._fat, first, self.clusters)
        return clusters, last >= END_OF_CHAIN

    def chain_extents(self, first: int, size: int | None, contiguous: bool) -> list[Extent]:
        clusters, _ = self.chain(first, size, contiguous)
        return cluster_extents(map(self.cluster_offset, clusters), self.cluster_size, size)

    # ---- used map ----------------------------------------------------------------------------

    def metadata(self) -> list[Extent]:
        """Both boot regions and the FAT (everything before the heap), the bitmap, the up-case
        table and the cluster chains of all directories."""
        extents: list[Extent] = [(0, self.heap_offset)]
        extents += self.chain_extents(self.root, None, False)
        for area in (self._bitmap, self._upcase):
            if area:
                extents += self.chain_extents(area[0], area[1], False)
        for _, entry in self._walk(always_readable):
            if entry.is_dir:
                extents += self.chain_extents(entry.first, entry.size, entry.contiguous)
        return extents

    def used(self) -> list[Extent]:
        first, length = self.bitmap
        bitmap_bytes = (self.clusters + 7) // 8
        if length < bitmap_bytes:
            raise FormatError("exFAT allocation bitmap is shorter than the cluster count")
        data = b"".join(checked_read(self.reader, off, size, "exFAT allocation bitmap")
                        for off, size in self.chain_extents(first, bitmap_bytes, False))
        extents = self.metadata()
        extents += [(self.cluster_offset(2 + run_start), count * self.cluster_size)
                    for run_start, count in bitmap_runs(data, self.clusters)]
        return extents

    # ---- directories -------------------------------------------------------------------------

    def _entries(self, areas: list[Extent], readable: Readability,
                 system: bool = False) -> Iterator[_Entry]:
        """File entry sets of one directory; with `system`, note the bitmap and up-case."""
        raw = bytearray()
        positions: list[int] = []
        for offset, length in areas:
            for pos in range(offset, offset + length, ENTRY_SIZE):
                good = readable(pos, ENTRY_SIZE)
                chunk = b""
                if good:
                    try:
                        chunk = checked_read(self.reader, pos, ENTRY_SIZE, "exFAT directory")
                    except FormatError:
                        chunk = b""
                raw += chunk or bytes(ENTRY_SIZE)
                positions.append(pos if chunk else -1)
        index = 0
        count = len(positions)
        while index < count:
            entry = raw[index * ENTRY_SIZE:(index + 1) * ENTRY_SIZE]
            kind = entry[0]
            if kind == 0 and positions[index] >= 0:
                return  # end of directory
            if system and kind == TYPE_BITMAP and self._bitmap is None:
                self._bitmap = struct.unpack_from("<I", entry, 20)[0], \
                    struct.unpack_from("<Q", entry, 24)[0]
            elif system and kind == TYPE_UPCASE:
                self._upcase = struct.unpack_from("<I", entry, 20)[0], \
                    struct.unpack_from("<Q", entry, 24)[0]
            elif kind == TYPE_FILE:
                secondary = entry[1]
                parsed = self._entry_set(raw, positions, index, secondary)
                if parsed is not None:
                    yield parsed
                index += secondary
            index += 1

    def _entry_set(self, raw: bytearray, positions: list[int], index: int,
                   secondary: int) -> _Entry | None:
        if secondary < 2 or index + secondary >= len(positions) \
                or -1 in positions[index:index + secondary + 1]:
            return None
        file_entry = raw[index * ENTRY_SIZE:(index + 1) * ENTRY_SIZE]
        stream = raw[(index + 1) * ENTRY_SIZE:(index + 2) * ENTRY_SIZE]
        if stream[0] != TYPE_STREAM:
            return None
        name_length = stream[3]
        name_bytes = b"".join(raw[(index + i) * ENTRY_SIZE + 2:(index + i + 1) * ENTRY_SIZE]
                              for i in range(2, secondary + 1)
                              if raw[(index + i) * ENTRY_SIZE] == TYPE_NAME)
        name = name_bytes[:2 * name_length].decode("utf-16-le", "replace")
        attrs = struct.unpack_from("<H", file_entry, 4)[0]
        first = struct.unpack_from("<I", stream, 20)[0]
        size = struct.unpack_from("<Q", stream, 24)[0]
        return _Entry(name, positions[index], (secondary + 1) * ENTRY_SIZE, first, size,
                      bool(stream[1] & FLAG_NO_FAT_CHAIN), bool(attrs & ATTR_DIRECTORY))

    def _walk(self, readable: Readability) -> Iterator[tuple[str, _Entry]]:
        stack: list[tuple[str, list[Extent]]] = [
            ("", self.chain_extents(self.root, None, False))]
        seen = {self.root}
        while stack:
            prefix, areas = stack.pop()
            for entry in self._entries(areas, readable):
                path = f"{prefix}/{entry.name}"
                yield path, entry
                if entry.is_dir and entry.first and entry.first not in seen:
                    seen.add(entry.first)
                    stack.append((path, self.chain_extents(entry.first, entry.size,
                                                           entry.contiguous)))

    def files(self, readable: Readability = always_readable) -> Iterator[FileRecord]:
        for path, entry in self._walk(readable):
            clusters, intact = self.chain(entry.first, entry.size, entry.contiguous) \
                if entry.first else ([], entry.size == 0)
            data = self.chain_extents(entry.first, entry.size, entry.contiguous) \
                if entry.first else []
            fat_entries = () if entry.contiguous else normalize(
                ((self.fat_offset + 4 * c, 4) for c in clusters), self.heap_offset)
            yield FileRecord(path, entry.size, tuple(data),
                             ((entry.offset, entry.set_size), *fat_entries),
                             intact and len(clusters) * self.cluster_size >= entry.size,
                             is_dir=entry.is_dir)
