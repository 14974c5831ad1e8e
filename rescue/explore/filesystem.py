"""File systems inside an image, read by The Sleuth Kit (pytsk3) through our image readers.

TSK reads ext2/3/4, FAT12/16/32, exFAT and NTFS (and more). It sees the image through
`ImageView` (fs/tskview.py), so qcow2, .img.zst and raw images all work and holes read as
zeros. Everything TSK returns comes from untrusted bytes: names are raw bytes, sizes and
times may be absurd.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pytsk3

from rescue.errors import FormatError, UsageError
from rescue.explore.damage import Run, lost_ranges, merge
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
_FS_NAMES = (
    (pytsk3.TSK_FS_TYPE_EXFAT, "exfat"),  # before FAT: TSK's FAT mask includes exFAT
    (pytsk3.TSK_FS_TYPE_EXT_DETECT, "ext"), (pytsk3.TSK_FS_TYPE_FAT_DETECT, "fat"),
    (pytsk3.TSK_FS_TYPE_NTFS_DETECT, "ntfs"),
    (pytsk3.TSK_FS_TYPE_HFS_DETECT, "hfs"), (pytsk3.TSK_FS_TYPE_ISO9660_DETECT, "iso9660"),
    (pytsk3.TSK_FS_TYPE_FFS_DETECT, "ufs"),
)
_POSIX_MODES = ("ext", "ufs", "hfs")  # file systems that store Unix permission bits
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
_PATH_MAX = 4096
_RUN_HOLES = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE | pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER
# (attribute type, name) of the streams that hold an entry's data: the default stream (ext,
# FAT, exFAT), NTFS's unnamed $DATA, and an NTFS directory's $I30 index.
_DATA_STREAMS = frozenset({
    (int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT), b""), (int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA), b""),
    (int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_IDXALLOC), _NTFS_DIRECTORY_INDEX)})


@dataclass(frozen=True)
class Entry:
    """One directory entry with its metadata, as the file system records it."""

    display_path: str  # printable names joined by "/": a "/" inside a name shows escaped
    name: bytes  # the raw name as stored; it may itself hold b"/" in a damaged file system
    inode: int
    kind: str  # file, dir, symlink, char, block, fifo, socket, label or other
    size: int
    mode: int  # permission bits (0o7777); synthesised for file systems without them
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    target: bytes | None  # a symlink's target
    links: int = 1  # hard links as stored; 1 where the file system keeps no count


class OpenFile:
    """A file kept open for reads at any offset: the lookup TSK does to open it is paid once."""

    def __init__(self, handle: pytsk3.File, entry: Entry) -> None:
        self._handle = handle
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer where metadata cannot back the size."""
        try:
            return bytes(self._handle.read_random(offset, length))
        except _TSK_ERRORS:
            raise FormatError(f"cannot read {self.entry.display_path} at byte {offset}"
                              ) from None


def printable(raw: bytes, *, name: bool = False) -> str:
    """Bytes from the image as one safe line: invalid UTF-8, control characters and the
    backslash itself become \\xNN escapes, so a hostile name cannot move the cursor, clear the
    screen, fake another line or pass for an escape. A `name` escapes "/" too, so a path
    shows where each name ends (TSK has already cut a name at any NUL)."""
    escaped = []
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            escaped.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\" or (name and char == "/") or not char.isprintable():
            escaped.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                           if code < 0x10000 else f"\\U{code:08x}")
        else:
            escaped.append(char)
    return "".join(escaped)


def _stored_target(handle: pytsk3.File, size: int) -> bytes:
    """A symlink target kept in a data block (ext: 60 bytes and longer), which TSK leaves out of
    `meta.link`: the link's content, at most what Linux takes as a target."""
    try:
        return bytes(handle.read_random(0, min(size, _PATH_MAX)))
    except _TSK_ERRORS:
        return b""


def display_join(parent: str, name: bytes) -> str:
    return f"{parent.rstrip('/')}/{printable(name, name=True)}"


def _nanoseconds(seconds: int, nano: int) -> int:
    return int(seconds) * 1_000_000_000 + int(nano)


class FileSystem:
    """A file system in one volume of an image; all reads go through the image reader."""

    def __init__(self, reader: ImageReader, volume: Volume, unreadable: RangeMap | None) -> None:
        self.volume = volume
        self._unreadable = unreadable
        try:
            self._fs = pytsk3.FS_Info(ImageView(reader), offset=volume.start)
        except _TSK_ERRORS:
            where = ("the image" if volume.number == 0 else f"partition {volume.number}")
            raise FormatError(f"no file system The Sleuth Kit can read in {where}"
                              f" (probe says {volume.fstype or 'unknown'})") from None
        info = self._fs.info
        self.block_size = int(info.block_size)
        self.kind = next((name for mask, name in _FS_NAMES if int(info.ftype) & int(mask)),
                         "other")
        self.root_inode = int(info.root_inum)

    @property
    def posix_modes(self) -> bool:
        return self.kind in _POSIX_MODES

    def lookup(self, path: str | bytes) -> Entry:
        """The entry at `path` ("/" is the root); names match as the file system compares them
        (case-insensitively on FAT, exFAT and NTFS)."""
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        raw = b"/" + raw.strip(b"/")
        try:
            handle = self._fs.open(raw.decode("utf-8", "surrogateescape"))
        except (*_TSK_ERRORS, UnicodeEncodeError):
            raise UsageError(f"no such file or directory: {printable(raw)}") from None
        stored = bytes(handle.info.name.name or b"") if handle.info.name else b""
        name = stored or raw.rsplit(b"/", 1)[-1]  # as stored, not as typed (FAT ignores case)
        display = "/"
        if raw != b"/":
            for component in raw.split(b"/")[1:-1]:
                display = display_join(display, component)
            display = display_join(display, name)
        entry = self._entry(display, name if raw != b"/" else b"/", handle)
        if entry is None:
            raise UsageError(f"{printable(raw)} has no readable metadata")
        return entry

    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        """The entries of a directory as TSK lists them, one at a time (a directory of a
        million names is never turned into a Python list). Deleted names, TSK's virtual files
        and, unless `show_system`, the file system's own metadata files are left out."""
        try:
            handle = self._fs.open_dir(inode=directory.inode)
        except _TSK_ERRORS:
            raise FormatError(f"cannot read directory {directory.display_path}") from None
        in_root = directory.inode == self.root_inode
        for item in handle:
            name_info = item.info.name
            raw = bytes(name_info.name or b"")
            if raw in (b"", b".", b"..") or int(name_info.flags) & int(
                    pytsk3.TSK_FS_NAME_FLAG_UNALLOC) or name_info.type in _VIRTUAL:
                continue
            meta = item.info.meta
            if meta is None or meta.type in _VIRTUAL:
                continue
            entry = self._entry(display_join(directory.display_path, raw), raw, item)
            if entry is None or (not show_system and in_root and self._is_system(entry)):
                continue
            yield entry

    def walk(self, top: Entry, show_system: bool = False) -> Iterator[Entry]:
        """Every entry below `top`, depth first, streamed; a directory that contains its own
        ancestor (a damaged file system) is listed but not entered again."""
        stack = [self.children(top, show_system)]
        ancestors = [top.inode]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                ancestors.pop()
                continue
            yield child
            if child.kind == "dir" and child.inode not in ancestors:
                stack.append(self.children(child, show_system))
                ancestors.append(child.inode)

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

    def _data(self, entry: Entry) -> tuple[list[Run], tuple[tuple[int, int], ...]]:
        """Where the entry's data lies in the image (its data stream, and for an NTFS
        directory its index), and the byte ranges of a file's size that no run accounts for,
        not even as a hole: a FAT chain cut short or looping. Resident data (inside the
        metadata record) has no runs and leaves nothing unaccounted."""
        try:
            handle = self._fs.open_meta(inode=entry.inode)
        except _TSK_ERRORS:
            return [], ()
        runs, unbacked = [], []
        for attribute in handle:
            info = attribute.info
            stream = (int(info.type), bytes(info.name or b""))
            if stream not in _DATA_STREAMS or not int(info.flags) & int(pytsk3.TSK_FS_ATTR_NONRES):
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
            if entry.kind == "file":
                unbacked += gaps(covered, size)
        return runs, merge(unbacked)

    def runs(self, entry: Entry) -> list[Run]:
        return self._data(entry)[0]

    def lost(self, entry: Entry) -> tuple[tuple[int, int], ...]:
        """Byte ranges of the entry's data that it does not have: they lie in bad or never-read
        parts of the image, or no metadata says where they are."""
        if entry.kind != "file" and self._unreadable is None:
            return ()
        runs, unbacked = self._data(entry)
        return merge((*lost_ranges(runs, self._unreadable), *unbacked))

    def open(self, entry: Entry) -> OpenFile:
        try:
            return OpenFile(self._fs.open_meta(inode=entry.inode), entry)
        except _TSK_ERRORS:
            raise FormatError(f"cannot open {entry.display_path}") from None

    def read_chunks(self, entry: Entry, chunk: int = 1 << 20) -> Iterator[tuple[bytes, int]]:
        """The file's content in pieces, each with how many of its bytes TSK returned: TSK
        stops short where metadata cannot back the size, and the rest of the piece is zeros.
        Bytes in unreadable parts of the image read as the image holds them (zeros)."""
        opened = self.open(entry)
        for offset in range(0, entry.size, chunk):
            length = min(chunk, entry.size - offset)
            data = opened.read(offset, length)
            yield data + bytes(length - len(data)), len(data)


def gaps(covered: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The parts of [0, size) that the (start, end) ranges in `covered` leave out."""
    missing, position = [], 0
    for start, end in merge(covered):
        if start > position:
            missing.append((position, start))
        position = max(position, end)
    if position < size:
        missing.append((position, size))
    return missing


def is_dir(entry: Entry) -> bool:
    return entry.kind == "dir"


def mode_string(entry: Entry) -> str:
    """`ls -l` style: drwxr-xr-x."""
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
             "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO,
             "socket": stat.S_IFSOCK}
    return stat.filemode(kinds.get(entry.kind, 0) | entry.mode)
