"""`rescue mount`: an image as a read-only raw disk and its partitions' files, through FUSE.

Layout under DIR (the FUSE mount point):
    DIR/disk      the image's logical bytes (holes read as zeros), read-only
    DIR/pN        one directory per partition (DIR/fs for a table-less image) holding its files,
                  served by this process through rescue's own readers (`fileview`): no root and no
                  kernel driver needed. With `kernel`, DIR/pN is empty and, as root, the file
                  system is mounted there instead from a loop device set to the partition's
                  offset and size

The image is untrusted input (set-user-ID programs, device nodes), so every mount made here
takes its options from one policy, `UNTRUSTED`: read-only, nosuid, nodev, noexec. The FUSE view
lets only its owner in unless `allow_other` is asked for.

The FUSE server is a detached child process (`python -m rescue.explore.mount IMAGE DIR`), so
`rescue mount` returns. `rescue umount DIR` finds everything by looking at the system itself
(mounts below DIR, loop devices backed by DIR/disk, the server by its command line), so it
cleans up even after a crash that lost any record.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mfusepy as fuse

import rescue
from rescue.errors import RescueError, UsageError
from rescue.explore.damage import unreadable_map
from rescue.explore.filesystem import Entry
from rescue.explore.fileview import FileView, ServedFile, mounting_user, open_views
from rescue.explore.volumes import Volume, read_layout, volume_dir
from rescue.formats.base import ImageReader
from rescue.formats.image import ARCHIVE, READ_FORMATS, detect_format, open_reader
from rescue.formats.qemuexport import passphrase_if_encrypted, use_passphrase
from rescue.io.reader import Unreadable

DISK_NAME = "disk"
SUBTYPE = "rescue"
MODULE = "rescue.explore.mount"
VIEWS = ("files", "kernel", "raw")  # what DIR/pN hold: files, kernel mounts, or nothing
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
# The options of every mount of an image's contents, whoever makes it: no write, and nothing
# in the image (a set-user-ID program, a device node, any program) gains power from being there.
UNTRUSTED = ("ro", "nosuid", "nodev", "noexec")
# How to mount each file system, with the options it needs beyond UNTRUSTED; later entries are
# tried when earlier ones fail (a kernel without ntfs3 still has ntfs-3g's mount.ntfs helper).
_MOUNT_WAYS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "ext2": (("ext2", ("noload",)), ("ext4", ("noload",))),
    "ext3": (("ext3", ("noload",)), ("ext4", ("noload",))),
    "ext4": (("ext4", ("noload",)),),
    "ntfs": (("ntfs3", ()), ("ntfs", ())),
    "exfat": (("exfat", ()), ("exfat-fuse", ())),
    "vfat": (("vfat", ()),),
}


def kernel_mount_options(extra: Sequence[str] = ()) -> str:
    """The `mount -o` text for a partition: UNTRUSTED first, then what its file system needs."""
    return ",".join((*UNTRUSTED, *extra))


def fuse_mount_options(image: str, *, allow_other: bool, view: str) -> dict[str, Any]:
    """libfuse options of the FUSE view: UNTRUSTED, and other users only when asked."""
    options: dict[str, Any] = dict.fromkeys(UNTRUSTED, True)
    options.update(fsname=f"rescue:{image}", subtype=SUBTYPE)
    # auto_unmount mounts through the set-user-ID fusermount3, which works without access to
    # /dev/fuse, so any user can mount, and it unmounts DIR should the server die. Not under
    # kernel mounts: its lazy unmount would hide their loop devices from `rescue umount`.
    options["auto_unmount"] = view != "kernel"
    if allow_other:  # others, then, only as the stored owners and modes let them, as a kernel
        options.update(allow_other=True, default_permissions=True)  # mount would
    return options


class ImageFS(fuse.Operations):
    """Serves `/disk` from an image reader and one directory per volume: the volume's files
    (`FileView`) when it has a view, else empty (a mount point for `--kernel`).

    Single-threaded (see `serve`): the image readers and file-system readers keep caches that
    are not thread-safe, and the loop devices above read sequentially anyway.
    """

    use_ns = True

    def __init__(self, reader: ImageReader, volumes: Sequence[Volume],
                 views: dict[str, FileView] | None = None) -> None:
        self.reader = reader
        self.directories = [volume_dir(volume) for volume in volumes]
        self.views = views or {}
        self.stamp = time.time_ns()
        self.served = False
        self.open_files: dict[int, ServedFile] = {}
        self.next_handle = 1  # 0 is the raw disk

    def init(self, path: str) -> None:
        self.served = True

    def _inside(self, path: str) -> tuple[FileView, Entry] | None:
        """The view and entry a path below DIR/pN names; None for the top level."""
        top, _, inner = path.lstrip("/").partition("/")
        view = self.views.get(top)
        return None if view is None else (view, view.entry(inner))

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        inside = self._inside(path)
        if inside is not None:
            view, entry = inside
            return view.attributes(entry)
        uid, gid = mounting_user()
        times = {"st_atime": self.stamp, "st_mtime": self.stamp, "st_ctime": self.stamp,
                 "st_uid": uid, "st_gid": gid}
        name = path.lstrip("/")
        if name == "" or name in self.directories:
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **times}
        if name == DISK_NAME:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.reader.size,
                    "st_blocks": (self.reader.size + 511) // 512, **times}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: Any) -> list[str]:
        inside = self._inside(path)
        if inside is not None:
            view, entry = inside
            return view.names(entry)
        if path != "/":
            return [".", ".."]
        return [".", "..", DISK_NAME, *self.directories]

    def readlink(self, path: str) -> str:
        inside = self._inside(path)
        if inside is None:
            raise fuse.FuseOSError(errno.EINVAL)
        view, entry = inside
        return view.readlink(entry)

    def listxattr(self, path: str) -> list[str]:
        inside = self._inside(path)
        return [] if inside is None else inside[0].xattr_names(inside[1])

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        inside = self._inside(path)
        if inside is None:
            raise fuse.FuseOSError(errno.ENODATA)
        return inside[0].xattr(inside[1], name)

    def open(self, path: str, fi: Any) -> int:
        if fi.flags & os.O_ACCMODE != os.O_RDONLY:
            raise fuse.FuseOSError(errno.EROFS)
        inside = self._inside(path)
        if inside is not None:
            view, entry = inside
            served = view.open(entry)
            # A damaged file bypasses the page cache, so EIO answers exactly the read that
            # touches its lost bytes rather than the whole pages around them.
            fi.direct_io = int(served.damaged)
            fi.fh = self.next_handle
            self.open_files[fi.fh] = served
            self.next_handle += 1
            return 0
        if path != f"/{DISK_NAME}":
            raise fuse.FuseOSError(errno.ENOENT)
        fi.fh = 0
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        served = self.open_files.get(fi.fh)
        if served is not None:
            return served.read(offset, size)
        try:
            return self.reader.read(offset, max(0, min(size, self.reader.size - offset)))
        except Unreadable:  # a damaged compressed cluster reads as an I/O error
            raise fuse.FuseOSError(errno.EIO) from None

    def release(self, path: str, fi: Any) -> int:
        self.open_files.pop(fi.fh, None)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        top = path.lstrip("/").partition("/")[0]
        if top in self.views:
            return self.views[top].statfs()
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": (self.reader.size + 4095) // 4096,
                "f_bfree": 0, "f_bavail": 0, "f_namemax": 255}


def serve(image: str, mountpoint: str, image_format: str | None = None, *,
          allow_other: bool = False, view: str = "raw") -> None:
    """Run the FUSE server in the foreground until DIR is unmounted (or SIGTERM). `view` is
    one of VIEWS: "files" serves each volume's files at its directory, "kernel" leaves them
    empty for the kernel mounts, "raw" too."""
    reader = open_reader(image, image_format)
    try:
        volumes = read_layout(reader).volumes
        views = (open_views(reader, volumes, unreadable_map(image, reader.size),
                            mounting_user())[0] if view == "files" else {})
        operations = ImageFS(reader, volumes, views)
        try:
            fuse.FUSE(operations, mountpoint, raw_fi=True, foreground=True, nothreads=True,
                      **fuse_mount_options(image, allow_other=allow_other, view=view))
        except RuntimeError:  # libfuse reports a signal-ended loop as a failure
            if not operations.served:
                raise
    finally:
        reader.close()


# -- the system's view: mounts, loop devices, processes -------------------------------------

@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    options: frozenset[str]  # the mount point's own flags: ro, nosuid, nodev, noexec, ...


def _unescape(field_text: str) -> str:
    """/proc mount tables write space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field_text = field_text.replace(code, chr(int(code[1:], 8)))
    return field_text


def mounts() -> list[MountEntry]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        found = []
        for line in table:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            found.append(MountEntry(_unescape(fields[4]), tail[0], _unescape(tail[1]),
                                    frozenset(fields[5].split(","))))
        return found


def mounts_below(directory: str) -> list[MountEntry]:
    """Mounts strictly below `directory`, deepest (and latest) first."""
    prefix = directory.rstrip("/") + "/"
    below = [entry for entry in mounts() if entry.mountpoint.startswith(prefix)]
    return sorted(below, key=lambda entry: entry.mountpoint.count("/"), reverse=True)


def missing_policy(mountpoint: str) -> set[str]:
    """The UNTRUSTED flags the newest mount at `mountpoint` lacks (all, if nothing is there)."""
    at = [entry for entry in mounts() if entry.mountpoint == mountpoint]
    return set(UNTRUSTED) - (at[-1].options if at else frozenset())


def is_our_mount(directory: str) -> bool:
    return any(entry.mountpoint == directory and entry.fstype == f"fuse.{SUBTYPE}"
               for entry in mounts())


def loops_backed_by(prefix: str) -> list[str]:
    """Loop devices whose backing file lies below `prefix` (e.g. DIR/disk)."""
    devices = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir("/sys/block")):
            backing = f"/sys/block/{name}/loop/backing_file"
            with contextlib.suppress(OSError):
                with open(backing, encoding="utf-8", errors="surrogateescape") as f:
                    path = f.read().rstrip("\n")
                if path.startswith(prefix.rstrip("/") + "/"):
                    devices.append(f"/dev/{name}")
    return devices


def server_pids(directory: str) -> list[int]:
    """FUSE server processes of `rescue mount` for this directory, by their command line."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in argv and os.fsencode(directory) in argv:
            pids.append(int(name))
    return pids


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True)


# -- rescue mount ------------------------------------------------------------------------------

@dataclass
class MountResult:
    directory: str
    disk: str
    pid: int
    # volume, its directory, and the loop device under its kernel mount (None: FUSE serves it)
    mounted: list[tuple[Volume, str, str | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _start_server(image: str, image_format: str, directory: str, allow_other: bool,
                  view: str) -> int:
    """Start the detached FUSE server; return its pid once DIR/disk answers."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(rescue.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", MODULE, image, directory, "--format", image_format,
               "--view", view]
    if allow_other:
        command.append("--allow-other")
    # an encrypted image's passphrase goes through a pipe: never an argument or the env
    passphrase = passphrase_if_encrypted(image, image_format)
    if passphrase is not None:
        command.append("--passphrase-stdin")
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL if passphrase is None else subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=errors, cwd="/", env=env, start_new_session=True)
        if process.stdin is not None and passphrase is not None:
            with process.stdin:
                process.stdin.write(passphrase + b"\n")
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if process.poll() is not None:
                errors.seek(0)
                text = errors.read().decode(errors="replace").strip().splitlines()
                raise UsageError(f"the FUSE server for {directory} failed: "
                                 f"{text[-1] if text else f'exit status {process.returncode}'}")
            if is_our_mount(directory) and os.path.exists(os.path.join(directory, DISK_NAME)):
                missing = _enforce_policy(directory)
                if missing:
                    _run("fusermount3", "-u", directory)
                    process.wait()
                    raise UsageError(f"the raw disk view at {directory} would not take "
                                     f"{','.join(missing)}: not mounted")
                return process.pid
            if time.monotonic() > deadline:
                process.terminate()
                process.wait()
                raise UsageError(f"the FUSE server did not mount {directory} within "
                                 f"{_START_TIMEOUT:g} s")
            time.sleep(0.05)


def _mount_volume(disk: str, volume: Volume, target: str) -> tuple[str | None, str | None]:
    """Loop device at the partition's offset, mounted read-only: (loop, None) or (None, why)."""
    attached = _run("losetup", "--read-only", "--find", "--show", "--offset", str(volume.start),
                    "--sizelimit", str(volume.size), disk)
    if attached.returncode != 0:
        return None, f"losetup failed: {attached.stderr.strip()}"
    loop = attached.stdout.strip()
    problems = []
    ways = _MOUNT_WAYS.get(volume.fstype or "", ((volume.fstype or "auto", ()),))
    for fstype, extra in ways:
        done = _run("mount", "-t", fstype, "-o", kernel_mount_options(extra), loop, target)
        if done.returncode != 0:
            problems.append(done.stderr.strip().splitlines()[0] if done.stderr.strip()
                            else fstype)
            continue
        missing = _enforce_policy(target)
        if not missing:
            return loop, None
        _umount(target)
        problems.append(f"{fstype} would not take {','.join(missing)}")
    _detach(loop)
    return None, "; ".join(problems)


def _enforce_policy(mountpoint: str) -> list[str]:
    """Make the mount at `mountpoint` carry UNTRUSTED; what it still lacks, in order. A mount
    helper may drop options it was given (exfat-fuse drops noexec): a bind remount sets the
    mount point's own flags whatever the file system's helper did."""
    if missing_policy(mountpoint):
        _run("mount", "-o", kernel_mount_options(("remount", "bind")), mountpoint)
    missing = missing_policy(mountpoint)
    return [option for option in UNTRUSTED if option in missing]


def _detach(loop: str) -> None:
    for _ in range(30):
        if _run("losetup", "-d", loop).returncode == 0:
            return
        time.sleep(0.1)


def mount_image(image: str, directory: str, *, partitions: bool = True,
                image_format: str | None = None, allow_other: bool = False,
                kernel: bool = False) -> MountResult:
    """Mount `image` at `directory` (which must exist and be empty): FUSE raw disk and each
    partition's files; with `kernel` (root only) the partitions are mounted by the kernel's
    drivers instead. Only the caller (and root) may enter `directory` unless `allow_other`."""
    if kernel and os.geteuid() != 0:
        raise UsageError("--kernel mounts with the kernel's drivers, which needs root; "
                         "without it the files are served through FUSE")
    directory = os.path.realpath(directory)
    if not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a directory")
    if os.path.ismount(directory) or os.listdir(directory):
        raise UsageError(f"{directory} is not an empty, unmounted directory")
    image_format = detect_format(image, image_format)
    reader = open_reader(image, image_format)
    try:
        volumes = read_layout(reader).volumes
        views, problems = (open_views(reader, volumes, None, mounting_user())
                           if partitions and not kernel else ({}, []))
    finally:
        reader.close()
    view = "kernel" if kernel and partitions else "files" if views else "raw"
    pid = _start_server(os.path.realpath(image), image_format, directory, allow_other, view)
    result = MountResult(directory, os.path.join(directory, DISK_NAME), pid)
    result.warnings += problems
    result.mounted += [(volume, os.path.join(directory, volume_dir(volume)), None)
                       for volume in volumes if volume_dir(volume) in views]
    if kernel and partitions:
        try:
            _mount_with_kernel(result, volumes)
        except BaseException:
            unmount_image(directory)
            raise
    return result


def _mount_with_kernel(result: MountResult, volumes: Sequence[Volume]) -> None:
    for volume in volumes:
        if volume.fstype is None:
            continue
        target = os.path.join(result.directory, volume_dir(volume))
        loop, problem = _mount_volume(result.disk, volume, target)
        if loop is None:
            result.warnings.append(f"{volume_dir(volume)} ({volume.fstype}) not mounted: "
                                   f"{problem}")
        else:
            result.mounted.append((volume, target, loop))


# -- rescue umount -----------------------------------------------------------------------------

@dataclass
class UnmountResult:
    unmounted: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)


def _umount(path: str) -> None:
    """Unmount, retrying while a closing reader keeps it busy; lazily as the last resort."""
    for _ in range(30):
        if _run("umount", path).returncode == 0:
            return
        if not any(entry.mountpoint == path for entry in mounts()):
            return
        time.sleep(0.1)
    if _run("umount", "-l", path).returncode != 0:
        raise UsageError(f"cannot unmount {path}")


def _stop(pid: int) -> None:
    """The server ends by itself once unmounted; SIGTERM only if it lingers."""
    deadline = time.monotonic() + _STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child when run in-process
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def unmount_image(directory: str) -> UnmountResult:
    """Undo `mount_image`: partition mounts, their loop devices, the FUSE mount, its server."""
    directory = os.path.realpath(directory)
    result = UnmountResult()
    for entry in mounts_below(directory):
        _umount(entry.mountpoint)
        result.unmounted.append(entry.mountpoint)
    for loop in loops_backed_by(directory):
        _detach(loop)
        result.detached.append(loop)
    pids = server_pids(directory)
    if is_our_mount(directory):
        if _run("fusermount3", "-u", directory).returncode != 0:
            _umount(directory)
        result.unmounted.append(directory)
    for pid in pids:
        _stop(pid)
        result.stopped.append(pid)
    if not (result.unmounted or result.detached or result.stopped):
        raise UsageError(f"nothing of rescue is mounted at {directory}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="FUSE server of `rescue mount` (foreground)")
    parser.add_argument("image")
    parser.add_argument("mountpoint")
    parser.add_argument("--format", choices=(*READ_FORMATS, ARCHIVE))
    parser.add_argument("--allow-other", action="store_true")
    parser.add_argument("--view", choices=VIEWS, default="raw")
    parser.add_argument("--passphrase-stdin", action="store_true")
    args = parser.parse_args(argv)
    if args.passphrase_stdin:
        use_passphrase(sys.stdin.buffer.readline().rstrip(b"\r\n"))
    try:
        serve(args.image, args.mountpoint, args.format, allow_other=args.allow_other,
              view=args.view)
    except RescueError as error:
        print(f"rescue: {error}", file=sys.stderr)
        return int(error.exit_code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
