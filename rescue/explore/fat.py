"""FAT12/16/32 read by our own parser (`rescue.fs.used.fat`), which the corpus measured exact
where The Sleuth Kit cuts long names past 195 characters (two such names then collide) and
libfsfat dates every file a month late (docs/readers.md).

A long name counts only when its checksum matches the short entry it precedes, as every FAT
driver does. Times are the entry's local times, read as UTC, as Linux's vfat does by default.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Iterator

from rescue.explore.damage import Run
from rescue.explore.filesystem import Entry, FileSystem, Placement, display_join, listed
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.fs.partitions import SliceReader
from rescue.fs.used.fat import ENTRY_SIZE, DirEntry, FatFS
from rescue.rangemap import RangeMap

_READ_ONLY = 0x01


def _fat_time_ns(date: int, time: int = 0, centiseconds: int = 0) -> int:
    """A FAT date and time (2-second steps, plus a creation time's 10 ms steps) as UTC."""
    if not date:
        return 0
    year, month, day = 1980 + (date >> 9), max(1, (date >> 5) & 0xF), max(1, date & 0x1F)
    hours, minutes, seconds = time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2
    try:
        stamp = calendar.timegm((year, min(month, 12), min(day, 31), hours, minutes, seconds))
    except (ValueError, OverflowError):
        return 0
    return stamp * 1_000_000_000 + centiseconds * 10_000_000


class FatData:
    """A file's content along its cluster chain."""

    def __init__(self, fs: FatFileSystem, entry: Entry) -> None:
        self.entry = entry
        self._fs = fs
        self._runs = fs.placement(entry).runs

    def read(self, offset: int, length: int) -> bytes:
        """The bytes the chain holds; it stops short where the chain ends before the size."""
        length = max(0, min(length, self.entry.size - offset))
        out = bytearray()
        for run in self._runs:
            start = max(offset + len(out), run.file_offset)
            end = min(offset + length, run.file_offset + run.length)
            if start != offset + len(out) or start >= end:
                continue
            out += self._fs.read_image(run.image_offset - self._fs.volume.start + start
                                       - run.file_offset, end - start, self.entry.display_path)
        return bytes(out)


class FatFileSystem(FileSystem):
    reader = "rescue"

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        self._fat = FatFS(SliceReader(reader, volume.start, volume.size))
        super().__init__(reader, volume, unreadable, "fat", self._fat.cluster_size)

    @property
    def root_inode(self) -> int:
        return self._fat.root_cluster * 2

    def root(self) -> Entry:
        return Entry(display_path="/", name=b"/", inode=self.root_inode, kind="dir",
                     size=0, mode=0o755, uid=0, gid=0, mtime_ns=0, atime_ns=0, ctime_ns=0,
                     target=None)

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        first = directory.ref.first if isinstance(directory.ref, DirEntry) \
            else directory.inode // 2
        for item in listed(self._fat.directory(first, self.readable), directory):
            name = item.name.encode("utf-8", "surrogatepass")
            yield self._entry(display_join(directory.display_path, name), name, item)

    def _entry(self, display_path: str, name: bytes, item: DirEntry) -> Entry:
        raw = item.raw
        centiseconds, created_time, created_date, accessed_date = struct.unpack_from(
            "<BHHH", raw, 13)
        modified_time, modified_date = struct.unpack_from("<HH", raw, 22)
        mode = 0o755 if item.is_dir else 0o644
        if raw[11] & _READ_ONLY:
            mode &= ~0o222
        size = item.size
        if item.is_dir:
            size = len(self._fat.chain(item.first)[0]) * self._fat.cluster_size \
                if item.first else 0
        # a directory is known by its first cluster, so a loop back to an ancestor shows;
        # anything else by where its entry lies (even and odd, so the two never meet)
        inode = item.first * 2 if item.is_dir else item.offset * 2 + 1
        return Entry(
            display_path=display_path, name=name, inode=inode,
            kind="dir" if item.is_dir else "file", size=size, mode=mode, uid=0, gid=0,
            mtime_ns=_fat_time_ns(modified_date, modified_time),
            atime_ns=_fat_time_ns(accessed_date),
            ctime_ns=_fat_time_ns(created_date, created_time, centiseconds), target=None,
            ref=item)

    def open(self, entry: Entry) -> FatData:
        return FatData(self, entry)

    def placement(self, entry: Entry) -> Placement:
        item = entry.ref
        if not isinstance(item, DirEntry):  # the root: its area is the file system's own
            return Placement()
        record = ((self.volume.start + item.offset,
                   self.volume.start + item.offset + ENTRY_SIZE),)
        runs, position = [], 0
        for offset, length in self._fat.chain_extents(item.first, entry.size) \
                if item.first else ():
            runs.append(Run(position, self.volume.start + offset, length))
            position += length
        unbacked = ((position, entry.size),) if position < entry.size else ()
        return Placement(tuple(runs), unbacked, record, holes_known=True)
