"""A resized file system compared with the image's by its files, beyond its own checker.

A grown or shrunk file system rightly differs from the image byte for byte, and its checker
only says it is consistent, not that it still holds the same data. So both sides are read by
The Sleuth Kit (through our readers: the image in any format, the target as a device) and
compared: the listing of every regular file (path and size) must match, and a sample has its
content hashed (SHA-256) on both sides. The sample is deterministic and spread over the tree:
up to 64 files at even steps through the sorted paths, plus up to 256 of the files of at most
64 KiB at even steps (small files are many and cheap, and often where a tool goes wrong). A
file system's own bookkeeping (NTFS `$MFT`, `$Bitmap`… at its root) rightly changes size and
is not compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytsk3

from rescue.errors import FormatError
from rescue.fs.tskview import ImageView
from rescue.io.reader import Reader

SPREAD = 64  # files sampled at even steps through every path
SMALL_FILE = 64 << 10  # files of at most this many bytes are also sampled...
SMALL_SPREAD = 256  # ...up to this many of them
_BLOCK = 1 << 20
_TSK_ERRORS = (OSError, RuntimeError)
_SKIPPED = {b".", b".."}


@dataclass(frozen=True)
class FileComparison:
    """What was compared on one file system, and what differs (paths, with why)."""

    listed: int  # regular files listed on each side
    hashed: int  # files whose content was hashed on both sides
    size: int  # bytes hashed on each side
    differing: tuple[str, ...]

    def problem(self) -> str | None:
        """One line naming the differing files (the first five), or None."""
        if not self.differing:
            return None
        more = f" and {len(self.differing) - 5} more" if len(self.differing) > 5 else ""
        return (f"{len(self.differing)} of its {self.listed} files differ from the image's: "
                f"{', '.join(self.differing[:5])}{more}")


def compare_files(image: Reader, target: Reader) -> FileComparison:
    """Compare the file system in `image` (a partition of the image) with the one in
    `target` (the same partition restored and resized)."""
    source, restored = _open(image, "the image's partition"), _open(target, "the target")
    before, after = _listing(source), _listing(restored)
    differing = {path: "missing" for path in before.keys() - after.keys()}
    differing |= {path: "not in the image" for path in after.keys() - before.keys()}
    common = sorted(before.keys() & after.keys())
    differing |= {path: "size" for path in common if before[path][0] != after[path][0]}
    sample = [path for path in _sample(common, before) if path not in differing]
    size = 0
    for path in sample:
        try:
            if _digest(source, before[path]) != _digest(restored, after[path]):
                differing[path] = "content"
        except _TSK_ERRORS:
            differing[path] = "unreadable"
        size += before[path][0]
    return FileComparison(len(before), len(sample), size,
                          tuple(f"{path} ({why})" for path, why in sorted(differing.items())))


def _open(reader: Reader, what: str) -> pytsk3.FS_Info:
    try:
        return pytsk3.FS_Info(ImageView(reader))
    except _TSK_ERRORS:
        raise FormatError(f"no file system The Sleuth Kit can read in {what}") from None


def _sample(paths: list[str], files: dict[str, tuple[int, int]]) -> list[str]:
    """Up to SPREAD paths at even steps, plus up to SMALL_SPREAD of the small files."""
    small = [path for path in paths if files[path][0] <= SMALL_FILE]
    chosen = set(_spread(paths, SPREAD)) | set(_spread(small, SMALL_SPREAD))
    return sorted(chosen)


def _spread(paths: list[str], count: int) -> list[str]:
    if len(paths) <= count:
        return paths
    return [paths[index * len(paths) // count] for index in range(count)]


def _listing(fs: pytsk3.FS_Info) -> dict[str, tuple[int, int]]:
    """Every allocated regular file: path → (size, metadata address)."""
    ntfs = fs.info.ftype & pytsk3.TSK_FS_TYPE_NTFS_DETECT != 0
    return {path: (size, address) for path, size, address in _walk(fs, fs.open_dir("/"), "",
                                                                     ntfs, set())}


def _walk(fs: pytsk3.FS_Info, directory: pytsk3.Directory, prefix: str, ntfs: bool,
          seen: set[int]) -> Iterator[tuple[str, int, int]]:
    for entry in directory:
        name_info, meta = entry.info.name, entry.info.meta
        if (meta is None or name_info.name in _SKIPPED
                or name_info.flags & pytsk3.TSK_FS_NAME_FLAG_UNALLOC
                or (ntfs and not prefix and name_info.name.startswith(b"$"))):
            continue
        path = f"{prefix}/{name_info.name.decode('utf-8', 'surrogateescape')}"
        if meta.type == pytsk3.TSK_FS_META_TYPE_REG:
            yield path, meta.size, meta.addr
        elif meta.type == pytsk3.TSK_FS_META_TYPE_DIR and meta.addr not in seen:
            seen.add(meta.addr)  # a damaged tree may loop
            yield from _walk(fs, entry.as_directory(), path, ntfs, seen)


def _digest(fs: pytsk3.FS_Info, file: tuple[int, int]) -> str:
    size, address = file
    handle = fs.open_meta(inode=address)
    digest = hashlib.sha256()
    for offset in range(0, size, _BLOCK):
        digest.update(handle.read_random(offset, min(_BLOCK, size - offset)))
    return digest.hexdigest()
