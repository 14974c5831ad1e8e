"""MBR (with extended and logical partitions) and GPT partition tables.

Read from any Reader: a disk, an image reader, a file.
A failing disk often has a damaged table, so damage never raises: it becomes a warning, a
clipped or skipped entry, or (GPT) the backup header, and the caller falls back to treating
the whole disk as one area rather than losing data.
"""

from __future__ import annotations

import os
import stat
import struct
import uuid
import zlib
from dataclasses import dataclass

from rescue.errors import FormatError, SourceError
from rescue.formats.base import FdReader
from rescue.fs.signatures import MBR_SIGNATURE, SIGNATURES, in_bytes
from rescue.io.reader import Reader, Unreadable

MBR_ENTRIES_OFFSET = 446
MBR_ENTRY = struct.Struct("<B3sB3sII")  # status, CHS first, type, CHS last, first LBA, sectors
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
GPT_PROTECTIVE = 0xEE
MAX_LOGICAL = 128  # more EBRs than this is a loop or garbage, never a real disk

GPT_SIGNATURE = b"EFI PART"
# signature 8, revision 4, header size 4, header CRC32 4, reserved 4, my LBA 8, alternate LBA 8,
# first usable 8, last usable 8, disk GUID 16, entries LBA 8, entry count 4, entry size 4,
# entries CRC32 4
GPT_HEADER = struct.Struct("<8sIIII QQQQ 16s QIII")
# type GUID 16, unique GUID 16, first LBA 8, last LBA 8, attributes 8, name 72 (UTF-16LE)
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
GPT_LEGACY_BOOTABLE = 1 << 2
MAX_GPT_ENTRIES_BYTES = 1 << 20  # 128 entries of 128 bytes is the norm; refuse absurd arrays
# What reading a damaged or failing disk raises: a failed read of a disk, or of an image (its
# damaged cluster or its file's I/O error, both Unreadable). Anything else (MemoryError, a
# bug, a source that left the system) must not pass for a bad sector.
READ_ERRORS = (Unreadable,)


@dataclass(frozen=True)
class PartitionEntry:
    number: int  # 1-based; MBR logical partitions are 5, 6, ... like Linux
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type_id: str  # MBR: "0x83" style; GPT: lower-case type GUID
    name: str | None  # GPT partition name
    uuid: str | None  # GPT unique partition GUID
    bootable: bool
    logical: bool  # inside an MBR extended partition

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def is_container(self) -> bool:
        """An MBR extended partition: it holds logical partitions, not a file system."""
        return not self.logical and self.type_id in {f"0x{t:02x}" for t in EXTENDED_TYPES}


@dataclass(frozen=True)
class PartitionTable:
    kind: str | None  # "dos", "gpt" or None (no table: a bare file system)
    sector_size: int
    disk_size: int
    partitions: tuple[PartitionEntry, ...]
    disk_id: str | None  # MBR signature / GPT disk GUID
    warnings: tuple[str, ...]  # e.g. "primary GPT header damaged; using the backup"
    # (offset, length) of every table structure: MBR, EBRs, GPT headers and entry arrays
    table_areas: tuple[tuple[int, int], ...] = ()

    def find(self, number: int) -> PartitionEntry:
        for entry in self.partitions:
            if entry.number == number:
                return entry
        raise FormatError(f"no partition {number} in the {self.kind or 'missing'} partition table")

    @property
    def file_systems(self) -> tuple[PartitionEntry, ...]:
        """Partitions that may hold a file system (not extended containers)."""
        return tuple(p for p in self.partitions if not p.is_container)


class _Parse:
    """Mutable state of one parse: warnings and table areas accumulate as we go."""

    def __init__(self, reader: Reader, sector_size: int) -> None:
        self.reader = reader
        self.sector_size = sector_size
        self.disk_size = reader.size
        self.warnings: list[str] = []
        self.areas: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes | None:
        """`length` bytes, zero-padded past the end; None if the disk cannot read them."""
        if offset < 0 or offset >= self.disk_size:
            return None
        try:
            data = bytes(self.reader.read(offset, min(length, self.disk_size - offset)))
        except READ_ERRORS as exc:  # a bad sector in the table: a warning, not a crash
            self.warnings.append(f"cannot read partition table at byte {offset}: {exc}")
            return None
        return data.ljust(length, b"\0")

    def entry(self, number: int, first_lba: int, sectors: int, type_id: str, *,
              name: str | None = None, uuid: str | None = None, bootable: bool = False,
              logical: bool = False) -> PartitionEntry | None:
        """An entry clipped to the disk, or None (with a warning) if it lies outside it."""
        start, size = first_lba * self.sector_size, sectors * self.sector_size
        if size <= 0:
            return None
        if start >= self.disk_size:
            self.warnings.append(f"partition {number} starts at byte {start}, beyond the end of "
                                 f"the {self.disk_size}-byte disk; skipped")
            return None
        if start + size > self.disk_size:
            self.warnings.append(f"partition {number} ends at byte {start + size}, beyond the "
                                 f"end of the {self.disk_size}-byte disk; clipped")
            size = self.disk_size - start
        return PartitionEntry(number, start, size, type_id, name, uuid, bootable, logical)


def _looks_like_boot_sector(sector: bytes) -> bool:
    """A file system's own boot sector (FAT, NTFS, exFAT) also ends in 55 AA."""
    read = in_bytes(sector)
    return any(signature.found(read) for signature in SIGNATURES if signature.boot_sector)


MbrEntry = tuple[int, int, int, int]  # status, type, first LBA, sectors


def _mbr_entries(sector: bytes) -> list[MbrEntry] | None:
    """(status, type, first LBA, sectors) of the four slots, or None if not a valid MBR."""
    if sector[510:512] != MBR_SIGNATURE:
        return None
    slots = [MBR_ENTRY.unpack_from(sector, MBR_ENTRIES_OFFSET + 16 * i) for i in range(4)]
    entries = [(status, ptype, lba, count) for status, _, ptype, _, lba, count in slots]
    if any(status not in (0x00, 0x80) for status, *_ in entries):
        return None
    return entries


def _table_entries(sector: bytes) -> tuple[str, list[MbrEntry]] | None:
    """The kind of table a disk's first sector starts, with its four slots; None when it is a
    file system's boot sector or no table."""
    if _looks_like_boot_sector(sector) or (entries := _mbr_entries(sector)) is None:
        return None
    return ("gpt" if any(ptype == GPT_PROTECTIVE for _, ptype, _, _ in entries) else "dos",
            entries)


def table_kind(sector: bytes) -> str | None:
    """"gpt", "dos" or None, judged from a disk's first sector as `read_partition_table` does."""
    found = _table_entries(sector)
    return found[0] if found else None


def _parse_dos(p: _Parse, entries: list[MbrEntry]) -> list[PartitionEntry]:
    result: list[PartitionEntry] = []
    for slot, (status, ptype, lba, count) in enumerate(entries, start=1):
        if ptype == 0 or count == 0:
            continue
        part = p.entry(slot, lba, count, f"0x{ptype:02x}", bootable=status == 0x80)
        if part:
            result.append(part)
            if ptype in EXTENDED_TYPES:
                result.extend(_parse_logical(p, lba, count))
    return result


def _parse_logical(p: _Parse, ext_lba: int, ext_sectors: int) -> list[PartitionEntry]:
    """Walk the EBR chain; each EBR points to its logical partition and to the next EBR."""
    result: list[PartitionEntry] = []
    seen: set[int] = set()
    ebr_lba = ext_lba
    number = 5
    while True:
        if ebr_lba in seen:
            p.warnings.append(f"extended partition chain loops back to sector {ebr_lba}; stopped")
            break
        if len(seen) >= MAX_LOGICAL:
            p.warnings.append(f"more than {MAX_LOGICAL} logical partitions; stopped")
            break
        if not ext_lba <= ebr_lba < ext_lba + ext_sectors:
            p.warnings.append(f"extended partition link to sector {ebr_lba} leaves the extended "
                              "partition; stopped")
            break
        seen.add(ebr_lba)
        sector = p.read(ebr_lba * p.sector_size, p.sector_size)
        if sector is None:
            break
        p.areas.append((ebr_lba * p.sector_size, p.sector_size))
        entries = _mbr_entries(sector)
        if entries is None:
            p.warnings.append(f"damaged extended boot record at sector {ebr_lba}; stopped")
            break
        status, ptype, rel_lba, count = entries[0]
        if ptype != 0 and count != 0:
            part = p.entry(number, ebr_lba + rel_lba, count, f"0x{ptype:02x}",
                           bootable=status == 0x80, logical=True)
            if part:
                result.append(part)
        number += 1
        _, next_type, next_rel, next_count = entries[1]
        if next_type not in EXTENDED_TYPES or next_count == 0:
            break
        ebr_lba = ext_lba + next_rel
    return result


def _gpt_header(p: _Parse, lba: int) -> tuple[tuple, bytes] | None:
    """The header's fields and its entry array, if both are intact (signature and CRCs)."""
    raw = p.read(lba * p.sector_size, p.sector_size)
    if raw is None or raw[:8] != GPT_SIGNATURE:
        return None
    fields = GPT_HEADER.unpack_from(raw)
    header_size, header_crc, my_lba = fields[2], fields[3], fields[5]
    if not GPT_HEADER.size <= header_size <= p.sector_size or my_lba != lba:
        return None
    blank = raw[:16] + b"\0\0\0\0" + raw[20:header_size]
    if zlib.crc32(blank) != header_crc:
        return None
    entries_lba, count, entry_size, entries_crc = fields[10:14]
    if entry_size < GPT_ENTRY.size or count * entry_size > MAX_GPT_ENTRIES_BYTES:
        return None
    array = p.read(entries_lba * p.sector_size, count * entry_size)
    if array is None or zlib.crc32(array) != entries_crc:
        return None
    return fields, array


def _parse_gpt(p: _Parse) -> tuple[list[PartitionEntry], str | None]:
    last_lba = p.disk_size // p.sector_size - 1
    primary = _gpt_header(p, 1)
    backup_lba = primary[0][6] if primary else last_lba
    backup = _gpt_header(p, backup_lba) or (_gpt_header(p, last_lba) if backup_lba != last_lba
                                            else None)
    for found in (primary, backup):
        if found:
            fields = found[0]
            p.areas.append((fields[5] * p.sector_size, p.sector_size))
            p.areas.append((fields[10] * p.sector_size, fields[11] * fields[12]))
    chosen = primary or backup
    if chosen is None:
        p.warnings.append("both GPT headers are damaged; no partitions read")
        p.areas.append((p.sector_size, p.sector_size))
        return [], None
    if primary is None:
        p.warnings.append("primary GPT header damaged; using the backup")
    elif backup is None:
        p.warnings.append("backup GPT header damaged or missing; using the primary")
    fields, array = chosen
    entry_size = fields[12]
    result: list[PartitionEntry] = []
    for index in range(fields[11]):
        type_guid, unique, first, last, attrs, name = GPT_ENTRY.unpack_from(array,
                                                                            index * entry_size)
        if type_guid == bytes(16) or last < first:
            continue
        part = p.entry(index + 1, first, last - first + 1,
                       str(uuid.UUID(bytes_le=type_guid)),
                       name=name.decode("utf-16-le", "replace").split("\0", 1)[0],
                       uuid=str(uuid.UUID(bytes_le=unique)),
                       bootable=bool(attrs & GPT_LEGACY_BOOTABLE), logical=False)
        if part:
            result.append(part)
    return result, str(uuid.UUID(bytes_le=fields[9]))


def read_partition_table(reader: Reader, sector_size: int = 512) -> PartitionTable:
    """The partition table of a disk or image; kind None when the disk holds none."""
    p = _Parse(reader, sector_size)
    mbr = p.read(0, 512)
    if mbr is None or (found := _table_entries(mbr)) is None:
        return PartitionTable(None, sector_size, p.disk_size, (), None, tuple(p.warnings))
    kind, entries = found
    p.areas.append((0, sector_size))
    if kind == "gpt":
        # A 4 KiB-sector disk read through a 512-byte assumption keeps its header at 4096.
        for size in dict.fromkeys((sector_size, 4096 if sector_size == 512 else 512)):
            probe = p.read(size, 8)
            if probe == GPT_SIGNATURE:
                p.sector_size = size
                break
        parts, disk_guid = _parse_gpt(p)
        return PartitionTable("gpt", p.sector_size, p.disk_size, tuple(parts), disk_guid,
                              tuple(p.warnings), tuple(sorted(set(p.areas))))
    disk_id = f"0x{int.from_bytes(mbr[440:444], 'little'):08x}"
    parts = _parse_dos(p, entries)
    return PartitionTable("dos", sector_size, p.disk_size, tuple(parts), disk_id,
                          tuple(p.warnings), tuple(sorted(set(p.areas))))


class DiskReader(FdReader):
    """The smallest Reader over a device or file.

    Buffered reads are right here: table and metadata probes are small, and a failed read
    surfaces as Unreadable, which the parsers turn into warnings.
    """

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError(f"cannot open {path}: {exc.strerror}") from None
        mode = os.fstat(self._fd).st_mode
        if stat.S_ISDIR(mode):
            self.close()
            raise SourceError(f"{path} is a directory, not a disk or image file")
        self.path = path
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise Unreadable(offset, length, "media", exc.strerror or "") from None


class SliceReader:
    """A window [start, start+size) of another reader: one partition seen as a disk."""

    def __init__(self, reader: Reader, start: int, size: int) -> None:
        self._reader = reader
        self.start = start
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        """Bytes inside the window only: offsets from damaged metadata may point anywhere."""
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        return bytes(self._reader.read(self.start + offset, min(length, self.size - offset)))
