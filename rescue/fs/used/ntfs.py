"""NTFS: used clusters from $Bitmap (found through the MFT's data runs), metadata = boot
sectors, the MFT, its mirror, the log, the up-case table and every directory index.

Files are named from their $FILE_NAME attributes and parent references, so one pass over the
MFT names every file without reading directory indexes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from rescue.errors import FormatError
from rescue.fs.partitions import Readable
from rescue.fs.used import (
    Extent,
    FileRecord,
    Readability,
    always_readable,
    bitmap_runs,
    checked_read,
)

ATTR_ATTRIBUTE_LIST, ATTR_FILE_NAME, ATTR_DATA = 0x20, 0x30, 0x80
ATTR_INDEX_ALLOCATION, ATTR_BITMAP, ATTR_END = 0xA0, 0xB0, 0xFFFFFFFF
RECORD_IN_USE, RECORD_DIRECTORY = 0x1, 0x2
NAMESPACE_DOS = 2
MFT, MFT_MIRROR, LOG_FILE, BITMAP, UPCASE = 0, 1, 2, 6, 10
ROOT = 5
FIRST_USER_RECORD = 16  # records below this are the file system's own
RECORD_NUMBER_MASK = (1 << 48) - 1

Run = tuple[int, int]  # (first cluster or -1 for sparse, cluster count)


@dataclass
class _Record:
    """Attributes of one file gathered from its base record and extension records."""

    number: int
    flags: int = 0
    names: list[tuple[int, int, str]] = field(default_factory=list)  # parent, namespace, name
    data_runs: list[Run] = field(default_factory=list)
    data_size: int = 0
    resident_data: bool = False
    index_runs: list[Run] = field(default_factory=list)
    has_attribute_list: bool = False
    bitmap: bytes | None = None  # the $MFT's own record-in-use bitmap (resident)
    bitmap_runs: list[Run] = field(default_factory=list)  # ... or where it lives


def decode_runs(data: bytes, pos: int) -> list[Run]:
    """Decode an NTFS mapping-pairs array (offsets relative, signed, sparse when absent)."""
    runs: list[Run] = []
    lcn = 0
    while pos < len(data) and data[pos]:
        header = data[pos]
        length_size, offset_size = header & 0xF, header >> 4
        pos += 1
        if length_size == 0 or length_size > 8 or offset_size > 8 \
                or pos + length_size + offset_size > len(data):
            raise FormatError("NTFS data runs damaged")
        count = int.from_bytes(data[pos:pos + length_size], "little")
        pos += length_size
        if offset_size:
            lcn += int.from_bytes(data[pos:pos + offset_size], "little", signed=True)
            runs.append((lcn, count))
        else:
            runs.append((-1, count))
        pos += offset_size
    return runs


class NtfsFS:
    """One NTFS volume read through `reader` (offsets relative to its start)."""

    fs_type = "ntfs"

    def __init__(self, reader: Readable) -> None:
        self.reader = reader
        boot = checked_read(reader, 0, 512, "NTFS boot sector")
        if boot[3:11] != b"NTFS    ":
            raise FormatError("no NTFS boot sector")
        sector, per_cluster = struct.unpack_from("<HB", boot, 11)
        sectors, mft_lcn, mirror_lcn = struct.unpack_from("<QQQ", boot, 40)
        record_code = struct.unpack_from("<b", boot, 64)[0]
        if sector not in (512, 1024, 2048, 4096) or per_cluster == 0:
            raise FormatError("NTFS boot sector damaged: impossible geometry")
        per_cluster = 1 << (256 - per_cluster) if per_cluster > 0x80 else per_cluster
        self.sector = sector
        self.cluster_size = sector * per_cluster
        self.record_size = 1 << -record_code if record_code < 0 else record_code * \
            self.cluster_size
        # the backup boot sector sits in the sector after the last one the volume counts
        self.size = (sectors + 1) * sector
        if self.size > reader.size:
            raise FormatError(f"NTFS volume claims {self.size} bytes but its partition holds "
                              f"{reader.size}")
        self.clusters = sectors * sector // self.cluster_size
        if not 0 < mft_lcn < self.clusters or not 0 < mirror_lcn < self.clusters \
                or not 256 <= self.record_size <= 65536:
            raise FormatError("NTFS boot sector damaged: MFT outside the volume")
        first = self._record_at(mft_lcn * self.cluster_size, MFT)
        if first is None:
            raise FormatError("NTFS $MFT record is damaged")
        mft = _Record(MFT)
        self._parse_attributes(first, mft)
        if mft.has_attribute_list:
            raise FormatError("NTFS $MFT is spread over extension records (not supported)")
        if not mft.data_runs:
            raise FormatError("NTFS $MFT has no data runs")
        self.mft_runs = self._checked_runs(mft.data_runs, "$MFT")
        self.mft_size = mft.data_size
        self._mft_bitmap = mft.bitmap
        self._mft_bitmap_runs = self._checked_runs(mft.bitmap_runs, "$MFT bitmap")
        self._records: dict[int, _Record] | None = None

    def _checked_runs(self, runs: list[Run], what: str) -> list[Run]:
        for lcn, count in runs:
            if lcn >= 0 and lcn + count > self.clusters:
                raise FormatError(f"NTFS {what} data runs point outside the volume")
        return runs

    def runs_extents(self, runs: list[Run], size: int | None = None) -> list[Extent]:
        """Byte extents of data runs, clipped to `size` (sparse runs take no bytes)."""
        extents: list[Extent] = []
        remaining = size
        for lcn, count in runs:
            length = count * self.cluster_size
            if remaining is not None:
                length = min(length, remaining)
                remaining -= length
            if lcn >= 0 and length > 0:
                extents.append((lcn * self.cluster_size, length))
            if remaining is not None and remaining <= 0:
                break
        return extents

    def record_offset(self, number: int) -> int | None:
        """Byte offset of MFT record `number`, from the MFT's own runs."""
        position = number * self.record_size
        for offset, length in self.runs_extents(self.mft_runs):
            if position < length:
                return offset + position
            position -= length
        return None

    def _record_at(self, offset: int, number: int) -> bytes | None:
        """A record with its update-sequence fixups applied, or None if it is not valid."""
        try:
            raw = bytearray(checked_read(self.reader, offset, self.record_size,
                                         f"NTFS MFT record {number}"))
        except FormatError:
            return None
        if raw[:4] != b"FILE":
            return None
        usa_offset, usa_count = struct.unpack_from("<HH", raw, 4)
        if usa_count < 2 or usa_offset + 2 * usa_count > len(raw) \
                or len(raw) % (usa_count - 1):
            return None
        stride = len(raw) // (usa_count - 1)
        check = raw[usa_offset:usa_offset + 2]
        for i in range(1, usa_count):
            end = i * stride
            if raw[end - 2:end] != check:
                return None  # a torn write: the record cannot be trusted
            raw[end - 2:end] = raw[usa_offset + 2 * i:usa_offset + 2 * i + 2]
        return bytes(raw)

    def _parse_attributes(self, raw: bytes, record: _Record) -> None:
        pos = struct.unpack_from("<H", raw, 20)[0]
        while pos + 16 <= len(raw):
            kind, length = struct.unpack_from("<II", raw, pos)
            if kind == ATTR_END or length < 16 or pos + length > len(raw):
                return
            non_resident, name_length = raw[pos + 8], raw[pos + 9]
            attr = raw[pos:pos + length]
            unnamed = name_length == 0
            if kind == ATTR_ATTRIBUTE_LIST:
                record.has_attribute_list = True
            elif non_resident and length >= 64:
                start_vcn = struct.unpack_from("<Q", attr, 16)[0]
                runs_offset = struct.unpack_from("<H", attr, 32)[0]
                runs = decode_runs(attr, runs_offset)
                if kind == ATTR_DATA and unnamed:
                    if start_vcn == 0:
                        record.data_size = struct.unpack_from("<Q", attr, 48)[0]
                    record.data_runs += runs
                elif kind == ATTR_BITMAP and unnamed:
                    record.bitmap_runs += runs
                else:  # directory indexes, their bitmaps, named streams
                    record.index_runs += runs
            elif not non_resident and length >= 24:
                value_length, value_offset = struct.unpack_from("<IH", attr, 16)
                value = attr[value_offset:value_offset + value_length]
                if kind == ATTR_FILE_NAME and len(value) >= 66:
                    parent = struct.unpack_from("<Q", value, 0)[0] & RECORD_NUMBER_MASK
                    name_chars, namespace = value[64], value[65]
                    name = value[66:66 + 2 * name_chars].decode("utf-16-le", "replace")
                    record.names.append((parent, namespace, name))
                elif kind == ATTR_DATA and unnamed:
                    record.data_size = value_length
                    record.resident_data = True
                elif kind == ATTR_BITMAP and unnamed:
                    record.bitmap = value
            pos += length

    def _load_records(self, readable: Readability) -> dict[int, _Record]:
        """Every in-use record, extension records folded into their base."""
        records: dict[int, _Record] = {}
        count = self.mft_size // self.record_size
        for number in range(count):
            offset = self.record_offset(number)
            if offset is None or not readable(offset, self.record_size):
                continue
            raw = self._record_at(offset, number)
            if raw is None:
                continue
            flags = struct.unpack_from("<H", raw, 22)[0]
            if not flags & RECORD_IN_USE:
                continue
            base = struct.unpack_from("<Q", raw, 32)[0] & RECORD_NUMBER_MASK
            owner = base or number
            record = records.setdefault(owner, _Record(owner))
            if not base:
                record.flags = flags
            try:
                self._parse_attributes(raw, record)
            except FormatError:
                continue
        return records

    def _records_cached(self) -> dict[int, _Record]:
        if self._records is None:
            self._records = self._load_records(always_readable)
        return self._records

    # ---- used map ----------------------------------------------------------------------------

    def metadata(self) -> list[Extent]:
        extents: list[Extent] = [(0, 8192), (self.size - self.sector, self.sector)]
        extents += self.runs_extents(self.mft_runs)
        records = self._records_cached()
        for number in (MFT_MIRROR, LOG_FILE, BITMAP, UPCASE):
            if number in records:
                extents += self.runs_extents(records[number].data_runs)
        for record in records.values():
            extents += self.runs_extents(record.index_runs)
        return extents

    def used(self) -> list[Extent]:
        bitmap = self._records_cached().get(BITMAP)
        if bitmap is None or not bitmap.data_runs:
            raise FormatError("NTFS $Bitmap record is missing or damaged")
        needed = (self.clusters + 7) // 8
        if bitmap.data_size < needed:
            raise FormatError("NTFS $Bitmap is shorter than the volume")
        runs = self._checked_runs(bitmap.data_runs, "$Bitmap")
        data = b"".join(checked_read(self.reader, off, length, "NTFS $Bitmap")
                        for off, length in self.runs_extents(runs, needed))
        extents = self.metadata()
        extents += [(first * self.cluster_size, count * self.cluster_size)
                    for first, count in bitmap_runs(data, self.clusters)]
        return extents

    # ---- files -------------------------------------------------------------------------------

    def files(self, readable: Readability = always_readable) -> Iterator[FileRecord]:
        """Every user file and directory; records that cannot be read are reported by number,
        since their names live inside them."""
        records = self._load_records(readable)
        names = {number: _best_name(record) for number, record in records.items()}

        def path_of(number: int) -> str:
            parts: list[str] = []
            seen: set[int] = set()
            while number != ROOT and number not in seen:
                seen.add(number)
                entry = names.get(number)
                if entry is None:
                    parts.append(f"<MFT record {number}>")
                    break
                parts.append(entry[1])
                number = entry[0]
            return "/" + "/".join(reversed(parts))

        for number, record in sorted(records.items()):
            if number < FIRST_USER_RECORD or names.get(number) is None:
                continue
            offset = self.record_offset(number)
            meta: list[Extent] = [(offset, self.record_size)] if offset is not None else []
            is_dir = bool(record.flags & RECORD_DIRECTORY)
            meta += self.runs_extents(record.index_runs)
            size = record.data_size if not is_dir else 0
            data = [] if record.resident_data else self.runs_extents(record.data_runs, size)
            yield FileRecord(path_of(number), size, tuple(data), tuple(meta),
                             not record.has_attribute_list or bool(data) or size == 0)
        in_use = self._records_in_use(readable)
        for number in range(FIRST_USER_RECORD, self.mft_size // self.record_size):
            offset = self.record_offset(number)
            if offset is not None and not readable(offset, self.record_size) \
                    and (in_use is None or in_use[number // 8] >> (number % 8) & 1):
                yield FileRecord(f"<MFT record {number}>", None, (),
                                 ((offset, self.record_size),), complete=False)

    def _records_in_use(self, readable: Readability) -> bytes | None:
        """The $MFT's bitmap of records in use, or None if it cannot be read."""
        if self._mft_bitmap is not None:
            data = self._mft_bitmap
        else:
            extents = self.runs_extents(self._mft_bitmap_runs)
            if not extents or not all(readable(*extent) for extent in extents):
                return None
            try:
                data = b"".join(checked_read(self.reader, off, length, "NTFS $MFT bitmap")
                                for off, length in extents)
            except FormatError:
                return None
        needed = -(-self.mft_size // self.record_size // 8)
        return data.ljust(needed + 1, b"\0")


def _best_name(record: _Record) -> tuple[int, str] | None:
    """The long (Win32 or POSIX) name and its parent; a DOS 8.3 name only as a last resort."""
    ranked = sorted(record.names, key=lambda item: item[1] == NAMESPACE_DOS)
    return (ranked[0][0], ranked[0][2]) if ranked else None
