"""XFS read by libfsxfs (libyal, LGPL): The Sleuth Kit does not read XFS at all.

Owners, modes, nanosecond times, link counts and symlink targets are as the inodes hold them.
Where an inode lies is not told by libfsxfs, so damage to an inode itself is not mapped; damage
to a file's data is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyfsxfs

from rescue.errors import FormatError
from rescue.explore.filesystem import Entry, Placement, display_join, kind_of
from rescue.explore.libyal import (
    ERRORS,
    LibyalData,
    LibyalFileSystem,
    extents_placement,
    open_volume,
)
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.rangemap import RangeMap

_BLOCK = 4096  # what statfs says of it; libfsxfs does not tell the block size


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

    @property
    def root_inode(self) -> int:
        return self._root_inode

    def _by_number(self, number: int) -> Any:
        return self._volume.get_file_entry_by_inode(number)

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        for child in self.sub_entries(directory):
            try:
                name = child.name.encode("utf-8", "surrogateescape")
                entry = self._entry(display_join(directory.display_path, name), name, child)
            except ERRORS:
                continue  # an entry libfsxfs cannot make sense of: a damaged directory
            yield entry

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
        if entry.kind != "file":  # directories and symlinks may live inside their inode
            return Placement()
        return extents_placement(self._handle(entry), entry, self.volume)
