"""Which bytes of a disk to image, and which first: partitions × used-block maps → domains.

`plan_disk` turns a disk (or a single file system) into two range maps: `used` (everything
worth reading) and `metadata` (read before file data, so the file systems mount even if the
disk dies halfway). Whatever cannot be trusted is imaged whole, with a warning.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from rescue.errors import FormatError
from rescue.fs.partitions import (
    READ_ERRORS,
    PartitionEntry,
    SliceReader,
    read_partition_table,
)
from rescue.fs.signatures import SIGNATURES
from rescue.fs.used import Extent, FileSystem, UsedMap, normalize
from rescue.fs.used.exfat import ExfatFS
from rescue.fs.used.ext import ExtFS, has_backup_superblock
from rescue.fs.used.fat import FatFS
from rescue.fs.used.ntfs import NtfsFS
from rescue.fs.used.partclone import partclone_used
from rescue.io.reader import Reader
from rescue.io.source import Source
from rescue.rangemap import FINISHED, RangeMap

NATIVE: dict[str, type[ExtFS] | type[FatFS] | type[ExfatFS] | type[NtfsFS]] = {
    "ext": ExtFS, "fat": FatFS, "exfat": ExfatFS, "ntfs": NtfsFS}
PARTCLONE = frozenset(signature.name for signature in SIGNATURES if signature.partclone)
DOMAIN_ALIGN = 4096  # domain edges on 4 KiB: whole physical sectors and O_DIRECT-friendly
HEAD = 1 << 20


def _probe(reader: Reader, offset: int, length: int) -> bytes:
    if offset + length > reader.size:
        return b""
    try:
        return bytes(reader.read(offset, length))
    except READ_ERRORS:  # an unreadable probe area just means "not this file system"
        return b""


def signatures_found(reader: Reader) -> list[str]:
    """Every file-system type whose signature the volume shows, ours and those partclone
    knows, in the table's order; ext by a backup superblock when its primary one is lost."""
    read = functools.cache(functools.partial(_probe, reader))
    found = [signature.name for signature in SIGNATURES
             if (signature.name in NATIVE or signature.name in PARTCLONE) and signature.found(read)]
    if not found and has_backup_superblock(reader):
        return ["ext"]
    return found


def detect(reader: Reader) -> str | None:
    """The file-system type by its signature; None when there is none, or several: a new file
    system may leave an old one's magic in place (a formatter that writes only its boot sector
    keeps an old ext superblock at 0x438), and trusting the wrong one would skip the data of
    the right one."""
    found = signatures_found(reader)
    return found[0] if len(found) == 1 else None


def open_fs(reader: Reader) -> FileSystem:
    """A native parser for the file system in `reader`; FormatError if there is none."""
    kind = detect(reader)
    if kind not in NATIVE:
        raise FormatError(f"no native parser for {kind or 'an unknown file system'}")
    return NATIVE[kind](reader)


def used_map(reader: Reader, path: str | None = None, offset: int = 0) -> UsedMap:
    """The used map of the file system in `reader` (which is `path` from `offset`, for
    partclone). Never raises for bad input: it falls back to the whole area with a warning."""
    size = reader.size
    whole = ((0, size),)
    found = signatures_found(reader)
    if len(found) > 1:
        return UsedMap(None, size, whole, whole, "whole",
                       (f"signatures of {' and '.join(found)} found together: none is "
                        "trusted; imaging the whole area",))
    kind = found[0] if found else None
    if kind in NATIVE:
        try:
            fs = NATIVE[kind](reader)
            used = normalize(fs.used(), size, DOMAIN_ALIGN)
            metadata = normalize(fs.metadata(), size, DOMAIN_ALIGN)
        except FormatError as exc:
            return UsedMap(kind, size, whole, whole, "whole",
                           (f"{exc}; imaging the whole area",))
        return UsedMap(fs.fs_type, size, used, metadata, "native", fs.warnings)
    if kind is None:
        return UsedMap(None, size, whole, whole, "whole",
                       ("unknown file system, so its free blocks cannot be told apart: imaging the "
                        "whole area, nothing skipped",))
    if path is None:
        return UsedMap(kind, size, whole, whole, "whole",
                       (f"{kind} needs partclone and a file path; imaging the whole area",))
    try:
        used = normalize(partclone_used(path, offset, size, kind), size, DOMAIN_ALIGN)
    except FormatError as exc:
        return UsedMap(kind, size, whole, whole, "whole", (f"{exc}; imaging the whole area",))
    # partclone does not say which blocks are metadata: the used part of the file system's
    # first MiB is the best guess (superblocks and primary structures live there)
    head = tuple((off, min(off + length, HEAD) - off) for off, length in used if off < HEAD)
    return UsedMap(kind, size, used, head, "partclone")


@dataclass(frozen=True)
class AreaPlan:
    """One file-system area of the disk and its used map."""

    partition: PartitionEntry | None  # None: the whole disk holds one file system
    start: int
    used: UsedMap


@dataclass(frozen=True)
class DiskPlan:
    size: int
    table_kind: str | None
    used: RangeMap  # '+' where to read
    metadata: RangeMap  # '+' what to read first (inside `used`)
    areas: tuple[AreaPlan, ...]
    warnings: tuple[str, ...]

    @property
    def used_bytes(self) -> int:
        return self.used.totals()[FINISHED]


def _range_map(size: int, extents: Iterator[Extent] | list[Extent]) -> RangeMap:
    rmap = RangeMap(size)
    for offset, length in normalize(extents, size, DOMAIN_ALIGN):
        rmap.set(offset, length, FINISHED)
    return rmap


def plan_disk(reader: Reader, path: str | None = None, sector_size: int = 512) -> DiskPlan:
    """Used and metadata domains of a whole disk, a partition or a file-system image."""
    size = reader.size
    table = read_partition_table(reader, sector_size)
    warnings = list(table.warnings)
    areas: list[AreaPlan] = []
    used: list[Extent] = list(table.table_areas)
    metadata: list[Extent] = list(table.table_areas)
    if table.kind is None:
        areas.append(AreaPlan(None, 0, used_map(reader, path)))
    else:
        parts = table.file_systems
        first = min((p.start for p in parts), default=size)
        used.append((0, first))  # boot code and loaders live before the first partition
        metadata.append((0, first))
        if table.warnings or not parts:
            # a damaged table may have lost partitions: keep everything outside the known ones
            warnings.append("partition table damaged; imaging all space outside partitions")
            used += _gaps(size, parts)
        for part in parts:
            found = used_map(SliceReader(reader, part.start, part.size), path, part.start)
            areas.append(AreaPlan(part, part.start, found))
    for area in areas:
        where = f"partition {area.partition.number}" if area.partition else "disk"
        warnings += [f"{where}: {w}" for w in area.used.warnings]
        used += [(area.start + off, length) for off, length in area.used.used]
        metadata += [(area.start + off, length) for off, length in area.used.metadata]
    return DiskPlan(size, table.kind, _range_map(size, used + metadata), _range_map(size, metadata),
                    tuple(areas), tuple(warnings))


def _gaps(size: int, parts: tuple[PartitionEntry, ...]) -> list[Extent]:
    gaps, pos = [], 0
    for part in sorted(parts, key=lambda p: p.start):
        if part.start > pos:
            gaps.append((pos, part.start - pos))
        pos = max(pos, part.end)
    if pos < size:
        gaps.append((pos, size - pos))
    return gaps


class SourceReader:
    """Sector-aligned reads of a rescue Source for the planners, which read small unaligned
    pieces: an O_DIRECT source needs aligned offsets, and its buffer is reused per read."""

    def __init__(self, source: Source, chunk: int = 1 << 20) -> None:
        self._source = source
        self.size = source.size
        self._sector = max(source.sector_size, 512)
        self._chunk = chunk

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        begin = offset // self._sector * self._sector
        parts = []
        for pos in range(begin, end, self._chunk):
            parts.append(bytes(self._source.read(pos, min(self._chunk, end - pos))))
        return b"".join(parts)[offset - begin:end - begin]


class ResumeReader:
    """A disk read from its image where the map says rescued, and from the source only
    elsewhere: planning a resumed job reads nothing twice from a failing disk."""

    def __init__(self, image: Reader, source: Reader, rmap: RangeMap) -> None:
        self._image, self._source, self._rmap = image, source, rmap
        self.size = source.size

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        parts = []
        while offset < end:
            start, size, state = self._rmap.area_at(offset)
            stop = min(start + size, end)
            reader = self._image if state == FINISHED else self._source
            parts.append(bytes(reader.read(offset, stop - offset)))
            offset = stop
        return b"".join(parts)
