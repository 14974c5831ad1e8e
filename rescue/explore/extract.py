"""Extract files and folders from an image without ever writing outside the destination and
without losing anything silently.

The image is hostile until proven otherwise, so:
- every directory is entered with openat(O_NOFOLLOW | O_DIRECTORY) relative to its parent's
  descriptor, and every file is created with O_EXCL | O_NOFOLLOW then renamed into place, so
  no path is ever resolved through a symlink, least of all one this extraction created;
- names are bytes from the image: '/', NUL, control characters and '.'/'..' are escaped, names
  too long for Linux are shortened, and every such rename is reported;
- symlinks are recreated as they are, absolute or climbing: a link is data, and only following
  one while writing could do harm; device nodes, FIFOs and sockets are never created;
- set-user-ID and set-group-ID bits are dropped;
- a file's later names (hard links) are linked to its first, whole copy, reached from the top
  of the walk one folder at a time with O_NOFOLLOW; a destination that cannot link gets copies;
- the walk holds one directory descriptor and one directory listing per level: deep trees cannot
  run out of descriptors and huge directories are streamed (only the names written in each
  open folder are remembered, to keep them apart).

`_Extraction.place` decides every entry's fate. Two entries of a folder that come to the same
name (a damaged directory, names that escape alike) are both written,
the later one renamed. A file's bytes that the image lacks (bad sectors, a FAT chain cut short
or looping, data the reader does not return) are written as zeros and their ranges reported as
damaged. `Report.complete` is false only for data the user does not get.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rescue.devices.safety import require_writable
from rescue.errors import DestinationError, ExitCode, FormatError
from rescue.explore.damage import merge
from rescue.explore.filesystem import Entry, FileSystem, printable

NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UNSAFE_BYTES = frozenset(range(0x20)) | {0x2F, 0x7F}  # control characters, '/', DEL
_DROPPED_BITS = 0o6000  # set-user-ID, set-group-ID
_NOT_CREATED = {"char": "character device", "block": "block device", "fifo": "FIFO",
                "socket": "socket", "label": "volume label, not a file"}
_ESCAPED = "not a name Linux can hold as it is"
_SAME_NAME = "an earlier entry of its folder has the same name"
_METADATA_LOST = ("its metadata (inode, MFT record or directory entry) lies in a bad or "
                  "never-read part of the image, or cannot be read: what it is and what it "
                  "holds are unknown")
_LISTING_LOST = ("part of this folder lies in a bad or never-read part of the image: the "
                 "entries kept there are unknown")

Ranges = tuple[tuple[int, int], ...]


@dataclass
class Report:
    """What an extraction did, including everything it did not do as asked."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    streams: int = 0  # NTFS alternate data streams, each written as NAME:STREAM beside NAME
    hard_links: int = 0  # files written as another name of a file already written
    bytes: int = 0
    damaged: list[tuple[str, Ranges]] = field(default_factory=list)  # written, ranges zeroed
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not written
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): never made
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # path, written as, why

    @property
    def complete(self) -> bool:
        """Whether the user got every byte: skipped special files and renames do not count."""
        return not self.damaged and not self.missing

    @property
    def exit_code(self) -> ExitCode:
        """1 when data is missing or damaged, as `rescue extract` documents."""
        return ExitCode.OK if self.complete else ExitCode.UNREADABLE

    def to_dict(self) -> dict[str, object]:
        return {
            "files": self.files, "directories": self.directories, "symlinks": self.symlinks,
            "streams": self.streams, "hard_links": self.hard_links, "bytes": self.bytes,
            "damaged": [{"path": path, "lost": [list(r) for r in ranges],
                         "lost_bytes": sum(end - start for start, end in ranges)}
                        for path, ranges in self.damaged],
            "missing": [{"path": path, "reason": why} for path, why in self.missing],
            "skipped": [{"path": path, "reason": why} for path, why in self.skipped],
            "renamed": [{"path": path, "written_as": name, "reason": why}
                        for path, name, why in self.renamed],
        }


def safe_name(raw: bytes) -> bytes:
    """A single path component that Linux accepts and that cannot climb or split a path."""
    if raw in (b"", b".", b".."):
        return b"%2E" * max(1, len(raw))
    name = b"".join(b"%%%02X" % byte if byte in _UNSAFE_BYTES else bytes((byte,))
                    for byte in raw) if any(b in _UNSAFE_BYTES for b in raw) else raw
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(raw).hexdigest()[:16].encode()
        name = name[:NAME_MAX - len(digest) - 1] + b"~" + digest
    return name


def numbered(name: bytes, number: int) -> bytes:
    """`name` told apart by a number before its extension (report~2.txt), within NAME_MAX."""
    stem, dot, extension = name.rpartition(b".")
    if not stem or len(extension) > 16:  # no extension, a dot file, or no real extension
        stem, dot, extension = name, b"", b""
    suffix = b"~%d" % number + dot + extension
    return stem[:NAME_MAX - len(suffix)] + suffix


class _Extraction:
    def __init__(self, fs: FileSystem, report: Report, cancel: threading.Event | None,
                 progress: Callable[[int], None] | None) -> None:
        self.fs, self.report = fs, report
        self.cancel = cancel
        self.progress = progress
        # owners are the file system's own only where it keeps Unix ones, and only root can
        # give files away
        self.owners = fs.posix_modes and os.geteuid() == 0
        # Where the first name of each file with more than one was written, as names from
        # the top folder of the walk (`tree`), so later names become links to it.
        self.first_names: dict[int, tuple[bytes, ...]] = {}
        self.path: list[bytes] = []  # the folder being filled, as names from that top
        self.top_fd = -1

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt

    def place(self, dir_fd: int, entry: Entry, taken: set[bytes]
              ) -> tuple[int, bytes] | None:
        """The one decision of what becomes of an entry of the folder open at `dir_fd`,
        whose written names are `taken`: a file, symlink or folder is written under a name of
        its own (a folder's descriptor and name are returned, to fill it); a file's second
        name becomes a hard link to its first; anything else is skipped."""
        if entry.kind != "dir" and self.fs.metadata_lost(entry):
            self.report.missing.append((entry.display_path, _METADATA_LOST))
            return None
        if entry.kind not in ("file", "dir", "symlink", "stream"):
            what = _NOT_CREATED.get(entry.kind, f"{entry.kind} entry")
            self.report.skipped.append((entry.display_path, f"{what}: not created"))
            return None
        name = self.claim(entry, taken)
        if entry.kind == "dir":
            if self.fs.lost(entry) or self.fs.metadata_lost(entry):
                self.report.missing.append((entry.display_path, _LISTING_LOST))
            return self.open_dir(dir_fd, name), name
        if entry.kind == "symlink":
            self.symlink(dir_fd, entry, name)
            return None
        if not self.link(dir_fd, entry, name):
            try:
                whole = self.file(dir_fd, entry, name)
            except FormatError as error:
                self.report.missing.append((entry.display_path, str(error)))
            else:
                if whole and entry.kind == "file" and entry.links > 1 and self.top_fd >= 0:
                    self.first_names.setdefault(entry.inode, (*self.path, name))
        self.streams(dir_fd, entry, name, taken)
        return None

    def link(self, dir_fd: int, entry: Entry, name: bytes) -> bool:
        """Write a file's later name as a hard link to its first, as the image holds it; false
        when no first name was written whole, or the destination cannot link (FAT): then it
        is copied."""
        first = self.first_names.get(entry.inode) if entry.kind == "file" else None
        if first is None:
            return False
        temp = _temp_name()
        try:
            folder = self.open_path(first[:-1])
        except OSError:
            return False
        try:
            os.link(first[-1], temp, src_dir_fd=folder, dst_dir_fd=dir_fd,
                    follow_symlinks=False)
        except OSError:
            return False
        finally:
            if folder != self.top_fd:
                os.close(folder)
        try:
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temp, dir_fd=dir_fd)
            raise
        self.report.hard_links += 1
        return True

    def open_path(self, names: tuple[bytes, ...]) -> int:
        """The folder at `names` below the top of the walk, entered one name at a time without
        following a symlink."""
        fd = self.top_fd
        for name in names:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            if fd != self.top_fd:
                os.close(fd)
            fd = child
        return fd

    def streams(self, dir_fd: int, entry: Entry, name: bytes, taken: set[bytes]) -> None:
        """Each alternate data stream as NAME:STREAM beside the file as written, the way
        ntfs-3g and Windows name them."""
        try:
            streams = self.fs.streams(entry)
        except FormatError as error:
            self.report.missing.append((entry.display_path, str(error)))
            return
        for stream in streams:
            stream_name = self.claim(stream, taken, stem=name)
            try:
                self.file(dir_fd, stream, stream_name)
            except FormatError as error:
                self.report.missing.append((stream.display_path, str(error)))

    def claim(self, entry: Entry, taken: set[bytes], stem: bytes | None = None) -> bytes:
        """The entry's name in its folder: escaped if Linux cannot hold it as it is, and
        numbered if an earlier entry of the folder already has it; every change reported.
        A stream's name follows its file's name as written (`stem`)."""
        wanted = entry.name if stem is None else stem + b":" + (entry.stream or b"")
        name = safe_name(wanted)
        why = _ESCAPED if name != wanted else ""
        if name in taken:
            name = next(candidate for candidate in (numbered(name, number)
                                                    for number in itertools.count(2))
                        if candidate not in taken)
            why = _SAME_NAME
        taken.add(name)
        if why:
            self.report.renamed.append((entry.display_path, printable(name, name=True), why))
        return name

    # -- directories ------------------------------------------------------------------------
    def open_dir(self, parent_fd: int, name: bytes) -> int:
        """Create (or reuse) a real directory and open it without following any symlink; a
        symlink or file left at that name by an earlier run is replaced."""
        for _ in range(2):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(name, dir_fd=parent_fd)
        raise DestinationError(f"cannot make directory {printable(name)}: it keeps changing")

    def finish_dir(self, fd: int, entry: Entry) -> None:
        """Mode and times last, so a read-only directory could still be filled."""
        if self.owners:
            os.chown(fd, entry.uid, entry.gid)
        os.chmod(fd, entry.mode & ~_DROPPED_BITS)
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
        self.report.directories += 1

    def tree(self, top: Entry, top_fd: int, *, own_top: bool = True) -> None:
        """Depth-first over `top`, holding `top_fd` (the caller's, never closed here) and one
        more descriptor: a child directory's descriptor replaces its parent's, and openat("..")
        of the real directory brings the parent back. Without `own_top` the top directory is
        the user's: its mode and times stay."""
        fd = self.top_fd = top_fd
        stack: list[tuple[Entry, Iterator[Entry], set[bytes]]] = [
            (top, self.fs.children(top), set())]
        ancestors = {top.inode}
        self.path = []
        try:
            while stack:
                self.check_cancel()
                directory, children, taken = stack[-1]
                try:
                    child = next(children, None)
                except FormatError as error:  # an unreadable directory: keep what we have
                    self.report.missing.append((directory.display_path, str(error)))
                    child = None
                if child is None:
                    stack.pop()
                    ancestors.discard(directory.inode)
                    if self.path:
                        self.path.pop()
                    if stack or own_top:
                        self.finish_dir(fd, directory)
                    if stack:
                        parent = top_fd if len(stack) == 1 else os.open(b"..", _DIR_FLAGS,
                                                                         dir_fd=fd)
                        os.close(fd)
                        fd = parent
                    continue
                if child.kind == "dir" and child.inode in ancestors:
                    self.report.skipped.append((child.display_path, "directory loop: it "
                                                "contains itself (damaged file system), and "
                                                "its content is extracted once"))
                    continue
                placed = self.place(fd, child, taken)
                if placed is not None:
                    if fd != top_fd:
                        os.close(fd)
                    fd, name = placed
                    stack.append((child, self.fs.children(child), set()))
                    ancestors.add(child.inode)
                    self.path.append(name)
        finally:
            if fd != top_fd:
                os.close(fd)

    # -- everything but directories ---------------------------------------------------------
    def file(self, dir_fd: int, entry: Entry, name: bytes) -> bool:
        """Write a file (or stream) under a temporary name, then rename it into place;
        whether it was written whole (nothing of it lost)."""
        temp = _temp_name()
        out = os.open(temp, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            try:
                short = self.copy(entry, out)
                if self.owners:
                    os.chown(out, entry.uid, entry.gid)
                os.chmod(out, entry.mode & ~_DROPPED_BITS)
                os.utime(out, ns=(entry.atime_ns, entry.mtime_ns))
            finally:
                os.close(out)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temp, dir_fd=dir_fd)
            raise
        lost = merge((*self.fs.lost(entry), *short))
        if lost:
            self.report.damaged.append((entry.display_path, lost))
        if entry.kind == "stream":
            self.report.streams += 1
        else:
            self.report.files += 1
        return not lost

    def copy(self, entry: Entry, out: int) -> list[tuple[int, int]]:
        """Write the file's content; the ranges the reader did not return (written as zeros).
        Holes and zero chunks stay holes: rescued disks are often mostly empty."""
        zeros = b""
        short = []
        for offset, chunk, returned in self.fs.read_chunks(entry):
            self.check_cancel()
            if returned < len(chunk):
                short.append((offset + returned, offset + len(chunk)))
            if len(zeros) != len(chunk):
                zeros = bytes(len(chunk))
            if chunk != zeros:
                view = memoryview(chunk)
                while view:
                    view = view[os.pwrite(out, view, offset + len(chunk) - len(view)):]
            if self.progress is not None:
                self.progress(len(chunk))
        os.ftruncate(out, entry.size)
        self.report.bytes += entry.size
        return short

    def symlink(self, dir_fd: int, entry: Entry, name: bytes) -> None:
        """The link as the image has it, pointing wherever it points: it is only created,
        never followed."""
        target = entry.target or b""
        if not target:
            self.report.missing.append((entry.display_path, "symlink without a target"))
            return
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self.report.missing.append((entry.display_path, "a folder of that name is in "
                                        "the way: not created"))
            return
        try:
            os.symlink(target, name, dir_fd=dir_fd)
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            self.report.missing.append((entry.display_path, "symlink target too long for "
                                        "Linux: not created"))
            return
        if self.owners:
            os.chown(name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
        os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        self.report.symlinks += 1


def _temp_name() -> bytes:
    """A name for a file being written, renamed into place once complete."""
    return b".rescue-%s.part" % os.urandom(6).hex().encode()


def _first_write(destination: str) -> str:
    """A file path for the write policy, which judges files: every file an extraction writes
    lies inside DEST, so a not-yet-existing name there (or DEST itself, when it is still to
    be made) stands for them all."""
    if os.path.isdir(destination):
        return os.path.join(destination, ".rescue-extract")
    return destination


def extract(fs: FileSystem, source: Entry, destination: str, *, image: str | None = None,
            cancel: threading.Event | None = None,
            progress: Callable[[int], None] | None = None) -> Report:
    """Copy `source` (file, symlink or folder) into the directory `destination`, created if
    missing: DEST/<name>, or the root's content directly into DEST. The destination path
    itself is the user's and may be a symlink; nothing below it is followed. The write
    policy is asked first, with `image` as the source being read."""
    require_writable(_first_write(destination), protected=[image] if image else [])
    report = Report()
    run = _Extraction(fs, report, cancel, progress)
    try:
        os.makedirs(destination, exist_ok=True)
        dest_fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise DestinationError(f"cannot use {destination} as destination: "
                               f"{error.strerror}") from None
    try:
        if source.kind == "dir" and source.inode == fs.root_inode:
            run.tree(source, dest_fd, own_top=False)
        else:
            placed = run.place(dest_fd, source, set())
            if placed is not None:
                try:
                    run.tree(source, placed[0])
                finally:
                    os.close(placed[0])
    except OSError as error:
        raise DestinationError(f"writing to {destination} failed: {error.strerror}") from None
    finally:
        os.close(dest_fd)
    return report
