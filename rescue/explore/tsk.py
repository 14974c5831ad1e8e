"""The Sleuth Kit's reading of a file system (pytsk3), for the kinds no better reader takes:
exFAT (its long names, which libfsfat cannot hold), HFS, ISO 9660, UFS, and any file system a
chosen reader fails to open.

TSK sees the image through `ImageView` (fs/tskview.py), so every image format works.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytsk3

from rescue.errors import FormatError
from rescue.explore.damage import Run, merge
from rescue.explore.filesystem import (
    PATH_MAX,
    Entry,
    FileSystem,
    Placement,
    display_join,
    gaps,
    named_only,
    stream_entry,
)
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.fs.tskview import ImageView
from rescue.rangemap import RangeMap

_KINDS = {
    pytsk3.TSK_FS_META_TYPE_REG: "file", pytsk3.TSK_FS_META_TYPE_DIR: "dir",
    pytsk3.TSK_FS_META_TYPE_LNK: "symlink", pytsk3.TSK_FS_META_TYPE_CHR: "char",
    pytsk3.TSK_FS_META_TYPE_BLK: "block", pytsk3.TSK_FS_META_TYPE_FIFO: "fifo",
    pytsk3.TSK_FS_META_TYPE_SOCK: "socket",
}
# The kind a folder's entry records, for a name whose metadata TSK cannot load.
_NAME_KINDS = {
    pytsk3.TSK_FS_NAME_TYPE_REG: "file", pytsk3.TSK_FS_NAME_TYPE_DIR: "dir",
    pytsk3.TSK_FS_NAME_TYPE_LNK: "symlink", pytsk3.TSK_FS_NAME_TYPE_CHR: "char",
    pytsk3.TSK_FS_NAME_TYPE_BLK: "block", pytsk3.TSK_FS_NAME_TYPE_FIFO: "fifo",
    pytsk3.TSK_FS_NAME_TYPE_SOCK: "socket",
}
_FS_NAMES = (
    (pytsk3.TSK_FS_TYPE_EXFAT, "exfat"),  # before FAT: TSK's FAT mask includes exFAT
    (pytsk3.TSK_FS_TYPE_EXT_DETECT, "ext"), (pytsk3.TSK_FS_TYPE_FAT_DETECT, "fat"),
    (pytsk3.TSK_FS_TYPE_NTFS_DETECT, "ntfs"),
    (pytsk3.TSK_FS_TYPE_HFS_DETECT, "hfs"), (pytsk3.TSK_FS_TYPE_ISO9660_DETECT, "iso9660"),
    (pytsk3.TSK_FS_TYPE_FFS_DETECT, "ufs"),
)
_POSIX_MODES = ("ext", "ufs", "hfs")  # file systems that store Unix permission bits
READABLE = "ext2/3/4, FAT, exFAT, NTFS, XFS, HFS+, ISO 9660 and UFS"
# Entries TSK synthesises in the root of exFAT from non-file directory entries.
_EXFAT_SPECIAL = frozenset({b"$ALLOC_BITMAP", b"$UPCASE_TABLE", b"$VOLUME_GUID", b"$TEX_FAT",
                            b"$ACT", b"$VOLUME_LABEL_NONE"})
# TSK lists a FAT or exFAT volume label as an empty file named "<label> (Volume Label Entry)";
# a real file would need a long name of exactly that form and no data to be taken for one.
_LABEL_SUFFIX = b" (Volume Label Entry)"
_LABEL_FILE_SYSTEMS = ("fat", "exfat")
_NTFS_RESERVED = 16  # MFT records 0-15 are the file system's own ($MFT, $Bitmap, $Extend, ...)
_NTFS_DIRECTORY_INDEX = b"$I30"
_VIRTUAL = (pytsk3.TSK_FS_META_TYPE_VIRT, pytsk3.TSK_FS_META_TYPE_VIRT_DIR)
# TSK reports its own failures as OSError, and an exception our reader raised inside its
# read callback (a damaged compressed cluster) as RuntimeError.
_TSK_ERRORS = (OSError, RuntimeError)
_RUN_HOLES = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE | pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER
# (attribute type, name) of the streams that hold an entry's data: the default stream (ext,
# FAT, exFAT), NTFS's unnamed $DATA, and an NTFS directory's $I30 index.
_DATA_STREAMS = frozenset({
    (int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT), b""), (int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA), b""),
    (int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_IDXALLOC), _NTFS_DIRECTORY_INDEX)})


class TskFile:
    """A file kept open for reads at any offset: the lookup TSK does to open it is paid once."""

    def __init__(self, handle: pytsk3.File, entry: Entry) -> None:
        self._handle = handle
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer where metadata cannot back the size."""
        try:
            if self.entry.stream:  # a named $DATA attribute, by its id
                return bytes(self._handle.read_random(
                    offset, length, pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA, self.entry.ref))
            return bytes(self._handle.read_random(offset, length))
        except _TSK_ERRORS:
            raise FormatError(f"cannot read {self.entry.display_path} at byte {offset}"
                              ) from None


def _stored_target(handle: pytsk3.File, size: int) -> bytes:
    """A symlink target kept in a data block (ext: 60 bytes and longer), which TSK leaves out of
    `meta.link`: the link's content, at most what Linux takes as a target."""
    try:
        return bytes(handle.read_random(0, min(size, PATH_MAX)))
    except _TSK_ERRORS:
        return b""


def _nanoseconds(seconds: int, nano: int) -> int:
    return int(seconds) * 1_000_000_000 + int(nano)


class TskFileSystem(FileSystem):
    """A file system as The Sleuth Kit reads it."""

    reader = "tsk"

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        try:
            self._fs = pytsk3.FS_Info(ImageView(reader), offset=volume.start)
        except _TSK_ERRORS:
            where = ("the image" if volume.number == 0 else f"partition {volume.number}")
            raise FormatError(f"no file system rescue can read in {where} (probe says "
                              f"{volume.fstype or 'unknown'}; rescue reads {READABLE})"
                              ) from None
        info = self._fs.info
        kind = next((name for mask, name in _FS_NAMES if int(info.ftype) & int(mask)), "other")
        super().__init__(reader, volume, unreadable, kind, int(info.block_size))
        self.posix_modes = kind in _POSIX_MODES
        self._root_inode = int(info.root_inum)

    @property
    def root_inode(self) -> int:
        return self._root_inode

    def root(self) -> Entry:
        try:
            handle = self._fs.open_meta(inode=self._root_inode)
        except _TSK_ERRORS:
            raise FormatError("cannot read the root directory") from None
        entry = self._entry("/", b"/", handle)
        if entry is None:
            raise FormatError("the root directory has no readable metadata")
        return entry

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        try:
            handle = self._fs.open_dir(inode=directory.inode)
        except _TSK_ERRORS:
            raise FormatError(f"cannot read directory {directory.display_path}") from None
        in_root = directory.inode == self._root_inode
        for item in handle:
            name_info = item.info.name
            raw = bytes(name_info.name or b"")
            if raw in (b"", b".", b"..") or int(name_info.flags) & int(
                    pytsk3.TSK_FS_NAME_FLAG_UNALLOC) or name_info.type in _VIRTUAL:
                continue
            meta = item.info.meta
            if meta is not None and meta.type in _VIRTUAL:
                continue
            display = display_join(directory.display_path, raw)
            # a name whose metadata cannot be loaded is listed as lost
            entry = self._entry(display, raw, item) or named_only(
                display, raw, int(name_info.meta_addr), _NAME_KINDS.get(name_info.type))
            if not show_system and in_root and self._is_system(entry):
                continue
            yield entry

    def streams(self, entry: Entry) -> list[Entry]:
        """NTFS's named $DATA attributes, as TSK lists them."""
        if self.kind != "ntfs" or entry.kind != "file":
            return []
        try:
            handle = self._fs.open_meta(inode=entry.inode)
        except _TSK_ERRORS:
            return []
        return [stream_entry(entry, bytes(attribute.info.name), int(attribute.info.size),
                             int(attribute.info.id))
                for attribute in handle
                if int(attribute.info.type) == int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA)
                and attribute.info.name]

    def _is_system(self, entry: Entry) -> bool:
        if entry.kind == "label":
            return True
        if self.kind == "ntfs":
            return entry.inode < _NTFS_RESERVED and entry.name.startswith(b"$")
        if self.kind == "exfat":
            return entry.name in _EXFAT_SPECIAL
        return False

    def _entry(self, display_path: str, name: bytes, handle: pytsk3.File) -> Entry | None:
        meta = handle.info.meta
        if meta is None:
            return None
        kind = _KINDS.get(meta.type, "other")
        if (self.kind in _LABEL_FILE_SYSTEMS and kind == "file" and int(meta.size) == 0
                and name.endswith(_LABEL_SUFFIX)):
            kind = "label"
        mode = int(meta.mode) & 0o7777
        uid, gid = int(meta.uid), int(meta.gid)
        if not self.posix_modes:  # FAT, exFAT, NTFS: only a read-only attribute, no owners
            read_only = mode & 0o600 != 0o600  # TSK drops read or write bits for it
            mode = (0o755 if kind == "dir" else 0o644) & (~0o222 if read_only else ~0)
            uid = gid = 0
        target = None
        if kind == "symlink":
            target = bytes(meta.link or b"") or _stored_target(handle, int(meta.size))
        return Entry(
            display_path=display_path, name=name, inode=int(meta.addr), kind=kind,
            size=max(0, int(meta.size)), mode=mode, uid=uid, gid=gid,
            mtime_ns=_nanoseconds(meta.mtime, meta.mtime_nano),
            atime_ns=_nanoseconds(meta.atime, meta.atime_nano),
            ctime_ns=_nanoseconds(meta.ctime, meta.ctime_nano), target=target,
            links=max(1, int(meta.nlink)))

    def placement(self, entry: Entry) -> Placement:
        """Where the entry's data lies in the image (its data stream, and for an NTFS
        directory its index), and the byte ranges of a file's size that no run accounts for,
        not even as a hole: a FAT chain cut short or looping. Resident data (inside the
        metadata record) has no runs and leaves nothing unaccounted."""
        try:
            handle = self._fs.open_meta(inode=entry.inode)
        except _TSK_ERRORS:
            return Placement()
        runs, unbacked = [], []
        for attribute in handle:
            info = attribute.info
            stream = (int(info.type), bytes(info.name or b""))
            wanted = (stream[0] == int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA)
                      and stream[1] == entry.stream) if entry.stream else stream in _DATA_STREAMS
            if not wanted or not int(info.flags) & int(pytsk3.TSK_FS_ATTR_NONRES):
                continue
            size = int(info.size)
            covered = []
            for run in attribute:
                file_offset = int(run.offset) * self.block_size
                length = min(int(run.len) * self.block_size, size - file_offset)
                if length <= 0:
                    continue
                covered.append((file_offset, file_offset + length))
                if not int(run.flags) & int(_RUN_HOLES):
                    runs.append(Run(file_offset,
                                    self.volume.start + int(run.addr) * self.block_size, length))
            if entry.kind in ("file", "stream"):
                unbacked += gaps(covered, size)
        return Placement(tuple(runs), merge(unbacked))

    def open(self, entry: Entry) -> TskFile:
        try:
            handle = self._fs.open_meta(inode=entry.inode)
        except _TSK_ERRORS:
            raise FormatError(f"cannot open {entry.display_path}") from None
        return TskFile(handle, entry)
