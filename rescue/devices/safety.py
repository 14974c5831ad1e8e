"""The one write-safety policy: every path that writes to a disk or an image file asks here first.

A verdict lists every reason against the write. `--force` may override the reasons a careful
user can judge (a mounted partition they know is stale, an md member they retired), never the
ones that destroy what is running or what is being read: the running system, the live medium,
active swap, a read-only device, or the very sectors a job is reading.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from rescue.devices import locks
from rescue.devices.discover import (
    SECTOR,
    SYS_CLASS_BLOCK,
    BlockTree,
    Disk,
    SystemState,
    find,
    read_attr,
    read_int,
)
from rescue.errors import RefusedError
from rescue.io.blockdev import geometry
from rescue.units import human_size

BLKROGET = 0x125E  # _IO(0x12, 94): read-only flag of a block device
FAT_LARGEST_FILE = 2**32 - 1  # FAT32 (and FAT16) keep a file's size in 32 bits
# the largest file a file system holds, by its type in mountinfo (FAT through FUSE too)
LARGEST_FILE = {"vfat": FAT_LARGEST_FILE, "msdos": FAT_LARGEST_FILE,
                "fuse.fusefat": FAT_LARGEST_FILE}


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    overridable: bool


@dataclass(frozen=True)
class Verdict:
    """Everything that speaks against writing to `target`.

    `warnings` never block: they tell the user something worth knowing (too little free space
    for the worst case of a sparse or compressed image) that may well turn out fine.
    """

    target: str
    reasons: tuple[Reason, ...]
    warnings: tuple[Reason, ...] = ()

    def allowed(self, force: bool = False) -> bool:
        return all(reason.overridable for reason in self.reasons) if force else not self.reasons

    def blocking(self, force: bool = False) -> tuple[Reason, ...]:
        """The reasons that still stand with or without --force."""
        return tuple(reason for reason in self.reasons if not (force and reason.overridable))

    def refusal(self, force: bool = False) -> str | None:
        """One line naming every blocking reason, or None when the write is allowed."""
        blocking = self.blocking(force)
        if not blocking:
            return None
        hint = ("use --force to override" if all(reason.overridable for reason in blocking)
                else "--force cannot override this")
        return (f"refusing to write to {self.target}: "
                f"{'; '.join(reason.message for reason in blocking)} ({hint})")


@contextlib.contextmanager
def protect(path: str) -> Iterator[None]:
    """Mark `path` as being read by a running job: every rescue process then refuses to write
    to it; a job already writing it makes this one refused, naming that job."""
    with locks.Locks() as held:
        held.read(path)
        yield


def check_write_target(path: str, *, needed_size: int | None = None,
                       protected: Iterable[str] = (), compressed: bool = False) -> Verdict:
    """Judge a write to `path` (a block device, or an image file that may not exist yet).
    `protected` are the sources of the job asking; what other jobs (in any process) read or
    write comes from their locks. `compressed`: an image file may stay well below
    `needed_size`, so a file-size limit under it may be overridden."""
    state = SystemState.read()
    sources = list(protected)
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        return Verdict(path, (Reason("not-writable", f"{path}: {error.strerror}", False),))
    if info is not None and stat.S_ISBLK(info.st_mode):
        return _BlockCheck(path, info, state, needed_size, sources).verdict()
    if info is None and path.startswith("/dev/"):
        return Verdict(path, (Reason("missing", f"{path} does not exist", False),))
    if info is None or stat.S_ISREG(info.st_mode):
        return _FileCheck(path, info, state, needed_size, sources, compressed).verdict()
    return Verdict(path, (Reason("not-writable",
                                 f"{path} is neither a block device nor a regular file", False),))


def require_writable(path: str, *, needed_size: int | None = None,
                     protected: Iterable[str] = (), force: bool = False,
                     compressed: bool = False) -> None:
    """Raise RefusedError with one line naming every blocking reason."""
    refusal = check_write_target(path, needed_size=needed_size, protected=protected,
                                 compressed=compressed).refusal(force)
    if refusal is not None:
        raise RefusedError(refusal)


@dataclass(frozen=True)
class DiskTarget:
    """A device one job will overwrite from its first sector, as the policy judged it.
    `sector` is None when it is no block device or its geometry cannot be read (its verdict
    then says so) and `size` is 0."""

    path: str
    name: str  # kernel name, e.g. sdb
    serial: str | None
    model: str | None
    size: int
    sector: int | None
    verdict: Verdict


def check_disk_targets(paths: Iterable[str], *, protected: Iterable[str] = ()
                       ) -> tuple[DiskTarget, ...]:
    """Judge each of `paths` as a whole-device target of one job: the write policy, and
    besides it that each is a block device whose geometry can be read and that no two of them
    share sectors."""
    tree = BlockTree.read()
    sources = list(protected)
    seen: dict[str, str] = {}  # target path -> kernel name, of the targets judged so far
    return tuple(_disk_target(path, tree, seen, sources) for path in paths)


def _disk_target(path: str, tree: BlockTree, seen: dict[str, str], sources: list[str]
                 ) -> DiskTarget:
    verdict = check_write_target(path, protected=sources)
    reasons = list(verdict.reasons)
    size, sector, name, serial, model = 0, None, os.path.basename(path), None, None
    try:
        is_block = stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        is_block = False
    if not is_block and not reasons:
        reasons.append(Reason("not-a-disk", f"{path} is not a block device", False))
    if is_block:
        kernel_name = tree.name_of_path(os.path.realpath(path))
        name = kernel_name or name
        for other_path, other in seen.items():
            if kernel_name and (other == kernel_name or tree.overlaps(kernel_name, other)):
                reasons.append(Reason("duplicate", f"{path} overlaps the target {other_path}",
                                      False))
        if kernel_name:
            seen[path] = kernel_name
        item = find(path)
        if isinstance(item, Disk):
            serial, model = item.serial, item.model
        try:
            size, sector = geometry(path)
        except OSError as exc:
            reasons.append(Reason("not-writable", f"{path}: {exc.strerror}", False))
    return DiskTarget(path, name, serial, model, size, sector,
                      replace(verdict, reasons=tuple(reasons)))


def source_warnings(path: str, claimed: bool) -> tuple[str, ...]:
    """Why an image of the device `path` may come out inconsistent: a file system on its
    sectors mounted read-write keeps changing while it is read. `claimed`: the kernel refused
    an exclusive open, and when no mount or job here explains it, something unseen uses it."""
    state = SystemState.read()
    name = state.tree.name_of_path(path)
    if name is None:
        return ()
    writable: dict[str, list[str]] = {}
    mounted = False
    for mount in state.mounts:
        device = state.tree.mount_device(mount)
        if device is not None and state.tree.overlaps(name, device):
            mounted = True
            if not mount.read_only:
                writable.setdefault(device, []).append(mount.mountpoint)
    warnings = [f"{_dev(device)} is mounted read-write on {', '.join(points)}: the image may "
                "be inconsistent (unmount it, or remount it read-only, first)"
                for device, points in sorted(writable.items())]
    if claimed and not mounted and not any(use.overlaps for use in locks.users(path)):
        warnings.append(f"{path} is in use by the kernel (mounted elsewhere, or claimed by "
                        "md, LVM or another program): if it is written meanwhile, the image "
                        "may be inconsistent")
    return tuple(warnings)


def _dev(name: str) -> str:
    return f"/dev/{name}"


def _holder_kind(name: str) -> str:
    if name.startswith("md"):
        return "md RAID"
    uuid = read_attr(f"{SYS_CLASS_BLOCK}/{name}/dm/uuid") or ""
    return ("LVM" if uuid.startswith("LVM-") else "dm-crypt" if uuid.startswith("CRYPT-")
            else "device-mapper")


class _BlockCheck:
    """The reasons against writing to one block device."""

    def __init__(self, path: str, info: os.stat_result, state: SystemState,
                 needed_size: int | None, sources: list[str]) -> None:
        self.path, self.info, self.state = path, info, state
        self.tree = state.tree
        self.needed_size, self.sources = needed_size, sources
        self.reasons: list[Reason] = []

    def verdict(self) -> Verdict:
        name = self.tree.name_of(self.info.st_rdev)
        if name is None:
            return Verdict(self.path, (Reason("missing", f"{self.path} is not a block device "
                                              "the kernel knows (stale node?)", False),))
        explained = self._running_system(name)
        explained |= self._mounted(name, explained)
        explained |= self._holders(name)
        self._read_only(name)
        self._size(name)
        self._sources(name)
        other_jobs = _other_jobs(self.path, self.path, self.reasons)
        if not explained and not other_jobs:
            self._busy()
        return Verdict(self.path, tuple(self.reasons))

    def _add(self, code: str, message: str, overridable: bool) -> None:
        self.reasons.append(Reason(code, message, overridable))

    def _running_system(self, name: str) -> set[str]:
        explained = set()
        for device, roles in sorted(self.state.system_devices().items()):
            if name not in self.state.affected_by(device):
                continue
            explained.add(device)
            if roles == {"swap"}:
                self._add("swap", f"{_dev(device)} is active swap", False)
            else:
                self._add("running-system", f"{_dev(device)} holds the running system "
                          f"({', '.join(sorted(roles))})", False)
        return explained

    def _mounted(self, name: str, explained: set[str]) -> set[str]:
        sharing = self.tree.descendants(name) | self.tree.ancestors(name)
        mounted = set()
        for device, mountpoints in sorted(self.state.mountpoints().items()):
            if device in sharing and device not in explained:
                mounted.add(device)
                self._add("mounted", f"{_dev(device)} is mounted on {', '.join(mountpoints)}",
                          True)
        return mounted

    def _holders(self, name: str) -> set[str]:
        held = set()
        for device in [name, *self.tree.partitions(name)]:
            for holder in self.tree.holders.get(device, ()):
                held.add(device)
                self._add("holder", f"{_dev(device)} is in use by {_dev(holder)} "
                          f"({_holder_kind(holder)})", True)
        return held

    def _read_only(self, name: str) -> None:
        flag = read_int(f"{SYS_CLASS_BLOCK}/{name}/ro")
        if flag is None:
            flag = _ioctl_read_only(self.path)
        if flag:
            self._add("read-only", f"{self.path} is read-only", False)

    def _size(self, name: str) -> None:
        sectors = read_int(f"{SYS_CLASS_BLOCK}/{name}/size")
        if sectors == 0:
            self._add("missing", f"{self.path} has no medium (size 0)", False)
        if self.needed_size is None or not sectors:
            return
        if sectors * SECTOR < self.needed_size:
            self._add("too-small", f"{self.path} holds {human_size(sectors * SECTOR)}, "
                      f"{human_size(self.needed_size)} needed", False)

    def _sources(self, name: str) -> None:
        for source in self.sources:
            source_name = self.tree.name_of_path(source)
            if source_name is not None:
                if self.tree.overlaps(name, source_name):
                    self._add("is-source", f"{self.path} shares sectors with {source}, "
                              "which is being read", False)
                elif self.tree.disks_of(name) & self.tree.disks_of(source_name):
                    self._add("same-disk", f"{self.path} is on the same disk as {source}, "
                              "which is being read", True)
                continue
            holder = self.tree.device_of_file(source)
            if holder is not None and holder in self.tree.descendants(name):
                self._add("is-source", f"{source}, which is being read, lives on {self.path}",
                          False)

    def _busy(self) -> None:
        """The kernel's own view: an exclusive open fails while anything claims the device,
        including mounts in other namespaces that our mountinfo cannot see."""
        try:
            os.close(os.open(self.path, os.O_RDONLY | os.O_EXCL))
        except OSError as error:
            if error.errno == errno.EBUSY:
                self._add("busy", f"{self.path} is in use by the kernel (mounted or claimed "
                          "elsewhere)", True)


def _other_jobs(used: str, target: str, reasons: list[Reason]) -> bool:
    """Add a reason for each rescue job, in any process, using `used` (the target, or the
    device an image file lands on) or its disk; True if there is any."""
    found = locks.users(used)
    for use in found:
        if use.name == target:
            what = f"{target} is"
        elif use.name == used:
            what = f"{target} is on {used}, which is"
        else:
            what = f"{target} shares sectors with {use.name}, which is"
        if use.overlaps:
            reasons.append(Reason("job-source", f"{what} {use.holder.describe()}", False))
        else:
            reasons.append(Reason("same-disk", f"{target} is on the same disk as {use.name}, "
                                  f"which is {use.holder.describe()}", True))
    return bool(found)


def _ioctl_read_only(path: str) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return struct.unpack("i", fcntl.ioctl(descriptor, BLKROGET, b"\0" * 4))[0] != 0
    except OSError:
        return False
    finally:
        os.close(descriptor)


class _FileCheck:
    """The reasons against writing to an image file (existing or about to be created)."""

    def __init__(self, path: str, info: os.stat_result | None, state: SystemState,
                 needed_size: int | None, sources: list[str], compressed: bool) -> None:
        self.path, self.info, self.state, self.tree = path, info, state, state.tree
        self.needed_size, self.sources, self.compressed = needed_size, sources, compressed
        self.directory = os.path.dirname(os.path.abspath(path))
        self.reasons: list[Reason] = []
        self.warnings: list[Reason] = []

    def verdict(self) -> Verdict:
        if not os.path.isdir(self.directory):
            return Verdict(self.path, (Reason("missing", f"directory {self.directory} "
                                              "does not exist", False),))
        self._writable()
        self._sources()
        _other_jobs(self.path, self.path, self.reasons)
        container = self.tree.device_of_file(self.directory)
        if container is not None:
            _other_jobs(_dev(container), self.path, self.reasons)
        self._free_space()
        self._largest_file()
        return Verdict(self.path, tuple(self.reasons), tuple(self.warnings))

    def _writable(self) -> None:
        try:
            read_only = bool(os.statvfs(self.directory).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            self.reasons.append(Reason("read-only", f"{self.directory} is on a read-only "
                                       "file system", False))
        elif not os.access(self.path if self.info else self.directory, os.W_OK):
            self.reasons.append(Reason("not-writable", f"{self.path} is not writable", False))

    def _sources(self) -> None:
        container = self.tree.device_of_file(self.directory)
        for source in self.sources:
            if self.info is not None and _same_file(self.path, source):
                self.reasons.append(Reason("is-source", f"{self.path} is {source}, which is being "
                                           "read", False))
                continue
            source_name = self.tree.name_of_path(source)
            if source_name is None or container is None:
                continue
            if container in self.tree.descendants(source_name):
                self.reasons.append(Reason("is-source", f"{self.path} is on {_dev(container)}, "
                                           "part of "
                                           f"{source}, which is being read", False))
            elif self.tree.disks_of(container) & self.tree.disks_of(source_name):
                self.reasons.append(Reason("same-disk", f"{self.path} is on the same disk as "
                                           f"{source}, which is being read", True))

    def _free_space(self) -> None:
        """Only a warning: sparse and compressed images rarely take their full size, and a
        destination that fills up stops the job with its map saved, ready to resume."""
        if self.needed_size is None:
            return
        try:
            vfs = os.statvfs(self.directory)
        except OSError:
            return
        available = vfs.f_bavail * vfs.f_frsize + (self.info.st_blocks * 512 if self.info else 0)
        if available < self.needed_size:
            self.warnings.append(Reason("free-space", f"{self.directory} has "
                                        f"{human_size(available)} free, the image may need up to "
                                        f"{human_size(self.needed_size)}", True))


    def _largest_file(self) -> None:
        reason = largest_file_reason(self.state, self.directory, self.needed_size,
                                     self.compressed)
        if reason is not None:
            self.reasons.append(reason)


def require_file_fits(path: str, size: int, *, compressed: bool, force: bool) -> None:
    """Refuse an image file of up to `size` bytes where its file system holds less: for a job
    that learns the size only after the rest of the policy passed (a conversion)."""
    directory = os.path.dirname(os.path.abspath(path))
    reason = largest_file_reason(SystemState.read(), directory, size, compressed)
    if reason is not None:
        refusal = Verdict(path, (reason,)).refusal(force)
        if refusal is not None:
            raise RefusedError(refusal)


def largest_file_reason(state: SystemState, directory: str, needed_size: int | None,
                        compressed: bool) -> Reason | None:
    """Refused before the job starts, not failed at 4 GiB in the middle of a rescue: a
    raw image takes the source's size; a compressed one may, so --force takes the risk."""
    mount = state.mount_of(directory)
    fstype = mount.fstype if mount is not None else ""
    largest = LARGEST_FILE.get(fstype)
    if largest is None or needed_size is None or needed_size <= largest:
        return None
    limit = human_size(largest + 1)
    image, way_out = (("a compressed image of this source may reach",
                       f"or take the risk that it stays under {limit}") if compressed
                      else ("a raw image of this source takes", "or compressed (.qcow2, "
                            f".img.zst) with --force if it will stay under {limit}"))
    message = (f"{directory} is on {fstype}, which holds no file of {limit} or more, "
               f"and {image} {human_size(needed_size)}: write it to another file "
               f"system (ext4, exFAT, NTFS), {way_out}")
    return Reason("file-size-limit", message, compressed)


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
