"""The files a user wants first: paths looked up in the file systems of a partly rescued
image, and how far each of those files has come.

A rescue that reads metadata first can name files before it reads their data. The paths are
looked up only in what the map marks rescued (an unread area reads as an error, never as the
zeros a fresh image holds there), so nothing is read from the failing source twice. A path
is missing only when nothing unreadable could hide it; otherwise the lookup says which
folder could not be read, and the rescue goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rescue.errors import FormatError, UsageError
from rescue.fs.affected import Damage
from rescue.fs.domain import DOMAIN_ALIGN, NATIVE, detect, open_fs
from rescue.fs.partitions import SliceReader, read_partition_table
from rescue.fs.used import Extent, FileRecord, FileSystem, normalize
from rescue.io.reader import Reader, Unreadable
from rescue.rangemap import FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, RangeMap

CASE_SENSITIVE = ("ext2", "ext3", "ext4")  # FAT, exFAT and NTFS names ignore case
UNREAD = (NON_TRIED, NON_TRIMMED, NON_SCRAPED)  # not read yet (BAD was tried and failed)
SIGNATURE_AREA = 1 << 16  # every file-system signature rescue knows lies in a volume's start


@dataclass(frozen=True)
class FirstPath:
    """A path the user wants first: in one partition, or (partition None) in every file
    system where it exists."""

    partition: int | None
    path: str  # from the root, "/" between names, no trailing "/"

    @classmethod
    def parse(cls, text: str) -> FirstPath:
        """`/home/ann` or `2:/home/ann` (partition 2, as `rescue info` numbers them)."""
        prefixed = re.fullmatch(r"(\d+):(.*)", text, re.DOTALL)
        partition, path = (int(prefixed[1]), prefixed[2]) if prefixed else (None, text)
        if not path.startswith("/"):
            raise UsageError(f"--first {text}: give a path from the file system's root, "
                             "like /home/ann or 2:/home/ann")
        names = [name for name in path.split("/") if name]
        if any(name in (".", "..") for name in names):
            raise UsageError(f"--first {text}: the path may not contain . or ..")
        return cls(partition, "/" + "/".join(names))

    def __str__(self) -> str:
        return self.path if self.partition is None else f"{self.partition}:{self.path}"


@dataclass(frozen=True)
class ChosenFile:
    """A file under a chosen path, with offsets from the start of the disk."""

    name: str  # as shown: the path, after "N:" when the disk holds several file systems
    size: int | None  # None: its inode or record is unreadable, its contents unknown
    pieces: tuple[tuple[int, int, int], ...]  # (offset in the file, disk offset, length)
    metadata: tuple[Extent, ...]
    mapped: bool  # False: part of its block map (extent tree, cluster chain) was unreadable

    @property
    def extents(self) -> list[Extent]:
        return [(where, length) for _, where, length in self.pieces]


@dataclass(frozen=True)
class FileState:
    """How far one chosen file has come, from the map."""

    file: ChosenFile
    bad: tuple[Extent, ...]  # (offset in the file, length) not rescued: failed or unread
    unread: bool  # some of those bytes were not tried yet

    @property
    def complete(self) -> bool:
        return not self.bad and self.file.size is not None and self.file.mapped

    def summary(self) -> str:
        """`complete`, or what of the file is lost: bytes at OFFSET+LENGTH in the file."""
        file = self.file
        if self.complete:
            return "complete"
        if file.size is None:
            return "unreadable: its own metadata lies in bad sectors"
        parts = [] if file.mapped else ["its block map is partly unreadable"]
        if self.bad:
            lost = sum(length for _, length in self.bad)
            ranges = ", ".join(f"{offset}+{length}" for offset, length in self.bad)
            parts.append(f"{lost} bytes {'unread' if self.unread else 'unreadable'} at "
                         f"{ranges}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"path": self.file.name, "size": self.file.size, "complete": self.complete,
                "metadata_readable": self.file.size is not None, "mapped": self.file.mapped,
                "bad": [list(extent) for extent in self.bad]}


def file_state(file: ChosenFile, rmap: RangeMap) -> FileState:
    """The bytes of `file` that `rmap` does not mark rescued, as ranges within the file."""
    bad: list[list[int]] = []
    unread = False
    for start, where, length in file.pieces:
        for pos, size, state in _areas_in(rmap, where, where + length):
            if state == FINISHED:
                continue
            unread = unread or state in UNREAD
            offset = start + pos - where
            if bad and bad[-1][0] + bad[-1][1] == offset:
                bad[-1][1] += size
            else:
                bad.append([offset, size])
    return FileState(file, tuple((offset, size) for offset, size in bad), unread)


def _areas_in(rmap: RangeMap, begin: int, end: int) -> Iterator[tuple[int, int, str]]:
    """(pos, length, state) of the map's areas, clipped to [begin, end)."""
    while begin < end:
        start, length, state = rmap.area_at(begin)
        stop = min(start + length, end)
        yield begin, stop - begin, state
        begin = stop


def domain_of(extents: Sequence[Sequence[Extent]], size: int) -> RangeMap:
    """A domain ('+' where to read) over files' extents, widened to whole 4 KiB blocks."""
    domain = RangeMap(size)
    for offset, length in normalize((extent for group in extents for extent in group),
                                    size, DOMAIN_ALIGN):
        domain.set(offset, length, FINISHED)
    return domain


@dataclass(frozen=True)
class Selection:
    """What the chosen paths name: their files in file order, and what could not be told."""

    files: tuple[ChosenFile, ...]
    notes: tuple[str, ...]  # chosen paths that unreadable metadata may hide
    missing: tuple[FirstPath, ...]  # found in no file system, and nothing could hide them

    def require_found(self) -> None:
        if self.missing:
            names = ", ".join(str(path) for path in self.missing)
            raise UsageError(f"--first: no file or folder {names} in any file system of the "
                             "source")


class RescuedReader:
    """An image read as far as its map says it is rescued: an area not rescued raises
    Unreadable instead of handing out the zeros that stand in for it."""

    def __init__(self, reader: Reader, damage: Damage) -> None:
        self._reader = reader
        self._damage = damage
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if not self._damage.readable(offset, min(length, self.size - offset)):
            raise Unreadable(offset, length, "media", "(not rescued yet)")
        return self._reader.read(offset, length)


@dataclass
class _Lookup:
    """One file system's records on and around the chosen paths, keyed as compared."""

    fs: FileSystem
    damage: Damage
    start: int
    label: str | None  # "N:" prefix of shown names, None without one
    records: dict[str, FileRecord] = field(default_factory=dict)
    listed: bool = True  # False: the listing stopped at unreadable metadata
    orphans: bool = False  # records whose names are lost (NTFS)

    def key(self, path: str) -> str:
        return path if self.fs.fs_type in CASE_SENSITIVE else path.casefold()

    def under(self, wanted: str) -> Iterator[FileRecord]:
        root = self.key(wanted).rstrip("/") + "/"
        for key, record in self.records.items():
            if key == root[:-1] or key.startswith(root):
                yield record

    def hidden_by(self, wanted: str) -> str | None:
        """Why unreadable metadata may hide `wanted`, or None if it truly is not there."""
        parts = wanted.strip("/").split("/")
        for depth in range(len(parts) - 1, 0, -1):
            folder = "/" + "/".join(parts[:depth])
            record = self.records.get(self.key(folder))
            if record is None:
                continue
            hit = any(self.damage.overlap(*extent)
                      for extent in (*record.data, *record.metadata))
            if record.size is None or not record.complete or hit:
                return f"the folder {folder} is unreadable"
            break
        if not self.listed or self.orphans:
            return "some of its folders are unreadable"
        try:
            metadata = self.fs.metadata()
        except FormatError:
            return "its metadata is unreadable"
        if any(self.damage.overlap(*extent) for extent in metadata):
            return "some of its metadata is unreadable"
        return None


def _wanted_keys(lookup: _Lookup, wanted: Sequence[FirstPath]) -> set[str]:
    """The chosen paths and every folder on the way to them, as `lookup` compares them."""
    keys: set[str] = set()
    for chosen in wanted:
        parts = chosen.path.strip("/").split("/")
        keys.update(lookup.key("/" + "/".join(parts[:depth])) for depth in range(1, len(parts)))
    return keys


def _collect(lookup: _Lookup, wanted: Sequence[FirstPath]) -> None:
    """Walk the file system once, keeping the records on and under the chosen paths."""
    ancestors = _wanted_keys(lookup, wanted)
    roots = [lookup.key(chosen.path).rstrip("/") for chosen in wanted]
    try:
        for record in lookup.fs.files(lookup.damage.readable):
            key = lookup.key(record.path)
            lookup.orphans = lookup.orphans or record.path.startswith("/<MFT record")
            if key in ancestors or any(key == root or key.startswith(f"{root}/")
                                       for root in roots):
                lookup.records[key] = record
    except FormatError:
        lookup.listed = False


def _chosen(lookup: _Lookup, record: FileRecord) -> ChosenFile:
    start = lookup.start
    name = record.path if lookup.label is None else f"{lookup.label}:{record.path}"
    return ChosenFile(name, record.size,
                      tuple((offset, start + where, n) for offset, where, n in record.pieces()),
                      tuple((start + where, n) for where, n in record.metadata),
                      record.complete)


def resolve(reader: Reader, rmap: RangeMap, wanted: Sequence[FirstPath],
            sector_size: int = 512) -> Selection:
    """The files under `wanted` in the image `reader`, read only where `rmap` says rescued;
    in the order the paths were given, each path's files sorted by name."""
    table = read_partition_table(RescuedReader(reader, Damage(rmap)), sector_size)
    areas = [(p.number, p.start, p.size) for p in table.file_systems] if table.kind \
        else [(None, 0, reader.size)]
    lookups: list[tuple[int | None, _Lookup | str]] = []
    for number, start, size in areas:
        relevant = [w for w in wanted if w.partition in (None, number)]
        if not relevant:
            continue
        damage = Damage(rmap, start, size)
        where = "disk" if number is None else f"partition {number}"
        volume = RescuedReader(SliceReader(reader, start, size), damage)
        if detect(volume) not in NATIVE:
            if damage.overlap(0, min(size, SIGNATURE_AREA)):  # it may be one, unreadable
                lookups.append((number, f"{where}: its file system's signature is unreadable"))
            continue  # swap, an unknown file system: nothing to look up there
        try:
            fs = open_fs(volume)
        except FormatError as exc:
            lookups.append((number, f"{where}: {exc}"))
            continue
        label = str(number) if number is not None and len(areas) > 1 else None
        lookup = _Lookup(fs, damage, start, label)
        _collect(lookup, relevant)
        lookups.append((number, lookup))
    return _select(lookups, wanted)


def _select(lookups: list[tuple[int | None, _Lookup | str]], wanted: Sequence[FirstPath]
            ) -> Selection:
    files: dict[str, ChosenFile] = {}
    notes: list[str] = []
    missing: list[FirstPath] = []
    for chosen in wanted:
        found = False
        hidden: list[str] = []
        for number, lookup in lookups:
            if chosen.partition not in (None, number):
                continue
            if isinstance(lookup, str):
                hidden.append(lookup)
                continue
            records = sorted(lookup.under(chosen.path), key=lambda r: lookup.key(r.path))
            found = found or bool(records) or chosen.path == "/"
            for record in records:
                if not record.is_dir:
                    file = _chosen(lookup, record)
                    files.setdefault(file.name, file)
            reason = None if records else lookup.hidden_by(chosen.path)
            if reason is not None:
                hidden.append(reason if number is None else f"partition {number}: {reason}")
        if not found and hidden:
            notes.append(f"{chosen} not found; {'; '.join(hidden)}, so it may lie there")
        elif not found:
            missing.append(chosen)
    return Selection(tuple(files.values()), tuple(notes), tuple(missing))
