"""A file system inside an image, as every explorer of it sees it (`ls`, `extract`, the FUSE
view, the browser), whichever reader parses it.

Each kind of file system is read by the reader that lists and reads every file of our corpus
of real file systems exactly (docs/readers.md): `readers.open_filesystem` chooses it. A reader
sees the image through our image readers, so qcow2, .img.zst and raw images all work and holes
read as zeros. Everything it returns comes from untrusted bytes: names are raw bytes, sizes and
times may be absurd.
"""

from __future__ import annotations

import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from rescue.errors import FormatError, UsageError
from rescue.explore.damage import Run, lost_ranges, merge
from rescue.explore.volumes import Volume
from rescue.formats.base import ImageReader
from rescue.fs.partitions import READ_ERRORS
from rescue.rangemap import RangeMap

PATH_MAX = 4096
# The type bits of each kind of entry that has them; a stream shows as the file it is read as.
KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
             "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO,
             "socket": stat.S_IFSOCK, "stream": stat.S_IFREG}
_KIND_OF_TYPE = {bits: kind for kind, bits in KIND_BITS.items() if kind != "stream"}
# File systems whose names compare without regard to case, as their own drivers look them up.
_CASE_BLIND = ("fat", "exfat", "ntfs")
Ranges = tuple[tuple[int, int], ...]
Item = TypeVar("Item")


@dataclass(frozen=True)
class Entry:
    """One directory entry with its metadata, as the file system records it."""

    display_path: str  # printable names joined by "/": a "/" inside a name shows escaped
    name: bytes  # the raw name as stored; it may itself hold b"/" in a damaged file system
    inode: int
    kind: str  # file, dir, symlink, char, block, fifo, socket, label, stream or other
    size: int
    mode: int  # permission bits (0o7777); synthesised for file systems without them
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    target: bytes | None  # a symlink's target
    links: int = 1  # hard links as stored; 1 where the file system keeps no count
    stream: bytes | None = None  # the name of an NTFS alternate data stream (kind "stream")
    # only its folder names it: the inode or record it points to cannot be read
    metadata_unknown: bool = False
    ref: Any = field(default=None, compare=False, repr=False)  # the reader's own handle


class OpenFile(Protocol):
    """A file kept open for reads at any offset: the lookup to open it is paid once."""

    entry: Entry

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer where metadata cannot back the size."""


@dataclass(frozen=True)
class Placement:
    """Where an entry lies in the image: `runs` of its bytes; `unbacked`, the ranges of its
    size that no run accounts for, not even as a hole (a FAT chain cut short); `record`, the
    image ranges of its own metadata (inode, MFT record, directory entry), which also hold any
    data kept inside it (a small NTFS file, ext4 inline data). Metadata the image lacks loses
    the whole entry: its size, its runs and its content are then unknown."""

    runs: tuple[Run, ...] = ()
    unbacked: Ranges = ()
    record: Ranges = ()
    holes_known: bool = False  # every byte outside `runs` is a hole (reads as zeros)


class FileSystem(ABC):
    """A file system in one volume of an image; all reads go through the image reader."""

    reader: str  # which reader parses it, for listings and docs/readers.md
    posix_modes = False  # whether it stores Unix owners and permission bits

    def __init__(self, image: ImageReader, volume: Volume, unreadable: RangeMap | None,
                 kind: str, block_size: int) -> None:
        self._image = image
        self.volume = volume
        self.kind = kind
        self.block_size = block_size
        self._unreadable = unreadable

    @property
    @abstractmethod
    def root_inode(self) -> int: ...

    def read_image(self, offset: int, length: int, what: str) -> bytes:
        """`length` bytes at `offset` of the volume, for `what` (a file's path): a damaged
        part of the image, or metadata pointing past its end, is a FormatError naming it."""
        try:
            data = bytes(self._image.read(self.volume.start + offset, length))
        except READ_ERRORS:
            raise FormatError(f"cannot read {what} at byte {offset}") from None
        if len(data) != length:
            raise FormatError(f"{what}: its data at byte {offset} lies outside the image")
        return data

    @abstractmethod
    def root(self) -> Entry:
        """The root directory."""

    @abstractmethod
    def children(self, directory: Entry, show_system: bool = False) -> Iterator[Entry]:
        """The entries of a directory, one at a time (a directory of a million names is never
        a Python list). Deleted names and, unless `show_system`, the file system's own
        metadata files are left out."""

    @abstractmethod
    def open(self, entry: Entry) -> OpenFile:
        """A file's (or stream's) content, for reads at any offset."""

    @abstractmethod
    def placement(self, entry: Entry) -> Placement:
        """Where the entry's data lies in the image."""

    def streams(self, entry: Entry) -> list[Entry]:
        """A file's alternate data streams (only NTFS has them)."""
        return []

    def lookup(self, path: str | bytes) -> Entry:
        """The entry at `path` ("/" is the root); names match as the file system compares them
        (case-insensitively on FAT, exFAT and NTFS). `file:stream` names an NTFS stream."""
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        found = self.root()
        for component in raw.strip(b"/").split(b"/"):
            if not component:
                continue
            if found.kind != "dir":
                raise UsageError(f"no such file or directory: {printable(raw)}")
            child = self._child_named(found, component)
            if child is None:
                raise UsageError(f"no such file or directory: {printable(raw)}")
            found = child
        return found

    def _child_named(self, directory: Entry, name: bytes) -> Entry | None:
        wanted = self._comparable(name)
        for child in self.children(directory, show_system=True):
            if self._comparable(child.name) == wanted:
                return child
        base, colon, stream = name.partition(b":")
        if colon and stream:
            owner = self._child_named(directory, base)
            if owner is not None:
                return next((s for s in self.streams(owner)
                             if self._comparable(s.stream or b"") == self._comparable(stream)),
                            None)
        return None

    def _comparable(self, name: bytes) -> bytes | str:
        if self.kind in _CASE_BLIND:
            return name.decode("utf-8", "surrogateescape").casefold()
        return name

    def walk(self, top: Entry, show_system: bool = False,
             unlisted: list[tuple[str, str]] | None = None) -> Iterator[Entry]:
        """Every entry below `top`, depth first, streamed; a directory that contains its own
        ancestor (a damaged file system) is listed but not entered again. A folder below
        `top` that cannot be read is left, added to `unlisted` as (path, why), and the walk
        goes on with the rest."""
        stack = [self.children(top, show_system)]
        folders = [top]
        while stack:
            try:
                child = next(stack[-1], None)
            except FormatError as error:
                if len(stack) == 1:
                    raise
                if unlisted is not None:
                    unlisted.append((folders[-1].display_path, str(error)))
                child = None
            if child is None:
                stack.pop()
                folders.pop()
                continue
            yield child
            if child.kind == "dir" and all(child.inode != seen.inode for seen in folders):
                stack.append(self.children(child, show_system))
                folders.append(child)

    def lost(self, entry: Entry) -> Ranges:
        """Byte ranges of the entry's data that it does not have: they lie in bad or never-read
        parts of the image, or no metadata says where they are."""
        if entry.kind not in ("file", "stream") and self._unreadable is None:
            return ()
        placed = self.placement(entry)
        if self._lies_in_unreadable(placed.record):
            return ((0, entry.size),) if entry.size else ()
        return merge((*lost_ranges(placed.runs, self._unreadable), *placed.unbacked))

    def metadata_lost(self, entry: Entry) -> bool:
        """Whether the entry's own metadata lies in a bad or never-read part of the image:
        then what it says (size, type, where the data is) is unknown, or zeros. The same
        holds where the reader could not make sense of it at all."""
        return entry.metadata_unknown or (self._unreadable is not None and
                                          self._lies_in_unreadable(self.placement(entry).record))

    def readable(self, offset: int, length: int) -> bool:
        """Whether the image holds [offset, offset+length) of the volume: our own parsers skip
        directory blocks it does not, instead of taking zeros for the end of a listing."""
        start = self.volume.start + offset
        return not self._lies_in_unreadable(((start, start + length),))

    def _lies_in_unreadable(self, ranges: Ranges) -> bool:
        return any(lost_ranges((Run(0, start, end - start),), self._unreadable)
                   for start, end in ranges)

    def read_chunks(self, entry: Entry, chunk: int = 1 << 20
                    ) -> Iterator[tuple[int, bytes, int]]:
        """The content in pieces: (offset, bytes, how many of them the reader returned). It
        stops short where metadata cannot back the size, and the rest of the piece is zeros.
        Bytes in unreadable parts of the image read as the image holds them (zeros). Where
        the reader knows the holes, pieces inside them are left out, never read: a sparse
        file of terabytes costs what its data does."""
        opened = self.open(entry)
        for start, end in self._data_ranges(entry):
            for offset in range(start, end, chunk):
                length = min(chunk, end - offset)
                data = opened.read(offset, length)
                yield offset, data + bytes(length - len(data)), len(data)

    def _data_ranges(self, entry: Entry) -> Ranges:
        """The parts of the content that may hold more than zeros, in whole chunks' order."""
        placed = self.placement(entry)
        if not placed.holes_known:
            return ((0, entry.size),) if entry.size else ()
        return merge((run.file_offset, min(entry.size, run.file_offset + run.length))
                     for run in placed.runs if run.file_offset < entry.size)


class VolumeFile:
    """One volume of an image as a read-only file object, for readers that parse a file."""

    def __init__(self, reader: ImageReader, volume: Volume) -> None:
        self._reader = reader
        self._start = volume.start
        self._size = volume.size
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._position
        size = max(0, min(size, self._size - self._position))
        data = bytes(self._reader.read(self._start + self._position, size)) if size else b""
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, self._size)[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def get_offset(self) -> int:
        return self._position

    def get_size(self) -> int:
        return self._size


def printable(raw: bytes, *, name: bool = False) -> str:
    """Bytes from the image as one safe line: invalid UTF-8, control characters and the
    backslash itself become \\xNN escapes, so a hostile name cannot move the cursor, clear the
    screen, fake another line or pass for an escape. A `name` escapes "/" too, so a path
    shows where each name ends."""
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


def listed(items: Iterator[Item], directory: Entry) -> Iterator[Item]:
    """A parser's directory listing, streamed (a folder of a million names is never held
    whole), its failure named after the folder."""
    while True:
        try:
            yield next(items)
        except StopIteration:
            return
        except FormatError:
            raise FormatError(f"cannot read directory {directory.display_path}") from None


def display_join(parent: str, name: bytes) -> str:
    return f"{parent.rstrip('/')}/{printable(name, name=True)}"


def named_only(display_path: str, name: bytes, inode: int, kind: str | None) -> Entry:
    """An entry that only its folder names: the inode it points to cannot be read, so its
    size, content and (where the folder does not record it) kind are unknown."""
    kind = kind or "file"
    return Entry(display_path=display_path, name=name, inode=inode, kind=kind, size=0,
                 mode=0o755 if kind == "dir" else 0o644, uid=0, gid=0, mtime_ns=0, atime_ns=0,
                 ctime_ns=0, target=None, metadata_unknown=True)


def stream_entry(owner: Entry, stream: bytes, size: int, ref: Any) -> Entry:
    """An alternate data stream of `owner`, shown as `file:stream`."""
    return Entry(display_path=f"{owner.display_path}:{printable(stream, name=True)}",
                 name=owner.name + b":" + stream, inode=owner.inode, kind="stream", size=size,
                 mode=owner.mode, uid=owner.uid, gid=owner.gid, mtime_ns=owner.mtime_ns,
                 atime_ns=owner.atime_ns, ctime_ns=owner.ctime_ns, target=None,
                 stream=stream, ref=ref)


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


def kind_of(mode: int) -> str:
    """An entry's kind from the type bits of a Unix mode."""
    return _KIND_OF_TYPE.get(stat.S_IFMT(mode), "other")


def mode_string(entry: Entry) -> str:
    """`ls -l` style: drwxr-xr-x."""
    return stat.filemode(KIND_BITS.get(entry.kind, 0) | entry.mode)
