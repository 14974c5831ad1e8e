"""Which reader parses which file system: the one our corpus of real file systems found exact
(docs/readers.md). A file system the chosen reader cannot open falls back to The Sleuth Kit."""

from __future__ import annotations

from collections.abc import Callable

from rescue.errors import FormatError
from rescue.explore.ext import ExtFileSystem
from rescue.explore.fat import FatFileSystem
from rescue.explore.filesystem import FileSystem
from rescue.explore.ntfs import NtfsFileSystem
from rescue.explore.tsk import TskFileSystem
from rescue.explore.volumes import Volume
from rescue.explore.xfs import XfsFileSystem
from rescue.formats.base import ImageReader
from rescue.rangemap import RangeMap

Opener = Callable[[ImageReader, Volume, "RangeMap | None"], FileSystem]
# By the probe's TYPE name; exFAT and the rest go to The Sleuth Kit.
CHOSEN: dict[str, Opener] = {
    "ext2": ExtFileSystem, "ext3": ExtFileSystem, "ext4": ExtFileSystem,
    "vfat": FatFileSystem, "ntfs": NtfsFileSystem, "xfs": XfsFileSystem,
}


def open_filesystem(reader: ImageReader, volume: Volume,
                    unreadable: RangeMap | None) -> FileSystem:
    chosen = CHOSEN.get(volume.fstype or "")
    if chosen is not None:
        try:
            return chosen(reader, volume, unreadable)
        except FormatError:
            pass  # a damaged file system another reader may still make sense of
    return TskFileSystem(reader, volume, unreadable)
