"""NTFS: used clusters from $Bitmap (found through the MFT's data runs), metadata = boot
sectors, the MFT, its mirror, the log, the up-case table and every directory index.

Files are named from their $FILE_NAME attributes and parent references, so one pass over the
MFT names every file without reading directory indexes.

A file whose attributes outgrow its record keeps an $ATTRIBUTE_LIST there and continues in
extension records; a long attribute is then split into pieces, each a VCN range with its own
runs. The $MFT itself can be that fragmented: its record 0 then names the extension records
that hold the rest of its runs, and those are read through the runs already known.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from rescue.errors import FormatError
from rescue.fs.signatures import BY_NAME, in_bytes
from rescue.fs.used import (
    Extent,
    FileRecord,
    Readability,
    always_readable,
    bitmap_runs,
    checked_read,
)
from rescue.io.reader import Reader

ATTR_ATTRIBUTE_LIST, ATTR_FILE_NAME, ATTR_DATA = 0x20, 0x30, 0x80
ATTR_INDEX_ALLOCATION, ATTR_BITMAP, ATTR_END = 0xA0, 0xB0, 0xFFFFFFFF
RECORD_IN_USE, RECORD_DIRECTORY = 0x1, 0x2
NAMESPACE_DOS = 2
MFT, MFT_MIRROR, LOG_FILE, BITMAP, UPCASE = 0, 1, 2, 6, 10
ROOT = 5
FIRST_USER_RECORD = 16  # records below this are the file system's own
RECORD_NUMBER_MASK = (1 << 48) - 1
LIST_ENTRY = struct.Struct("<IHBBQQH")  # type, length, name chars, name offset, VCN, ref, id

Run = tuple[int, int]  # (first cluster or -1 for sparse, cluster count)


@dataclass
class _Stream:
    """One non-resident attribute, whose pieces may sit in several records of its file."""

    pieces: list[tuple[int, int, list[Run]]] = field(default_factory=list)  # VCNs, runs
    size: int = 0  # bytes of content, told by the piece at VCN 0
    clusters: int | None = None  # clusters allocated, told by the piece at VCN 0

    def joined(self) -> tuple[list[Run], int]:
        """The runs in VCN order from VCN 0 up to the first missing, overlapping or
        inconsistent piece, and the VCN they reach."""
        runs: list[Run] = []
        vcn = 0
        for first, last, piece in sorted(self.pieces, key=lambda item: item[0]):
            if first != vcn or sum(count for _, count in piece) != last - first + 1:
                break
            runs += piece
            vcn = last + 1
        return runs, vcn

    def complete(self) -> bool:
        return self.clusters is not None and self.joined()[1] >= self.clusters


@dataclass
class _Record:
    """Attributes of one file gathered from its base record and extension records."""

    number: int
    flags: int = 0
    names: list[tuple[int, int, str]] = field(default_factory=list)  # parent, namespace, name
    data: _Stream = field(default_factory=_Stream)  # unnamed $DATA when non-resident
    resident_size: int | None = None  # ... or its size when resident
    metadata_runs: list[Run] = field(default_factory=list)  # indexes, named streams, lists
    attribute_list: bytes | _Stream | None = None  # its value when resident, else its runs
    bitmap: bytes | None = None  # the $MFT's own record-in-use bitmap (resident)
    bitmap_stream: _Stream = field(default_factory=_Stream)  # ... or where it lives
    extensions: list[int] = field(default_factory=list)  # extension records folded in

    @property
    def data_size(self) -> int:
        return self.resident_size if self.resident_size is not None else self.data.size


@dataclass(frozen=True)
class ListEntry:
    """One $ATTRIBUTE_LIST entry: which record holds an attribute (or a piece of it)."""

    kind: int
    named: bool
    first_vcn: int
    record: int
    sequence: int  # the record's sequence number the list expects


def _attributes(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, bytes) of each attribute of a record, up to the end marker or damage."""
    if len(raw) < 22:
        return
    pos = struct.unpack_from("<H", raw, 20)[0]
    while pos + 16 <= len(raw):
        kind, length = struct.unpack_from("<II", raw, pos)
        if kind == ATTR_END or length < 16 or pos + length > len(raw):
            return
        yield kind, raw[pos:pos + length]
        pos += length


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


def parse_attribute_list(value: bytes) -> list[ListEntry]:
    """The entries of an $ATTRIBUTE_LIST value."""
    entries: list[ListEntry] = []
    pos = 0
    while pos + LIST_ENTRY.size <= len(value):
        kind, length, name_chars, _, first_vcn, reference, _ = LIST_ENTRY.unpack_from(value, pos)
        if length < LIST_ENTRY.size or pos + length > len(value):
            raise FormatError("NTFS attribute list damaged")
        entries.append(ListEntry(kind, name_chars > 0, first_vcn, reference & RECORD_NUMBER_MASK,
                                 reference >> 48))
        pos += length
    return entries


class _Layout:
    """Where each byte of a non-resident stream lies on the volume, found by bisection, so
    reading one MFT record costs no walk over thousands of runs."""

    def __init__(self, runs: list[Run], cluster_size: int) -> None:
        self.starts: list[int] = []  # stream position where each run begins
        self.places: list[int] = []  # volume byte offset of each run, -1 when sparse
        position = 0
        for lcn, count in runs:
            self.starts.append(position)
            self.places.append(lcn * cluster_size if lcn >= 0 else -1)
            position += count * cluster_size
        self.size = position

    def extents(self, offset: int, length: int) -> list[Extent] | None:
        """Volume extents of stream bytes [offset, offset + length), in stream order; None
        when part of them is sparse or beyond the runs."""
        end = offset + length
        if offset < 0 or end > self.size:
            return None
        extents: list[Extent] = []
        index = bisect_right(self.starts, offset) - 1
        while offset < end:
            run_end = self.starts[index + 1] if index + 1 < len(self.starts) else self.size
            take = min(end, run_end) - offset
            if take > 0:
                if self.places[index] < 0:
                    return None
                place = self.places[index] + offset - self.starts[index]
                if extents and sum(extents[-1]) == place:
                    extents[-1] = (extents[-1][0], extents[-1][1] + take)
                else:
                    extents.append((place, take))
                offset += take
            index += 1
        return extents


class NtfsFS:
    """One NTFS volume read through `reader` (offsets relative to its start)."""

    fs_type = "ntfs"
    warnings: tuple[str, ...] = ()

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        boot = checked_read(reader, 0, 512, "NTFS boot sector")
        if not BY_NAME["ntfs"].found(in_bytes(boot)):
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
        mft = self._load_mft(mft_lcn)
        self.mft_runs, _ = mft.data.joined()
        self.mft_size = mft.data.size
        self._mft_bitmap = mft.bitmap
        self._mft_bitmap_stream = mft.bitmap_stream
        self._checked_runs(mft.bitmap_stream.joined()[0], "$MFT bitmap")
        self._records: dict[int, _Record] | None = None
        self._names_by_folder: dict[int, list[tuple[int, str, bool]]] | None = None

    def _load_mft(self, mft_lcn: int) -> _Record:
        """Record 0 with the extension records its attribute list names for the $MFT's
        $DATA and $BITMAP, each read through the runs known so far (the records at the
        start of the MFT lie in its first run), and the complete runs checked."""
        first_clusters = -(-FIRST_USER_RECORD * self.record_size // self.cluster_size)
        self._layout = _Layout([(mft_lcn, first_clusters)], self.cluster_size)
        raw = self._read_record(MFT)
        if raw is None:
            raise FormatError("NTFS $MFT record is damaged")
        mft = _Record(MFT)
        self._parse_attributes(raw, mft, MFT)
        pending: dict[int, int] = {}  # extension record → the sequence number expected
        if mft.attribute_list is not None:
            entries = parse_attribute_list(self._attribute_list_value(mft, always_readable,
                                                                      strict=True) or b"")
            pending = {entry.record: entry.sequence for entry in entries
                       if entry.kind in (ATTR_DATA, ATTR_BITMAP) and not entry.named
                       and entry.record != MFT}
        while pending:
            runs, reached = mft.data.joined()
            if reached:
                self._layout = _Layout(runs, self.cluster_size)
            reachable = sorted(n for n in pending if self.record_extents(n) is not None)
            if not reachable:
                raise FormatError(f"NTFS $MFT extension record {min(pending)} lies beyond "
                                  "the $MFT runs its other records give")
            for number in reachable:
                raw = self._read_record(number)
                if raw is None or self._owner(raw, number) != MFT \
                        or not struct.unpack_from("<H", raw, 22)[0] & RECORD_IN_USE \
                        or struct.unpack_from("<H", raw, 16)[0] != pending[number]:
                    raise FormatError(f"NTFS $MFT extension record {number} is damaged")
                del pending[number]
                self._parse_attributes(raw, mft, number)
        runs, reached = mft.data.joined()
        if not mft.data.complete():
            raise FormatError(f"NTFS $MFT data runs break off at VCN {reached}")
        if not runs or runs[0][0] != mft_lcn or any(lcn < 0 for lcn, _ in runs):
            raise FormatError("NTFS $MFT data runs disagree with the boot sector")
        self._layout = _Layout(self._checked_runs(runs, "$MFT"), self.cluster_size)
        if mft.data.size > self._layout.size:
            raise FormatError("NTFS $MFT is larger than its data runs")
        return mft

    def _checked_runs(self, runs: list[Run], what: str) -> list[Run]:
        for lcn, count in runs:
            if lcn >= 0 and lcn + count > self.clusters:
                raise FormatError(f"NTFS {what} data runs point outside the volume")
        return runs

    def runs_extents(self, runs: list[Run], size: int | None = None) -> list[Extent]:
        """Byte extents of data runs, clipped to `size` (sparse runs take no bytes)."""
        return [(where, length) for _, where, length in self.runs_pieces(runs, size)]

    def runs_pieces(self, runs: list[Run], size: int | None = None
                    ) -> list[tuple[int, int, int]]:
        """(offset in the stream, byte offset, length) of data runs, clipped to `size`;
        sparse runs take no piece but move the stream offset on."""
        pieces: list[tuple[int, int, int]] = []
        remaining = size
        position = 0
        for lcn, count in runs:
            length = count * self.cluster_size
            if remaining is not None:
                length = min(length, remaining)
                remaining -= length
            if lcn >= 0 and length > 0:
                pieces.append((position, lcn * self.cluster_size, length))
            position += length
            if remaining is not None and remaining <= 0:
                break
        return pieces

    def record_extents(self, number: int) -> list[Extent] | None:
        """Where MFT record `number` lies (in more than one piece when a record is larger
        than a cluster and its clusters are not contiguous)."""
        return self._layout.extents(number * self.record_size, self.record_size)

    def _read_extents(self, extents: list[Extent], what: str) -> bytes:
        return b"".join(checked_read(self.reader, offset, length, what)
                        for offset, length in extents)

    def _read_record(self, number: int, readable: Readability = always_readable
                     ) -> bytes | None:
        """A record with its update-sequence fixups applied, or None if it is unreadable,
        beyond the MFT or not valid."""
        extents = self.record_extents(number)
        if extents is None or not all(readable(*extent) for extent in extents):
            return None
        try:
            raw = bytearray(self._read_extents(extents, f"NTFS MFT record {number}"))
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

    @staticmethod
    def _owner(raw: bytes, number: int) -> int:
        """The base record an in-use record belongs to (itself for a base record; an
        extension record of the $MFT names record 0 with a non-zero sequence number)."""
        reference = struct.unpack_from("<Q", raw, 32)[0]
        return reference & RECORD_NUMBER_MASK if reference else number

    def _read_stream(self, stream: _Stream, what: str,
                     readable: Readability = always_readable) -> bytes | None:
        """The content of a non-resident metadata stream (never sparse), or None if any of
        it lies on an area `readable` rejects; FormatError when its runs are damaged."""
        runs, _ = stream.joined()
        extents = _Layout(runs, self.cluster_size).extents(0, stream.size)
        if extents is None:
            raise FormatError(f"NTFS {what} runs are sparse or shorter than its size")
        if not all(readable(*extent) for extent in extents):
            return None
        return self._read_extents(extents, f"NTFS {what}")

    def _attribute_list_value(self, record: _Record, readable: Readability,
                              strict: bool = False) -> bytes | None:
        """The record's $ATTRIBUTE_LIST value; None when it cannot be read, or FormatError
        when `strict`."""
        if not isinstance(record.attribute_list, _Stream):
            return record.attribute_list
        try:
            return self._read_stream(record.attribute_list, "attribute list", readable)
        except FormatError:
            if strict:
                raise
            return None

    def _parse_attributes(self, raw: bytes, record: _Record, number: int) -> None:
        """Fold the attributes of record `number` (the base or an extension) into `record`."""
        if number != record.number:
            record.extensions.append(number)
        for kind, attr in _attributes(raw):
            length = len(attr)
            non_resident, name_length = attr[8], attr[9]
            unnamed = name_length == 0
            if non_resident and length >= 64:
                first_vcn, last_vcn = struct.unpack_from("<qq", attr, 16)
                runs_offset = struct.unpack_from("<H", attr, 32)[0]
                runs = decode_runs(attr, runs_offset)
                stream = record.data if kind == ATTR_DATA and unnamed else \
                    record.bitmap_stream if kind == ATTR_BITMAP and unnamed else None
                if kind == ATTR_ATTRIBUTE_LIST:
                    stream = record.attribute_list = _Stream()
                    record.metadata_runs += runs
                if stream is None:  # directory indexes, their bitmaps, named streams
                    record.metadata_runs += runs
                else:
                    stream.pieces.append((first_vcn, last_vcn, runs))
                    if first_vcn == 0:
                        allocated, stream.size = struct.unpack_from("<QQ", attr, 40)
                        stream.clusters = allocated // self.cluster_size
            elif not non_resident and length >= 24:
                value_length, value_offset = struct.unpack_from("<IH", attr, 16)
                value = attr[value_offset:value_offset + value_length]
                if kind == ATTR_FILE_NAME and len(value) >= 66:
                    parent = struct.unpack_from("<Q", value, 0)[0] & RECORD_NUMBER_MASK
                    name_chars, namespace = value[64], value[65]
                    name = value[66:66 + 2 * name_chars].decode("utf-16-le", "replace")
                    record.names.append((parent, namespace, name))
                elif kind == ATTR_DATA and unnamed:
                    record.resident_size = value_length
                elif kind == ATTR_BITMAP and unnamed:
                    record.bitmap = value
                elif kind == ATTR_ATTRIBUTE_LIST:
                    record.attribute_list = value

    def resident_value(self, number: int, kind: int) -> bytes | None:
        """The value of the first resident attribute of type `kind` in MFT record `number`
        (None if the record is unreadable or has none): what libfsntfs does not decode."""
        raw = self._read_record(number)
        for found, attr in _attributes(raw or b""):
            if found == kind and not attr[8] and len(attr) >= 24:
                value_length, value_offset = struct.unpack_from("<IH", attr, 16)
                return attr[value_offset:value_offset + value_length]
        return None

    def _load_records(self, readable: Readability) -> dict[int, _Record]:
        """Every in-use record, extension records folded into their base."""
        records: dict[int, _Record] = {}
        for number in range(self.mft_size // self.record_size):
            raw = self._read_record(number, readable)
            if raw is None:
                continue
            flags = struct.unpack_from("<H", raw, 22)[0]
            if not flags & RECORD_IN_USE:
                continue
            owner = self._owner(raw, number)
            record = records.setdefault(owner, _Record(owner))
            if owner == number:
                record.flags = flags
            try:
                self._parse_attributes(raw, record, number)
            except FormatError:
                continue
        return records

    def names_in(self, folder: int) -> list[tuple[int, str, bool]]:
        """(record, name, whether it is a folder) of each name the MFT's records give in
        `folder`, DOS 8.3 aliases left out: read from every record, not from the folder's
        own index, so they survive damage to it."""
        if self._names_by_folder is None:
            found: dict[int, list[tuple[int, str, bool]]] = {}
            for number, record in self._records_cached().items():
                for parent, namespace, name in record.names:
                    if namespace != NAMESPACE_DOS and parent != number:
                        found.setdefault(parent, []).append(
                            (number, name, bool(record.flags & RECORD_DIRECTORY)))
            self._names_by_folder = found
        return self._names_by_folder.get(folder, [])

    def _records_cached(self) -> dict[int, _Record]:
        if self._records is None:
            self._records = self._load_records(always_readable)
        return self._records

    # ---- used map ----------------------------------------------------------------------------

    def metadata(self) -> list[Extent]:
        extents: list[Extent] = [(0, 8192), (self.size - self.sector, self.sector)]
        extents += self.runs_extents(self.mft_runs)
        extents += self.runs_extents(self._mft_bitmap_stream.joined()[0])
        records = self._records_cached()
        for number in (MFT_MIRROR, LOG_FILE, BITMAP, UPCASE):
            if number in records:
                extents += self.runs_extents(records[number].data.joined()[0])
        for record in records.values():
            extents += self.runs_extents(record.metadata_runs)
        return extents

    def used(self) -> list[Extent]:
        bitmap = self._records_cached().get(BITMAP)
        if bitmap is None or not bitmap.data.pieces:
            raise FormatError("NTFS $Bitmap record is missing or damaged")
        if bitmap.data.size < (self.clusters + 7) // 8:
            raise FormatError("NTFS $Bitmap is shorter than the volume")
        self._checked_runs(bitmap.data.joined()[0], "$Bitmap")
        data = self._read_stream(bitmap.data, "$Bitmap") or b""
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
            meta, complete = self._own_records(record, readable)
            meta += self.runs_extents(record.metadata_runs)
            is_dir = bool(record.flags & RECORD_DIRECTORY)
            size = record.data_size if not is_dir else 0
            pieces: list[tuple[int, int, int]] = []
            if not is_dir and record.resident_size is None and record.data.pieces:
                pieces = self.runs_pieces(record.data.joined()[0], size)
                complete = complete and record.data.complete()
            yield FileRecord(path_of(number), size, tuple((at, n) for _, at, n in pieces),
                             tuple(meta), complete, tuple(start for start, _, _ in pieces),
                             is_dir)
        in_use = self._records_in_use(readable)
        for number in range(FIRST_USER_RECORD, self.mft_size // self.record_size):
            extents = self.record_extents(number)
            if extents and not all(readable(*extent) for extent in extents) \
                    and (in_use is None or in_use[number // 8] >> (number % 8) & 1):
                yield FileRecord(f"<MFT record {number}>", None, (), tuple(extents),
                                 complete=False)

    def _own_records(self, record: _Record, readable: Readability
                     ) -> tuple[list[Extent], bool]:
        """Where a file's base and extension records lie, and whether all of them were read:
        its attribute list names the extension records, even those that could not be read."""
        numbers = {record.number, *record.extensions}
        complete = True
        if record.attribute_list is not None:
            value = self._attribute_list_value(record, readable)
            try:
                listed = {entry.record for entry in parse_attribute_list(value or b"")}
            except FormatError:
                listed = set()
            complete = value is not None and listed <= numbers
            numbers |= listed
        extents = [extent for number in sorted(numbers)
                   for extent in self.record_extents(number) or []]
        return extents, complete

    def _records_in_use(self, readable: Readability) -> bytes | None:
        """The $MFT's bitmap of records in use, or None if it cannot be read."""
        if self._mft_bitmap is not None:
            data: bytes | None = self._mft_bitmap
        else:
            try:
                data = self._read_stream(self._mft_bitmap_stream, "$MFT bitmap", readable)
            except FormatError:
                return None
        if not data:
            return None
        needed = -(-self.mft_size // self.record_size // 8)
        return data.ljust(needed + 1, b"\0")


def _best_name(record: _Record) -> tuple[int, str] | None:
    """The long (Win32 or POSIX) name and its parent; a DOS 8.3 name only as a last resort."""
    ranked = sorted(record.names, key=lambda item: item[1] == NAMESPACE_DOS)
    return (ranked[0][0], ranked[0][2]) if ranked else None
