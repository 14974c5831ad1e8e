"""What the libyal readers (libfsntfs, libfsxfs; LGPL) share: they parse a file object, and a
file entry reads at any offset and says where its data lies as (offset, size, flags) extents."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from rescue.errors import FormatError
from rescue.explore.damage import Run
from rescue.explore.filesystem import Entry, FileSystem, Placement, Ranges, VolumeFile
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader

# What libyal raises for a damaged structure, and what an error in our reader under it (a
# damaged compressed cluster of the image) comes back as.
ERRORS = (OSError, RuntimeError, ValueError)
_SPARSE_EXTENT = 0x1


def open_volume(module: Any, reader: ImageReader, volume: Volume) -> Any:
    """`module`'s volume object over one volume of the image."""
    opened = module.volume()
    try:
        opened.open_file_object(VolumeFile(reader, volume))
    except ERRORS as error:
        raise FormatError(f"{module.__name__} cannot open the volume: {error}") from None
    return opened


class LibyalData:
    """The content of a file entry (or an NTFS data stream), read through its reader."""

    def __init__(self, handle: Any, entry: Entry) -> None:
        self._handle = handle
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.entry.size - offset))
        if not length:
            return b""
        try:
            return bytes(self._handle.read_buffer_at_offset(length, offset))
        except ERRORS:
            raise FormatError(f"cannot read {self.entry.display_path} at byte {offset}"
                              ) from None


def extents_placement(handle: Any, entry: Entry, volume: Volume, record: Ranges = (),
                      compressed: bool = False) -> Placement:
    """Where the entry's data lies, from its extents in file order (sparse ones are holes);
    unknown, so all of it unbacked, when they cannot be read. A file with no extents keeps its
    data in its record, and a compressed one spreads each unit's data over the whole unit:
    their holes are not known from the extents."""
    try:
        extents = [handle.get_extent(number) for number in range(handle.number_of_extents)]
    except ERRORS:
        return Placement(unbacked=((0, entry.size),) if entry.size else (), record=record)
    runs, position = [], 0
    for offset, length, flags in extents:
        if not flags & _SPARSE_EXTENT:
            runs.append(Run(position, volume.start + offset, length))
        position += length
    return Placement(tuple(runs), record=record,
                     holes_known=bool(extents) and not compressed)


class LibyalFileSystem(FileSystem):
    """A file system a libyal volume object reads: entries by number, folders by index."""

    _volume: Any
    _record_name: str  # what holds an entry's metadata: "MFT record", "inode"

    @abstractmethod
    def _by_number(self, number: int) -> Any:
        """The reader's file entry for inode or MFT record `number`."""

    @abstractmethod
    def _entry(self, display_path: str, name: bytes, handle: Any) -> Entry: ...

    def _handle(self, entry: Entry) -> Any:
        if entry.ref is not None and entry.kind != "stream":
            return entry.ref
        try:
            return self._by_number(entry.inode)
        except ERRORS:
            raise FormatError(f"cannot read the {self._record_name} of {entry.display_path}"
                              ) from None

    def root(self) -> Entry:
        try:
            return self._entry("/", b"/", self._volume.get_root_directory())
        except ERRORS:
            raise FormatError(f"cannot read the {self.kind} root directory") from None
