"""ext2/3/4 read by our own parser (`rescue.fs.used.ext`), which the corpus measured exact where
The Sleuth Kit loses every inode past the first meta-group of a `meta_bg` file system and
libfsext loses names that are not UTF-8 and inline symlinks over 60 bytes (docs/readers.md).

Names stay the bytes the directory holds; times keep their nanoseconds and the epoch bits that
carry them past 2038; data is read block run by block run, so every byte of a file is placed in
the image and its damage is exact.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterator

from rescue.errors import FormatError
from rescue.explore.damage import Run, merge
from rescue.explore.filesystem import (
    PATH_MAX,
    Entry,
    FileSystem,
    Placement,
    display_join,
    gaps,
    kind_of,
    listed,
    named_only,
)
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.fs.partitions import SliceReader
from rescue.fs.used.ext import (
    INODE_BASE_SIZE,
    INODE_FLAG_INLINE_DATA,
    ROOT_INODE,
    BlockMap,
    ExtFS,
    Inode,
)
from rescue.rangemap import RangeMap

_EXTRA_ISIZE = 128  # u16: how much of the inode past its first 128 bytes is in use
# (seconds field, extra field) of ctime, mtime and atime; an extra field holds the epoch in
# its low 2 bits and nanoseconds above them.
_TIMES = {"ctime": (12, 132), "mtime": (16, 136), "atime": (8, 140)}


def _time_ns(raw: bytes, seconds_at: int, extra_at: int) -> int:
    seconds = struct.unpack_from("<i", raw, seconds_at)[0]
    extra_end = INODE_BASE_SIZE + struct.unpack_from("<H", raw, _EXTRA_ISIZE)[0] \
        if len(raw) > _EXTRA_ISIZE + 2 else 0
    if extra_at + 4 > min(extra_end, len(raw)):
        return seconds * 1_000_000_000
    extra = struct.unpack_from("<I", raw, extra_at)[0]
    return (seconds + ((extra & 3) << 32)) * 1_000_000_000 + (extra >> 2) % 1_000_000_000


class ExtData:
    """A file's content through its block runs or the inode's inline data."""

    def __init__(self, fs: ExtFileSystem, entry: Entry, inode: Inode) -> None:
        self.entry = entry
        self._fs = fs
        self._inline = fs.inline_bytes(inode)
        self._pieces = sorted(fs.pieces(inode))  # in file order, even from a damaged map
        # how far the pieces up to each one reach: no piece before the first that reaches
        # past an offset holds any byte from there on
        self._reach = list(itertools.accumulate(
            (file_offset + size for file_offset, _, size in self._pieces), max))

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.entry.size - offset))
        if self._inline is not None:
            return self._inline[offset:offset + length]
        out = bytearray(length)  # holes read as zeros
        # from the first piece that reaches past `offset`: a file of many pieces is not
        # walked whole for every read
        for file_offset, image_offset, size in itertools.islice(
                self._pieces, bisect.bisect_right(self._reach, offset), None):
            if file_offset >= offset + length:
                break
            start, end = max(offset, file_offset), min(offset + length, file_offset + size)
            out[start - offset:end - offset] = self._fs.read_image(
                image_offset + start - file_offset, end - start, self.entry.display_path)
        return bytes(out)


class ExtFileSystem(FileSystem):
    reader = "rescue"
    posix_modes = True

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        self._ext = ExtFS(SliceReader(reader, volume.start, volume.size))
        super().__init__(reader, volume, unreadable, "ext", self._ext.block_size)

    @property
    def root_inode(self) -> int:
        return ROOT_INODE

    def _inode(self, number: int) -> Inode:
        return self._ext.inode(number)

    def root(self) -> Entry:
        return self._entry("/", b"/", self._inode(ROOT_INODE))

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        inode = directory.ref if isinstance(directory.ref, Inode) else self._inode(directory.inode)
        for name, number, _ in listed(self._ext.dir_entries(inode, self.readable), directory):
            raw = name.encode("utf-8", "surrogateescape")
            display = display_join(directory.display_path, raw)
            try:
                child = self._inode(number)
            except FormatError:  # an entry pointing at no inode it can read
                yield named_only(display, raw, number, None)
                continue
            yield self._entry(display, raw, child)

    def _entry(self, display_path: str, name: bytes, inode: Inode) -> Entry:
        raw = inode.raw
        kind = kind_of(inode.mode)
        uid = struct.unpack_from("<H", raw, 2)[0] | struct.unpack_from("<H", raw, 120)[0] << 16
        gid = struct.unpack_from("<H", raw, 24)[0] | struct.unpack_from("<H", raw, 122)[0] << 16
        return Entry(
            display_path=display_path, name=name, inode=inode.number, kind=kind,
            size=inode.size, mode=inode.mode & 0o7777, uid=uid, gid=gid,
            mtime_ns=_time_ns(raw, *_TIMES["mtime"]), atime_ns=_time_ns(raw, *_TIMES["atime"]),
            ctime_ns=_time_ns(raw, *_TIMES["ctime"]),
            target=self._target(inode) if kind == "symlink" else None,
            links=max(1, struct.unpack_from("<H", raw, 26)[0]), ref=inode)

    def _target(self, inode: Inode) -> bytes:
        size = min(inode.size, PATH_MAX)
        try:
            return ExtData(self, _bare(inode), inode).read(0, size)
        except FormatError:
            return b""

    def inline_bytes(self, inode: Inode) -> bytes | None:
        """The content kept inside the inode (inline data, fast symlinks), or None."""
        if not inode.data_inside:
            return None
        if inode.flags & INODE_FLAG_INLINE_DATA:
            return inode.block + inode.inline_tail()[1]
        return inode.block

    def _map(self, inode: Inode) -> BlockMap:
        return self._ext.block_map(inode, self.readable)

    def pieces(self, inode: Inode) -> list[tuple[int, int, int]]:
        """(offset in the file, byte offset in the volume, length) of the inode's data."""
        if self.inline_bytes(inode) is not None:
            return []
        return self._ext.data_pieces(self._map(inode), inode.size)

    def open(self, entry: Entry) -> ExtData:
        try:
            return ExtData(self, entry, self._inode_of(entry))
        except FormatError:
            raise FormatError(f"cannot open {entry.display_path}") from None

    def _inode_of(self, entry: Entry) -> Inode:
        return entry.ref if isinstance(entry.ref, Inode) else self._inode(entry.inode)

    def placement(self, entry: Entry) -> Placement:
        try:
            inode = self._inode_of(entry)
        except FormatError:
            return Placement(unbacked=((0, entry.size),) if entry.size else ())
        start = self.volume.start + inode.offset
        record = ((start, start + len(inode.raw)),)
        if self.inline_bytes(inode) is not None:
            return Placement(record=record)
        try:
            mapping = self._map(inode)
        except FormatError:  # a map block outside the volume
            return Placement(unbacked=((0, entry.size),) if entry.size else (), record=record)
        runs = tuple(Run(file_offset, self.volume.start + image_offset, length)
                     for file_offset, image_offset, length
                     in self._ext.data_pieces(mapping, inode.size))
        if not mapping.complete:  # a map block it could not read: where its data is, unknown
            return Placement(runs, merge(gaps([(run.file_offset, run.file_offset + run.length)
                                               for run in runs], entry.size)), record)
        return Placement(runs, record=record, holes_known=True)


def _bare(inode: Inode) -> Entry:
    """A nameless entry for reading an inode's content before its entry exists."""
    return Entry(display_path="", name=b"", inode=inode.number, kind="file", size=inode.size,
                 mode=0, uid=0, gid=0, mtime_ns=0, atime_ns=0, ctime_ns=0, target=None)

