"""Extract files and folders from an image without ever writing outside the destination.

The image is hostile until proven otherwise, so:
- every directory is entered with openat(O_NOFOLLOW | O_DIRECTORY) relative to its parent's
  descriptor, and every file is created with O_EXCL | O_NOFOLLOW then renamed into place, so
  no path is ever resolved through a symlink, least of all one this extraction created;
- names are bytes from the image: '/', NUL, control characters and '.'/'..' are escaped, names
  too long for Linux are shortened, and every such rename is reported;
- a symlink is created only when its target provably stays inside the destination;
  device nodes, FIFOs and sockets are never created;
- set-user-ID and set-group-ID bits are dropped;
- the walk holds one directory descriptor and one TSK directory per level: deep trees cannot
  run out of descriptors and huge directories are streamed, never listed in memory.

A file with unreadable parts is written whole (the holes read as zeros) and its lost byte
ranges go into the report.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rescue.devices.safety import require_writable
from rescue.errors import DestinationError, FormatError
from rescue.explore.filesystem import Entry, FileSystem, printable

NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UNSAFE_BYTES = frozenset(range(0x20)) | {0x2F, 0x7F}  # control characters, '/', DEL
_DROPPED_BITS = 0o6000  # set-user-ID, set-group-ID


@dataclass
class Report:
    """What an extraction did, including everything it did not do as asked."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    damaged: list[tuple[str, tuple[tuple[int, int], ...]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (path in image, name written)

    @property
    def complete(self) -> bool:
        return not self.damaged and not self.skipped

    def to_dict(self) -> dict[str, object]:
        return {
            "files": self.files, "directories": self.directories, "symlinks": self.symlinks,
            "bytes": self.bytes,
            "damaged": [{"path": path, "lost": [list(r) for r in ranges],
                         "lost_bytes": sum(end - start for start, end in ranges)}
                        for path, ranges in self.damaged],
            "skipped": [{"path": path, "reason": why} for path, why in self.skipped],
            "renamed": [{"path": path, "written_as": name} for path, name in self.renamed],
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


def link_stays_inside(target: bytes, depth: int) -> bool:
    """Whether a symlink `depth` directories below the destination stays inside it wherever
    it is resolved from: relative, its only '..' components lead (at most `depth` of them),
    and nothing after them climbs. Every link made under this rule obeys it too, so chains
    of links cannot climb out either."""
    if not target or target.startswith(b"/") or b"\0" in target:
        return False
    parts = [part for part in target.split(b"/") if part not in (b"", b".")]
    climbs = 0
    while climbs < len(parts) and parts[climbs] == b"..":
        climbs += 1
    return climbs <= depth and b".." not in parts[climbs:]


class _Extraction:
    def __init__(self, fs: FileSystem, report: Report, cancel: threading.Event | None,
                 progress: Callable[[int], None] | None) -> None:
        self.fs, self.report = fs, report
        self.cancel = cancel
        self.progress = progress

    def name_for(self, entry: Entry) -> bytes:
        name = safe_name(entry.name)
        if name != entry.name:
            self.report.renamed.append((entry.display_path, printable(name)))
        return name

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt

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
        os.chmod(fd, entry.mode & ~_DROPPED_BITS)
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
        self.report.directories += 1

    def tree(self, top: Entry, top_fd: int, depth: int, *, own_top: bool = True) -> None:
        """Depth-first over `top`, holding one descriptor: a child directory's descriptor
        replaces its parent's, and openat("..") of the real directory brings the parent back.
        Without `own_top` the top directory is the user's: its mode and times stay."""
        fd = top_fd
        stack: list[tuple[Entry, Iterator[Entry]]] = [(top, self.fs.children(top))]
        ancestors = {top.inode}
        try:
            while stack:
                self.check_cancel()
                directory, children = stack[-1]
                try:
                    child = next(children, None)
                except FormatError as error:  # an unreadable directory: keep what we have
                    self.report.skipped.append((directory.display_path, str(error)))
                    child = None
                if child is None:
                    stack.pop()
                    ancestors.discard(directory.inode)
                    if stack or own_top:
                        self.finish_dir(fd, directory)
                    if stack:
                        parent = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                        os.close(fd)
                        fd = parent
                    continue
                if child.kind != "dir":
                    self.leaf(fd, child, depth + len(stack) - 1)
                elif child.inode in ancestors:
                    self.report.skipped.append((child.display_path, "directory loop: it "
                                                "contains itself (damaged file system)"))
                else:
                    child_fd = self.open_dir(fd, self.name_for(child))
                    os.close(fd)
                    fd = child_fd
                    stack.append((child, self.fs.children(child)))
                    ancestors.add(child.inode)
        finally:
            if fd != top_fd:
                os.close(fd)

    # -- everything but directories ---------------------------------------------------------
    def leaf(self, dir_fd: int, entry: Entry, depth: int) -> None:
        if entry.kind == "file":
            try:
                self.file(dir_fd, entry)
            except FormatError as error:
                self.report.skipped.append((entry.display_path, str(error)))
        elif entry.kind == "symlink":
            self.symlink(dir_fd, entry, depth)
        else:
            self.report.skipped.append((entry.display_path, f"{entry.kind} device or special "
                                        "file: not created"))

    def file(self, dir_fd: int, entry: Entry) -> None:
        name = self.name_for(entry)
        temp = b".rescue-%s.part" % os.urandom(6).hex().encode()
        out = os.open(temp, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            try:
                self.copy(entry, out)
                os.chmod(out, entry.mode & ~_DROPPED_BITS)
                os.utime(out, ns=(entry.atime_ns, entry.mtime_ns))
            finally:
                os.close(out)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temp, dir_fd=dir_fd)
            raise
        lost = self.fs.lost(entry)
        if lost:
            self.report.damaged.append((entry.display_path, lost))
        self.report.files += 1

    def copy(self, entry: Entry, out: int) -> None:
        """Zero chunks become holes: rescued disks are often mostly empty."""
        position = 0
        zeros = b""
        for chunk in self.fs.read_chunks(entry):
            self.check_cancel()
            if len(zeros) != len(chunk):
                zeros = bytes(len(chunk))
            if chunk != zeros:
                view = memoryview(chunk)
                while view:
                    view = view[os.pwrite(out, view, position + len(chunk) - len(view)):]
            position += len(chunk)
            self.report.bytes += len(chunk)
            if self.progress is not None:
                self.progress(len(chunk))
        os.ftruncate(out, position)

    def symlink(self, dir_fd: int, entry: Entry, depth: int) -> None:
        target = entry.target or b""
        if not link_stays_inside(target, depth):
            self.report.skipped.append((entry.display_path, f"symlink to {printable(target)} "
                                        "would point outside the destination: not created"))
            return
        name = self.name_for(entry)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self.report.skipped.append((entry.display_path, "a directory of that name exists"))
            return
        os.symlink(target, name, dir_fd=dir_fd)
        os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        self.report.symlinks += 1


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
            run.tree(source, dest_fd, depth=0, own_top=False)
        elif source.kind == "dir":
            top_fd = run.open_dir(dest_fd, run.name_for(source))
            try:
                run.tree(source, top_fd, depth=1)
            finally:
                os.close(top_fd)
        else:
            run.leaf(dest_fd, source, depth=0)
    except OSError as error:
        raise DestinationError(f"writing to {destination} failed: {error.strerror}") from None
    finally:
        os.close(dest_fd)
    return report
