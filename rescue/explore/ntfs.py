"""NTFS read by libfsntfs (libyal, LGPL), which the corpus measured exact: alternate data
streams, compressed and sparse files, hard links, reparse-point symlinks and junctions.

On top of it: Interix special files (what ntfs-3g and Services for Unix make for symlinks and
device nodes: a system file whose content starts with a tag) are shown as what they are, and
data inside an MFT record (a small file is "resident") is mapped to that record, so damage
there is found like damage anywhere else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyfsntfs

from rescue.errors import FormatError
from rescue.explore.damage import merge
from rescue.explore.filesystem import (
    PATH_MAX,
    Entry,
    Placement,
    Ranges,
    display_join,
    named_only,
    stream_entry,
)
from rescue.explore.libyal import (
    ERRORS,
    LibyalData,
    LibyalFileSystem,
    extents_placement,
    open_volume,
)
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.fs.partitions import SliceReader
from rescue.fs.used.ntfs import NtfsFS
from rescue.rangemap import RangeMap

_ROOT = 5
_RESERVED = 16  # MFT records 0-15 are the file system's own ($MFT, $Bitmap, $Extend, ...)
_READ_ONLY, _SYSTEM, _COMPRESSED = 0x1, 0x4, 0x800
_INDEXED_DIRECTORY = 0x1000_0000  # a $FILE_NAME's flag: the file has a directory index
_STANDARD_INFORMATION, _FILE_NAME, _REPARSE_POINT = 0x10, 0x30, 0xC0
_LX_SYMLINK = 0xA000_001D  # the reparse tag of a symlink made by Linux under Windows (WSL)
_LX_TARGET = 8 + 4  # its data: the reparse header, a version number, then the UTF-8 target
_COMPRESSION_UNIT = 16  # clusters
_FILETIME_EPOCH = 116_444_736_000_000_000  # 1601 to 1970 in 100 ns
_INTERIX = {b"IntxLNK\x01": "symlink", b"IntxCHR\x00": "char", b"IntxBLK\x00": "block"}
_INTERIX_TAG = 8
_INTERIX_BY_SIZE = {0: "fifo", 1: "socket"}


def _ns(filetime: int | None) -> int:
    """A FILETIME as nanoseconds since 1970; 0 where the record holds none."""
    return (filetime - _FILETIME_EPOCH) * 100 if filetime else 0


def _posix_target(windows: str) -> bytes:
    """A reparse point's target as ntfs-3g shows it: `..\\dir\\file` becomes `../dir/file`,
    and an absolute `\\??\\C:\\dir` loses the prefix that only Windows' object manager
    reads (`C:/dir`)."""
    return windows.removeprefix("\\??\\").replace("\\", "/").encode("utf-8", "surrogatepass")


def _index(reference: int) -> int:
    return reference & 0xFFFF_FFFF_FFFF


class NtfsFileSystem(LibyalFileSystem):
    reader = "libfsntfs"
    _record_name = "MFT record"

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        self._volume = open_volume(pyfsntfs, reader, volume)
        try:
            cluster = int(self._volume.cluster_block_size)
        except ERRORS as error:
            raise FormatError(f"libfsntfs cannot read the NTFS volume: {error}") from None
        super().__init__(reader, volume, unreadable, "ntfs", cluster)
        self._records: NtfsFS | None = None  # our own parser, for where records lie
        self._records_unknown = False

    @property
    def root_inode(self) -> int:
        return _ROOT

    def _by_number(self, number: int) -> Any:
        return self._volume.get_file_entry(number)

    def root(self) -> Entry:
        try:
            return super().root()
        except FormatError:  # its index is damaged: its names come from the records
            if self._parser() is None:
                raise
            return self._recorded("/", b"/", _ROOT, True)

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        """The folder's entries from its index, as libfsntfs reads it. Where that fails, for
        the folder or for some of its entries (libfsntfs opens a subfolder by reading its
        whole index, so one bad index block hides the subfolder), the names the MFT's records
        give in this folder are added: a damaged index loses no file whose record is whole."""
        shown: set[tuple[int, bytes]] = set()
        complete = True
        try:
            handle = self._handle(directory)
            count = int(handle.number_of_sub_file_entries)
        except (FormatError, *ERRORS):
            handle, count, complete = None, 0, False
        for number in range(count):
            try:
                child = handle.get_sub_file_entry(number)
                name = child.name.encode("utf-8", "surrogatepass")
                index = _index(int(child.get_i30_file_reference() if child.has_i30_entry()
                                   else child.file_reference))
            except ERRORS:
                complete = False  # an entry libfsntfs cannot open: found in the records below
                continue
            shown.add((index, name))
            if self._hidden(directory, index, name, show_system):
                continue
            display = display_join(directory.display_path, name)
            try:  # an empty record is one that is unreadable or wiped
                entry = self._entry(display, name, child) if child.number_of_attributes \
                    else None
            except ERRORS:
                entry = None
            yield entry or self._indexed_only(display, name, index, child)
        if not complete:
            yield from self._from_records(directory, shown, show_system)

    @staticmethod
    def _hidden(directory: Entry, index: int, name: bytes, show_system: bool) -> bool:
        """The file system's own files in the root ($MFT, $Bitmap, ...), unless asked for."""
        return not show_system and directory.inode == _ROOT and index < _RESERVED \
            and name.startswith(b"$")

    def _from_records(self, directory: Entry, shown: set[tuple[int, bytes]],
                      show_system: bool) -> Iterator[Entry]:
        """The names in `directory` that its index did not give, from the MFT's records."""
        parser = self._parser()
        if parser is None:
            raise FormatError(f"cannot read directory {directory.display_path}")
        for index, text, is_dir in parser.names_in(directory.inode):
            name = text.encode("utf-8", "surrogatepass")
            if (index, name) in shown or self._hidden(directory, index, name, show_system):
                continue
            display = display_join(directory.display_path, name)
            try:
                yield self._entry(display, name, self._by_number(index))
            except ERRORS:  # a record libfsntfs cannot open: a file's size and content
                yield self._recorded(display, name, index, is_dir)  # are unknown

    def _recorded(self, display_path: str, name: bytes, index: int, is_dir: bool) -> Entry:
        """An entry libfsntfs cannot open (a folder whose index is damaged, say), with the
        times of its $STANDARD_INFORMATION; a folder's names come from the records too."""
        entry = replace(named_only(display_path, name, index, "dir" if is_dir else "file"),
                        metadata_unknown=not is_dir)
        parser = self._parser()
        times = parser.resident_value(index, _STANDARD_INFORMATION) if parser else None
        if times is None or len(times) < 32:
            return entry
        _, modified, changed, accessed = struct.unpack_from("<4Q", times)
        return replace(entry, mtime_ns=_ns(modified), ctime_ns=_ns(changed),
                       atime_ns=_ns(accessed))

    @staticmethod
    def _indexed_only(display_path: str, name: bytes, index: int, handle: Any) -> Entry:
        """A file known only by its directory's index: its name and times are there, its
        size, content and kind were in the record. Its damage shows as `metadata_lost`."""
        directory = int(handle.get_i30_file_attribute_flags() or 0) & _INDEXED_DIRECTORY
        return Entry(
            display_path=display_path, name=name, inode=index,
            kind="dir" if directory else "file", size=0, mode=0o755 if directory else 0o644,
            uid=0, gid=0, mtime_ns=_ns(handle.get_i30_modification_time_as_integer()),
            atime_ns=_ns(handle.get_i30_access_time_as_integer()),
            ctime_ns=_ns(handle.get_i30_entry_modification_time_as_integer()), target=None,
            metadata_unknown=True)

    def _entry(self, display_path: str, name: bytes, handle: Any) -> Entry:
        flags = int(handle.file_attribute_flags or 0)
        size = int(handle.size or 0)
        kind, target = "file", None
        if handle.has_directory_entries_index():
            kind = "dir"
        index = _index(int(handle.file_reference))
        attributes = [handle.get_attribute(number)
                      for number in range(int(handle.number_of_attributes))]
        link = handle.symbolic_link_target
        if link is not None:
            kind, target = "symlink", _posix_target(link)
        elif any(attribute.attribute_type == _REPARSE_POINT and attribute.tag == _LX_SYMLINK
                 for attribute in attributes):
            kind, target = "symlink", self._linux_target(index)
        elif kind == "file" and flags & _SYSTEM:
            kind, target = self._interix(handle, size)
        mode = 0o777 if kind == "symlink" else 0o755 if kind == "dir" else 0o644
        if flags & _READ_ONLY and kind != "symlink":
            mode &= ~0o222
        links = sum(1 for attribute in attributes if attribute.attribute_type == _FILE_NAME)
        return Entry(
            display_path=display_path, name=name, inode=index,
            kind=kind, size=len(target) if target is not None else size if kind in (
                "file", "dir") else 0, mode=mode, uid=0,
            gid=0, mtime_ns=_ns(handle.get_modification_time_as_integer()),
            atime_ns=_ns(handle.get_access_time_as_integer()),
            ctime_ns=_ns(handle.get_entry_modification_time_as_integer()), target=target,
            links=max(1, links), ref=handle)

    def _linux_target(self, index: int) -> bytes:
        """A symlink Linux made under Windows (WSL): UTF-8 after a version number in its
        reparse data, which libfsntfs does not decode."""
        parser = self._parser()
        data = parser.resident_value(index, _REPARSE_POINT) if parser is not None else None
        if data is None or len(data) < _LX_TARGET:
            return b""
        return data[_LX_TARGET:_LX_TARGET + PATH_MAX]

    @staticmethod
    def _interix(handle: Any, size: int) -> tuple[str, bytes | None]:
        """What an Interix system file stands for, as ntfs-3g reads it: empty, a FIFO; one
        byte, a socket; else its tag says."""
        if size < _INTERIX_TAG:
            return _INTERIX_BY_SIZE.get(size, "file"), None
        try:
            head = bytes(handle.read_buffer_at_offset(min(size, _INTERIX_TAG + 2 * PATH_MAX), 0))
        except ERRORS:
            return "file", None
        kind = _INTERIX.get(head[:_INTERIX_TAG], "file")
        if kind != "symlink":
            return kind, None
        return kind, head[_INTERIX_TAG:].decode("utf-16-le", "surrogatepass").encode(
            "utf-8", "surrogatepass")

    def streams(self, entry: Entry) -> list[Entry]:
        if entry.kind != "file":
            return []
        handle = self._handle(entry)
        found = []
        try:
            for number in range(int(handle.number_of_alternate_data_streams)):
                stream = handle.get_alternate_data_stream(number)
                found.append(stream_entry(entry, stream.name.encode("utf-8", "surrogatepass"),
                                          int(stream.size), stream))
        except ERRORS:
            raise FormatError(f"cannot read the streams of {entry.display_path}") from None
        return found

    def open(self, entry: Entry) -> LibyalData:
        return LibyalData(entry.ref if entry.kind == "stream" else self._handle(entry), entry)

    def placement(self, entry: Entry) -> Placement:
        record = self._record(entry.inode)
        try:
            handle = entry.ref if entry.kind == "stream" else self._handle(entry)
        except FormatError:
            return Placement(unbacked=((0, entry.size),) if entry.size else (), record=record)
        compressed = entry.kind != "stream" and bool(
            int(handle.file_attribute_flags or 0) & _COMPRESSED)
        return extents_placement(handle, entry, self.volume, record, compressed)

    def lost(self, entry: Entry) -> Ranges:
        """A compressed file's bytes come from whole compression units: a lost byte of a unit
        loses the unit."""
        lost = super().lost(entry)
        if not lost or entry.kind == "stream" or not int(
                self._handle(entry).file_attribute_flags or 0) & _COMPRESSED:
            return lost
        unit = _COMPRESSION_UNIT * self.block_size
        return merge((start // unit * unit, min(entry.size, -(-end // unit) * unit))
                     for start, end in lost)

    def _parser(self) -> NtfsFS | None:
        """Our own NTFS parser, for where records lie and what libfsntfs leaves undecoded;
        None if it cannot read the volume."""
        if self._records is None and not self._records_unknown:
            try:
                self._records = NtfsFS(SliceReader(self._image, self.volume.start,
                                                   self.volume.size))
            except FormatError:
                self._records_unknown = True
        return self._records

    def _record(self, index: int) -> Ranges:
        """Where MFT record `index` lies in the image (none known if our parser cannot read
        the MFT's own record)."""
        parser = self._parser()
        extents = parser.record_extents(index) if parser is not None else None
        return tuple((self.volume.start + offset, self.volume.start + offset + length)
                     for offset, length in extents or ())
