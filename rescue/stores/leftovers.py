"""Share mounts that would outlive a rescue killed with SIGKILL, which runs no cleanup.

Each share's private directory holds a lock file its owner keeps locked while it lives (the
kernel drops the lock at death, `kill -9` included), and a guard process waits on a pipe
only the owner writes to: when the owner dies the pipe closes and the guard unmounts at once.
Were the guard killed too, the next share mount sweeps what a dead owner left. Only our own
directories are touched: our prefix, our user, an owner lock that nobody holds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

PREFIX = "rescue-share-"
OWNER = "owner"  # the lock file in each private directory
MOUNTPOINT = "mnt"  # the mount point in each private directory
# The guard: at EOF on stdin (its owner gone, or done) unmount, then remove the directory only
# when the mount point is an empty folder again (rmdir refuses a mounted or a full one).
GUARD = ('read -r _; work=$1; shift; "$@" >/dev/null 2>&1; '
         'rmdir "$work/mnt" 2>/dev/null && rm -rf "$work"')


def runtime_base() -> str | None:
    """Where private directories go: the runtime directory (RAM on most systems), so a
    password a mount helper must read from a file stays off the disks; None: the temporary
    folder. Not under /dev, where every path is taken for a device."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or "/run"
    return runtime if os.path.isdir(runtime) and os.access(runtime, os.W_OK) else None


def unmount(path: str) -> None:
    """Let go of whatever is mounted at `path` (nothing: nothing happens)."""
    subprocess.run(unmount_argv(path), capture_output=True, check=False)


def unmount_argv(path: str) -> list[str]:
    """How to let go of the mount at `path` whatever its server's state: lazily, since a dead
    FUSE helper or a lost NFS server can flush nothing."""
    if _mount_type(path).startswith("fuse"):
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
        return [tool, "-u", "-z", path]
    return ["umount", "-l", path]


def _mount_type(path: str) -> str:
    """The file-system type mounted at `path`, "" when nothing is."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 4 and fields[4] == path and " - " in line:
                return line.split(" - ", 1)[1].split()[0]
    return ""


class Owned:
    """A fresh private directory (mode 0700) held by this process until `release()`."""

    def __init__(self) -> None:
        base = runtime_base()
        sweep(base or tempfile.gettempdir())
        self.work = tempfile.mkdtemp(prefix=PREFIX, dir=base)
        self._lock = os.open(os.path.join(self.work, OWNER), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._guard: subprocess.Popen[bytes] | None = None

    @property
    def mountpoint(self) -> str:
        return os.path.join(self.work, MOUNTPOINT)

    def guard(self) -> None:
        """Once mounted: from now on the share is unmounted even if this process is killed.
        The guard is in a session of its own, so a ^C at the terminal leaves it to us."""
        if self._guard is None:
            self._guard = subprocess.Popen(
                ["sh", "-c", GUARD, "rescue-share-guard", self.work,
                 *unmount_argv(self.mountpoint)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)

    def release(self) -> None:
        """After our own unmount and removal: the guard finds nothing left to do. Releasing
        twice does nothing more."""
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait()
            self._guard = None
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def sweep(base: str) -> None:
    """Unmount and remove every private directory in `base` whose owner died."""
    for work in _ours(base):
        try:
            lock = os.open(os.path.join(work, OWNER), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # none: an older rescue's, or one being made right now
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner lives
            os.close(lock)
            continue
        try:
            mountpoint = os.path.join(work, MOUNTPOINT)
            unmount(mountpoint)
            if not _mount_type(mountpoint):
                shutil.rmtree(work, ignore_errors=True)
        finally:
            os.close(lock)


def _ours(base: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False) \
                and entry.stat(follow_symlinks=False).st_uid == os.geteuid():
            yield entry.path
