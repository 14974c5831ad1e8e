"""XFS read by libfsxfs (libyal, LGPL): The Sleuth Kit does not read XFS at all.

Owners, modes, nanosecond times, link counts and symlink targets are as the inodes hold them.
Where each inode lies, and the names whose inodes libfsxfs cannot read (it leaves them out of
a listing), come from our own reading of the on-disk structures (`fs/xfs.py`), so damage to an
inode is mapped to its file, and a file whose inode is lost is listed as lost, not left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyfsxfs

from rescue.errors import FormatError
from rescue.explore.filesystem import (
    Entry,
    Placement,
    Ranges,
    display_join,
    kind_of,
    named_only,
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
from rescue.fs.xfs import XfsDirectories
from rescue.rangemap import RangeMap

_BLOCK = 4096  # where our own reading of the superblock fails, the usual block size


class XfsFileSystem(LibyalFileSystem):
    reader = "libfsxfs"
    _record_name = "inode"
    posix_modes = True

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        self._volume = open_volume(pyfsxfs, reader, volume)
        try:
            root = self._volume.get_root_directory()
            self._root_inode = int(root.inode_number)
        except ERRORS as error:
            raise FormatError(f"libfsxfs cannot read the XFS root directory: {error}") from None
        super().__init__(reader, volume, unreadable, "xfs", _BLOCK)
        self._layout: XfsDirectories | None = None
        try:
            self._layout = XfsDirectories(self.read_image)
            self.block_size = self._layout.geometry.block_size
        except FormatError:
            pass  # libfsxfs reads it: only damage to inodes goes unmapped

    @property
    def root_inode(self) -> int:
        return self._root_inode

    def _by_number(self, number: int) -> Any:
        return self._volume.get_file_entry_by_inode(number)

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        handle = self._handle(directory)
        try:
            count = int(handle.number_of_sub_file_entries)
        except ERRORS:
            raise FormatError(f"cannot read directory {directory.display_path}") from None
        listed: set[int] = set()
        failed = False
        for number in range(count):
            try:
                child = handle.get_sub_file_entry(number)
                name = child.name.encode("utf-8", "surrogateescape")
                entry = self._entry(display_join(directory.display_path, name), name, child)
            except ERRORS:
                failed = True  # an inode libfsxfs cannot read: named below
                continue
            listed.add(entry.inode)
            yield entry
        if failed:
            yield from self._unread_children(directory, listed)

    def _unread_children(self, directory: Entry, listed: set[int]) -> Iterator[Entry]:
        """The names in `directory` whose inodes libfsxfs could not read, from the directory
        itself: they are listed, their metadata lost."""
        if self._layout is None:
            raise FormatError(f"some entries of {directory.display_path} cannot be read")
        try:
            names = list(self._layout.names(directory.inode))
        except FormatError as error:
            raise FormatError(f"some entries of {directory.display_path} cannot be read: "
                              f"{error}") from None
        for found in names:
            if found.inode not in listed:
                yield named_only(display_join(directory.display_path, found.name), found.name,
                                 found.inode, found.kind)

    @staticmethod
    def _entry(display_path: str, name: bytes, handle: Any) -> Entry:
        mode = int(handle.file_mode)
        kind = kind_of(mode)
        target = handle.symbolic_link_target if kind == "symlink" else None
        return Entry(
            display_path=display_path, name=name, inode=int(handle.inode_number), kind=kind,
            size=int(handle.size or 0), mode=mode & 0o7777, uid=int(handle.owner_identifier),
            gid=int(handle.group_identifier),
            mtime_ns=int(handle.get_modification_time_as_integer() or 0),
            atime_ns=int(handle.get_access_time_as_integer() or 0),
            ctime_ns=int(handle.get_inode_change_time_as_integer() or 0),
            target=target.encode("utf-8", "surrogateescape") if target is not None else None,
            links=max(1, int(handle.number_of_links)), ref=handle)

    def open(self, entry: Entry) -> LibyalData:
        return LibyalData(self._handle(entry), entry)

    def placement(self, entry: Entry) -> Placement:
        record = self._record(entry.inode)
        if entry.kind != "file" or entry.metadata_unknown:  # folders and symlinks may lie
            return Placement(record=record)  # inside their inode
        return extents_placement(self._handle(entry), entry, self.volume, record)

    def _record(self, number: int) -> Ranges:
        if self._layout is None:
            return ()
        start = self.volume.start + self._layout.geometry.inode_offset(number)
        return ((start, start + self._layout.geometry.inode_size),)
