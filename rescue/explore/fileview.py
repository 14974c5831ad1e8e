"""The files of one file system in an image, served through FUSE by `rescue mount`.

The file system is parsed in this process by the same reader `rescue ls` and `extract` use, so
neither root nor a kernel driver is needed, and a hostile image meets nothing else. Bytes of a
file the image lacks (unreadable in its map, or beyond what the metadata can place) are never
served as zeros: a read that touches them fails with EIO, reads of the rest succeed.

NTFS alternate data streams are served as ntfs-3g serves them: as extended attributes
`user.STREAM` of their file, and as the file `NAME:STREAM`, which opens though no listing
shows it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import mfusepy as fuse

from rescue.errors import FormatError, UsageError
from rescue.explore.filesystem import KIND_BITS, Entry, FileSystem, OpenFile
from rescue.explore.readers import open_filesystem
from rescue.explore.volumes import Volume, volume_dir
from rescue.formats.base import ImageReader
from rescue.rangemap import RangeMap

# Directory listings kept, most recently used last: a path is looked up component by component
# through them, so a deep tree is walked without asking the reader again for each `stat`.
_LISTINGS_KEPT = 512
_NAME_MAX = 255
_STREAM_XATTR = "user."
_XATTR_SIZE_MAX = 65536  # what Linux lets one extended attribute hold


def served_name(raw: bytes) -> str:
    """A stored name as a FUSE name: bytes kept (undecodable ones as surrogates), and a "/"
    that a damaged file system put inside a name written as \\x2f so it stays one name."""
    return raw.replace(b"/", b"\\x2f").decode("utf-8", "surrogateescape")


def touches(lost: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) meets any of the (sorted, merged) lost ranges."""
    return any(begin < end and start < stop for begin, stop in lost)


class FileView:
    """One file system's tree as FUSE sees it below its directory (DIR/pN)."""

    def __init__(self, fs: FileSystem, owner: tuple[int, int]) -> None:
        self.fs = fs
        self.root = fs.lookup("/")
        # FAT, exFAT and NTFS keep no Unix owners: the files are the user's who mounted them,
        # so that user may read them.
        self.owner = None if fs.posix_modes else owner
        self._listings: OrderedDict[int, dict[str, Entry]] = OrderedDict()

    def listing(self, directory: Entry) -> dict[str, Entry]:
        cached = self._listings.get(directory.inode)
        if cached is not None:
            self._listings.move_to_end(directory.inode)
            return cached
        try:
            names = {served_name(child.name): child for child in self.fs.children(directory)}
        except (FormatError, OSError, RuntimeError):  # a reader failing in a damaged directory
            raise fuse.FuseOSError(errno.EIO) from None
        self._listings[directory.inode] = names
        if len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return names

    def entry(self, inner: str) -> Entry:
        """The entry at a path inside this view ("" is its root)."""
        found = self.root
        for name in inner.split("/"):
            if not name:
                continue
            if found.kind != "dir":
                raise fuse.FuseOSError(errno.ENOTDIR)
            child = self.listing(found).get(name) or self._stream(found, name)
            if child is None:
                raise fuse.FuseOSError(errno.ENOENT)
            found = child
        return found

    def _stream(self, directory: Entry, name: str) -> Entry | None:
        """The stream `name` ("file:stream") names, or None."""
        base, colon, stream = name.partition(":")
        owner = self.listing(directory).get(base) if colon and stream else None
        if owner is None:
            return None
        return self._streams(owner).get(stream)

    def _streams(self, entry: Entry) -> dict[str, Entry]:
        try:
            return {served_name(stream.stream or b""): stream for stream in self.fs.streams(entry)}
        except FormatError:
            raise fuse.FuseOSError(errno.EIO) from None

    def xattr_names(self, entry: Entry) -> list[str]:
        return [_STREAM_XATTR + name for name in self._streams(entry)]

    def xattr(self, entry: Entry, name: str) -> bytes:
        """A stream's content as the extended attribute user.STREAM, whole or not at all."""
        stream = self._streams(entry).get(name.removeprefix(_STREAM_XATTR)) \
            if name.startswith(_STREAM_XATTR) else None
        if stream is None:
            raise fuse.FuseOSError(errno.ENODATA)
        if stream.size > _XATTR_SIZE_MAX:
            raise fuse.FuseOSError(errno.E2BIG)
        return self.open(stream).read(0, stream.size)

    def attributes(self, entry: Entry) -> dict[str, Any]:
        uid, gid = self.owner or (entry.uid, entry.gid)
        return {"st_mode": KIND_BITS.get(entry.kind, stat.S_IFREG) | entry.mode,
                "st_nlink": entry.links, "st_uid": uid, "st_gid": gid,
                "st_size": entry.size, "st_blocks": (entry.size + 511) // 512,
                "st_blksize": self.fs.block_size, "st_mtime": entry.mtime_ns,
                "st_atime": entry.atime_ns, "st_ctime": entry.ctime_ns}

    def names(self, entry: Entry) -> list[str]:
        if entry.kind != "dir":
            raise fuse.FuseOSError(errno.ENOTDIR)
        return [".", "..", *self.listing(entry)]

    def readlink(self, entry: Entry) -> str:
        if entry.target is None:
            raise fuse.FuseOSError(errno.EINVAL)
        return entry.target.decode("utf-8", "surrogateescape")

    def open(self, entry: Entry) -> ServedFile:
        if entry.kind not in ("file", "stream"):
            raise fuse.FuseOSError(errno.EACCES)
        if self.fs.metadata_lost(entry):  # its size and content are unknown, not empty
            raise fuse.FuseOSError(errno.EIO)
        try:
            return ServedFile(self.fs.open(entry), self.fs.lost(entry))
        except FormatError:
            raise fuse.FuseOSError(errno.EIO) from None

    def statfs(self) -> dict[str, int]:
        block = self.fs.block_size
        return {"f_bsize": block, "f_frsize": block, "f_blocks": self.fs.volume.size // block,
                "f_bfree": 0, "f_bavail": 0, "f_namemax": _NAME_MAX}


class ServedFile:
    """An open regular file: its reader's handle and the byte ranges it lacks."""

    def __init__(self, opened: OpenFile, lost: tuple[tuple[int, int], ...]) -> None:
        self.opened = opened
        self.lost = lost

    @property
    def damaged(self) -> bool:
        return bool(self.lost)

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.opened.entry.size - offset))
        if size == 0:
            return b""
        if touches(self.lost, offset, offset + size):
            raise fuse.FuseOSError(errno.EIO)
        try:
            data = self.opened.read(offset, size)
        except FormatError:
            raise fuse.FuseOSError(errno.EIO) from None
        if len(data) != size:  # metadata that cannot back the size: no zeros for it
            raise fuse.FuseOSError(errno.EIO)
        return data


def open_views(reader: ImageReader, volumes: Sequence[Volume], unreadable: RangeMap | None,
               owner: tuple[int, int]) -> tuple[dict[str, FileView], list[str]]:
    """A view of each volume whose file system a reader reads, by its directory name; and a
    line for each volume with a file system none can (that directory stays empty)."""
    views, problems = {}, []
    for volume in volumes:
        if volume.fstype is None:
            continue
        try:
            views[volume_dir(volume)] = FileView(open_filesystem(reader, volume, unreadable),
                                                 owner)
        except (FormatError, UsageError, fuse.FuseOSError) as error:
            problems.append(f"{volume_dir(volume)} ({volume.fstype}) not served: {error}")
    return views, problems


def mounting_user() -> tuple[int, int]:
    return os.getuid(), os.getgid()
