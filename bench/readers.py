"""Every candidate reader of files inside an image, seen the same way: a tree of nodes, each
with a Record (tests/fixtures/corpus.py) of what the reader says about it.

A reader is a class built on an image path, with `root`, `children(node)` → (name, node)
pairs and `record(node)` → Record. The bench walks it and judges the records against the
corpus truth. The readers: The Sleuth Kit (pytsk3), the libyal bindings (pyfsext, pyfsfat,
pyfsntfs, pyfsxfs; pyfsext and pyfsfat installed by hand, like dissect) and dissect's modules
(AGPL: measured here, never a dependency of rescue).
"""

from __future__ import annotations

import calendar
import datetime
import stat
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pytsk3

from tests.fixtures.corpus import Record, sha256

FILETIME_EPOCH = 116_444_736_000_000_000  # 1601 → 1970 in 100 ns steps
KIND_OF_MODE = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo", stat.S_IFCHR: "char", stat.S_IFBLK: "block",
                stat.S_IFSOCK: "socket"}
Node = Any
MAX_READ = 64 << 20  # no corpus file is near this: a larger size is misread, never read


def content(size: int, read: Callable[[], bytes]) -> str:
    """sha256 of what `read()` returns, asked only for a size a corpus file can have."""
    if size > MAX_READ:
        return f"not read: a size of {size}"
    return sha256(read() if size else b"")


def posix_record(mode: int, size: int, mtime_ns: int, read: Callable[[], bytes],
                 target: Callable[[], str | bytes], owner: tuple[int, int]) -> Record:
    """A Record from a Unix mode; `read()` and `target()` are asked only when needed."""
    kind = KIND_OF_MODE.get(stat.S_IFMT(mode), "other")
    if kind == "symlink":
        link = target()
        link = link.encode() if isinstance(link, str) else link
        return Record(kind, len(link), None, mtime_ns, sha256(link), owner=owner)
    digest = content(size, read) if kind == "file" else ""
    return Record(kind, size, stat.S_IMODE(mode), mtime_ns, digest, owner=owner)


def utc_ns(moment: datetime.datetime) -> int:
    """A FAT time (local time, taken as UTC as mtools wrote it) in nanoseconds."""
    return calendar.timegm(moment.timetuple()) * 1_000_000_000 + moment.microsecond * 1000


class Tsk:
    """The Sleuth Kit, as rescue uses it today."""

    _KINDS: ClassVar[dict[int, str]] = {
        pytsk3.TSK_FS_META_TYPE_REG: "file", pytsk3.TSK_FS_META_TYPE_DIR: "dir",
        pytsk3.TSK_FS_META_TYPE_LNK: "symlink", pytsk3.TSK_FS_META_TYPE_FIFO: "fifo"}

    def __init__(self, image: str) -> None:
        self.fs = pytsk3.FS_Info(pytsk3.Img_Info(image))
        self.root = self.fs.open_dir("/")

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        for item in node:
            name = item.info.name
            raw = bytes(name.name or b"").decode("utf-8", "replace")
            if (raw in ("", ".", "..") or raw.startswith("$")
                    or int(name.flags) & int(pytsk3.TSK_FS_NAME_FLAG_UNALLOC)
                    or raw.endswith(" (Volume Label Entry)") or item.info.meta is None):
                continue
            yield raw, item

    def enter(self, node: Node) -> Node:
        return node.as_directory()

    def record(self, node: Node) -> Record:
        meta = node.info.meta
        kind = self._KINDS.get(meta.type, "other")
        size = int(meta.size)
        mtime = int(meta.mtime) * 1_000_000_000 + int(meta.mtime_nano)
        owner = (int(meta.uid), int(meta.gid))
        if kind == "symlink":
            link = bytes(meta.link or b"") or bytes(node.read_random(0, size))
            return Record(kind, len(link), None, mtime, sha256(link), owner=owner)
        digest = content(size, lambda: bytes(node.read_random(0, size))) \
            if kind == "file" else ""
        streams = {}
        for attribute in node:
            info = attribute.info
            if int(info.type) == int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA) and info.name:
                streams[bytes(info.name).decode()] = content(
                    int(info.size),
                    lambda info=info: bytes(node.read_random(0, int(info.size), info.type,
                                                             info.id)))
        return Record(kind, size, int(meta.mode) & 0o7777, mtime, digest, streams, owner)


class LibyalExt:
    def __init__(self, image: str) -> None:
        import pyfsext
        self.volume = pyfsext.volume()
        self.volume.open(image)
        self.root = self.volume.get_root_directory()

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return ((entry.name, entry) for entry in node.sub_file_entries)

    def enter(self, node: Node) -> Node:
        return node

    def record(self, node: Node) -> Record:
        size = node.get_size()
        return posix_record(node.file_mode, size, node.get_modification_time_as_integer(),
                            lambda: node.read_buffer_at_offset(size, 0),
                            lambda: node.symbolic_link_target,
                            (node.owner_identifier, node.group_identifier))


class LibyalXfs(LibyalExt):
    def __init__(self, image: str) -> None:
        import pyfsxfs
        self.volume = pyfsxfs.volume()
        self.volume.open(image)
        self.root = self.volume.get_root_directory()


class LibyalFat(LibyalExt):
    def __init__(self, image: str) -> None:
        import pyfsfat
        self.volume = pyfsfat.volume()
        self.volume.open(image)
        self.root = self.volume.get_root_directory()

    def record(self, node: Node) -> Record:
        if node.file_attribute_flags & 0x10:
            return Record("dir", 0, None, utc_ns(node.modification_time), "")
        size = node.get_size()
        return Record("file", size, None, utc_ns(node.modification_time),
                      content(size, lambda: node.read_buffer_at_offset(size, 0)))


class LibyalNtfs(LibyalExt):
    def __init__(self, image: str) -> None:
        import pyfsntfs
        self.volume = pyfsntfs.volume()
        self.volume.open(image)
        self.root = self.volume.get_root_directory()

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return ((entry.name, entry) for entry in node.sub_file_entries
                if not entry.name.startswith("$"))

    def record(self, node: Node) -> Record:
        mtime = (node.get_modification_time_as_integer() - FILETIME_EPOCH) * 100
        target = node.symbolic_link_target
        if target is not None:
            link = target.replace("\\", "/").encode()  # Windows form: as Linux shows it
            return Record("symlink", len(link), None, mtime, sha256(link))
        if node.has_directory_entries_index():
            return Record("dir", 0, None, mtime, "")
        size = node.get_size()
        streams = {stream.name: content(stream.size,
                                        lambda s=stream: s.read_buffer_at_offset(s.size, 0))
                   for stream in node.alternate_data_streams}
        return Record("file", size, None, mtime,
                      content(size, lambda: node.read_buffer_at_offset(size, 0)), streams)


class DissectExt:
    """dissect.extfs, and dissect.xfs, whose inodes look the same."""

    def __init__(self, image: str) -> None:
        from dissect.extfs import ExtFS
        self.fs = ExtFS(open(image, "rb"))  # noqa: SIM115 (kept open while the bench reads)
        self.root = self.fs.get("/")

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return ((name, child) for name, child in node.listdir().items()
                if name not in (".", ".."))

    def enter(self, node: Node) -> Node:
        return node

    def mode(self, node: Node) -> int:
        return int(node.inode.i_mode)

    def owner(self, node: Node) -> tuple[int, int]:
        inode = node.inode
        return inode.i_uid | inode.i_uid_high << 16, inode.i_gid | inode.i_gid_high << 16

    def record(self, node: Node) -> Record:
        return posix_record(self.mode(node), node.size, node.mtime_ns,
                            lambda: node.open().read(), lambda: node.link, self.owner(node))


class DissectXfs(DissectExt):
    def __init__(self, image: str) -> None:
        from dissect.xfs import XFS
        self.fs = XFS(open(image, "rb"))  # noqa: SIM115
        self.root = self.fs.get("/")

    def mode(self, node: Node) -> int:
        return int(node.inode.di_mode)

    def owner(self, node: Node) -> tuple[int, int]:
        return int(node.inode.di_uid), int(node.inode.di_gid)


class DissectBtrfs(DissectExt):
    def __init__(self, image: str) -> None:
        from dissect.btrfs import Btrfs
        self.fs = Btrfs(open(image, "rb"))  # noqa: SIM115
        self.root = self.fs.get("/")

    def mode(self, node: Node) -> int:
        return int(node.mode)

    def owner(self, node: Node) -> tuple[int, int]:
        return int(node.uid), int(node.gid)


class DissectFat(DissectExt):
    def __init__(self, image: str) -> None:
        from dissect.fat import FATFS
        self.fs = FATFS(open(image, "rb"))  # noqa: SIM115
        self.root = self.fs.root

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return ((child.name, child) for child in node.iterdir()
                if child.name not in (".", "..") and not child.is_volume_id())

    def record(self, node: Node) -> Record:
        if node.is_directory():
            return Record("dir", 0, None, utc_ns(node.mtime), "")
        return Record("file", node.size, None, utc_ns(node.mtime),
                      content(node.size, lambda: node.open().read()))


class DissectExfat(DissectExt):
    """dissect.fat's ExFAT: a tree of raw directory entries; content read by its run lists."""

    def __init__(self, image: str) -> None:
        from dissect.fat import ExFAT
        self.fs = ExFAT(open(image, "rb"))  # noqa: SIM115
        self.root = self.fs.files["/"][1]

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return node.items()

    def enter(self, node: Node) -> Node:
        return node[1]

    def record(self, node: Node) -> Record:
        from dissect.util.stream import RunlistStream
        from dissect.util.ts import dostimestamp
        entry, _ = node
        mtime = utc_ns(dostimestamp(entry.metadata.modified_time))
        if entry.metadata.attributes.directory:
            return Record("dir", 0, None, mtime, "")
        stream = entry.stream
        size = int(stream.data_length)
        contiguous = bool(stream.flags.not_fragmented)  # then no FAT chain: the size says
        runs = self.fs.runlist(stream.location, contiguous, size if contiguous else None)
        return Record("file", size, None, mtime, content(size, lambda: RunlistStream(
            self.fs.filesystem, runs, size, self.fs.sector_size).read()))


class DissectNtfs(DissectExt):
    def __init__(self, image: str) -> None:
        from dissect.ntfs import NTFS
        self.fs = NTFS(open(image, "rb"))  # noqa: SIM115
        self.root = self.fs.mft.get("")

    def children(self, node: Node) -> Iterable[tuple[str, Node]]:
        return ((name, entry.dereference()) for name, entry in node.listdir().items()
                if not name.startswith("$") and name not in (".", ".."))

    def record(self, node: Node) -> Record:
        mtime = node.attributes[0x10][0].attribute.last_modification_time_ns  # $STANDARD_INFO
        if node.is_symlink():
            link = node.reparse_point_substitute_name.replace("\\", "/").encode()
            return Record("symlink", len(link), None, mtime, sha256(link))
        if node.is_dir():
            return Record("dir", 0, None, mtime, "")
        streams = {}
        for attribute in node.attributes[0x80]:
            if attribute.name:
                stream = node.open(attribute.name)
                streams[attribute.name] = content(stream.size, stream.read)
        return Record("file", node.size(), None, mtime,
                      content(node.size(), lambda: node.open().read()), streams)


# family → [(reader name, class)]: what can be asked of each corpus file system.
READERS: dict[str, list[tuple[str, type]]] = {
    "ext": [("tsk", Tsk), ("libyal", LibyalExt), ("dissect", DissectExt)],
    "fat": [("tsk", Tsk), ("libyal", LibyalFat), ("dissect", DissectFat)],
    "exfat": [("tsk", Tsk), ("libyal", LibyalFat), ("dissect", DissectExfat)],
    "ntfs": [("tsk", Tsk), ("libyal", LibyalNtfs), ("dissect", DissectNtfs)],
    "xfs": [("tsk", Tsk), ("libyal", LibyalXfs), ("dissect", DissectXfs)],
    "btrfs": [("tsk", Tsk), ("dissect", DissectBtrfs)],
}


class ImageFile:
    """An image file as rescue's native parsers read it (rescue.io.reader.Reader)."""

    def __init__(self, image: str) -> None:
        self.handle = open(image, "rb")  # noqa: SIM115 (kept open while the bench reads)
        self.size = self.handle.seek(0, 2)

    def read(self, offset: int, length: int) -> bytes:
        self.handle.seek(offset)
        return self.handle.read(length)


def native_records(image: str) -> dict[str, Record]:
    """What rescue's own used-block parsers (rescue/fs/used) know of each file: its path, size
    and data extents, so its content; they keep no kinds other than folders, no modes and no
    times (those stay None, and count as wrong)."""
    from rescue.fs.domain import open_fs
    source = ImageFile(image)
    found = {}
    for item in open_fs(source).files():
        path = item.path.strip("/")
        if not path or path.split("/")[-1].startswith("$"):
            continue
        if item.is_dir:
            found[path] = Record("dir", 0, None, None, "")
            continue
        size = item.size or 0
        found[path] = Record("file", size, None, None,
                             content(size, lambda item=item: pieced(source, item)))
    return found


def pieced(source: ImageFile, item: Any) -> bytes:
    """A file's bytes from its data extents; holes stay zeros."""
    data = bytearray(item.size)
    for start, where, length in item.pieces():
        data[start:start + length] = source.read(where, length)
    return bytes(data)
