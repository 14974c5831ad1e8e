"""Bad or never-read ranges → the files they hit, with the bytes each file lost.

A file is affected when its data or its own metadata (inode or MFT record, extent-tree or
indirect blocks, directory entry, FAT entries) touches a range the rescue did not read. When
the metadata that describes a file is lost, all of the file counts as lost: nobody can say
which of its blocks survived.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from dataclasses import asdict, dataclass

from rescue.errors import ExitCode, FormatError, UsageError
from rescue.formats import mapfile
from rescue.formats.image import open_reader, read_manifest
from rescue.fs.domain import open_fs
from rescue.fs.partitions import PartitionEntry, SliceReader, read_partition_table
from rescue.fs.used import Extent
from rescue.io.reader import Reader
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, RangeMap


class Damage:
    """The ranges a rescue did not read, as sorted arrays for fast overlap queries."""

    def __init__(self, rmap: RangeMap, base: int = 0, limit: int | None = None) -> None:
        end_limit = rmap.size if limit is None else base + limit
        self.starts: list[int] = []
        self.ends: list[int] = []
        for pos, length, state in rmap.areas():
            begin, end = max(pos, base), min(pos + length, end_limit)
            if state != FINISHED and begin < end:
                self.starts.append(begin - base)
                self.ends.append(end - base)
        self.total = sum(e - s for s, e in zip(self.starts, self.ends, strict=True))

    def overlap(self, offset: int, length: int) -> int:
        """Bytes of [offset, offset+length) that were not read."""
        end = offset + length
        i = max(bisect_right(self.starts, offset) - 1, 0)
        hit = 0
        while i < len(self.starts) and self.starts[i] < end:
            hit += max(0, min(end, self.ends[i]) - max(offset, self.starts[i]))
            i += 1
        return hit

    def readable(self, offset: int, length: int) -> bool:
        return self.overlap(offset, length) == 0


@dataclass(frozen=True)
class AffectedFile:
    partition: int | None  # None: the disk holds one file system without a table
    fs_type: str
    path: str
    size: int | None  # None when the file's own metadata is unreadable
    lost: int | None  # bytes of its contents lost; None: unknown, count all of it
    metadata_hit: bool  # its inode/record/map/entry touches damage

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DamageReport:
    damaged_bytes: int  # bytes not read, over the whole image
    files: tuple[AffectedFile, ...]
    warnings: tuple[str, ...]  # areas whose files could not be listed, and why
    files_known: bool = True  # False: some damage lies where files could not all be listed

    @property
    def exit_code(self) -> ExitCode:
        """1 when a bad or never-read range hits any file, as `rescue report` documents, or
        may hit files nobody could list: a script must not take that for a clean image."""
        return ExitCode.UNREADABLE if self.files or not self.files_known else ExitCode.OK


def _sum(damage: Damage, extents: tuple[Extent, ...]) -> int:
    return sum(damage.overlap(offset, length) for offset, length in extents)


def _area_files(reader: Reader, damage: Damage, number: int | None
                ) -> tuple[list[AffectedFile], list[str], bool]:
    """The files `damage` hits in one area, warnings, and whether every file was listed."""
    where = f"partition {number}" if number is not None else "disk"
    try:
        fs = open_fs(reader)
    except FormatError as exc:
        note = f"{where}: {exc}"
        return [], [f"{note}; {damage.total} damaged bytes there not mapped to files"], False
    found: list[AffectedFile] = []
    notes = [f"{where}: {warning}" for warning in fs.warnings]
    try:
        for record in fs.files(damage.readable):
            data_lost = _sum(damage, record.data)
            metadata_hit = _sum(damage, record.metadata) > 0
            if record.size is None:
                lost = None
            elif not record.complete:
                lost = record.size
            else:
                lost = data_lost
            if lost is None or lost or metadata_hit:
                found.append(AffectedFile(number, fs.fs_type, record.path, record.size, lost,
                                          metadata_hit))
    except FormatError as exc:
        return found, [*notes, f"{where}: file listing stopped: {exc}"], False
    return found, notes, True


def affected_files(reader: Reader, rmap: RangeMap, sector_size: int = 512) -> DamageReport:
    """Every file whose data or metadata intersects a range `rmap` does not mark finished."""
    whole = Damage(rmap)
    if whole.total == 0:
        return DamageReport(0, (), ())
    table = read_partition_table(reader, sector_size)
    warnings = list(table.warnings)
    files: list[AffectedFile] = []
    files_known = True
    areas: list[tuple[PartitionEntry | None, int, int]] = \
        [(p, p.start, p.size) for p in table.file_systems] if table.kind else \
        [(None, 0, reader.size)]
    for part, start, size in areas:
        damage = Damage(rmap, start, size)
        if not damage.total:
            continue
        found, notes, listed = _area_files(SliceReader(reader, start, size), damage,
                                           part.number if part else None)
        files += found
        warnings += notes
        files_known &= listed
    return DamageReport(whole.total, tuple(files), tuple(warnings), files_known)


def image_damage_report(image: str, map_path: str | None = None, image_format: str | None = None
                        ) -> tuple[DamageReport, dict[str, int]]:
    """The report for `image`, and the byte totals of each unfinished state in its map."""
    map_path = map_path or f"{image}.map"
    if not os.path.exists(map_path):
        raise UsageError(f"no mapfile {map_path}; name it with --map")
    reader = open_reader(image, image_format)
    try:
        rmap = mapfile.load(map_path, reader.size).rmap
        manifest = read_manifest(image, reader)
        sector = int(manifest.source.get("logical_sector_size") or 512) if manifest else 512
        report = affected_files(reader, rmap, sector)
    finally:
        reader.close()
    totals = rmap.totals()
    states = {"bad": totals[BAD], "non_trimmed": totals[NON_TRIMMED],
              "non_scraped": totals[NON_SCRAPED], "non_tried": totals[NON_TRIED]}
    return report, states
