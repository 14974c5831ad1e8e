"""What block devices exist, how they stack, and which of them carry the running system.

Every fact comes from the kernel (sysfs, /proc/self/mountinfo, /proc/swaps) so that discovery
works on a live system without a udev database; udev's ID_* properties, when present, only add
model, serial and file-system names, and our own signature probe fills the gap when they are not.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyudev

from rescue.devices import probe
from rescue.errors import SourceError
from rescue.io.reader import Unreadable

SYS_CLASS_BLOCK = "/sys/class/block"
MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
SECTOR = 512  # sysfs `size` and `start` always count 512-byte units

# Where live systems mount the medium they booted from (Debian live, Ubuntu casper, dracut,
# Arch ISO); writing there pulls the ground from under the running system.
LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium", "/cdrom",
                      "/run/initramfs/live", "/run/archiso/bootmnt")
BOOT_MOUNTS = ("/boot", "/boot/efi", "/efi")


def read_attr(path: str) -> str | None:
    """One sysfs/proc value, or None when it is missing or unreadable (devices vanish)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read_attr(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _unescape(text: str) -> str:
    """mountinfo and /proc/swaps write space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)


@dataclass(frozen=True)
class Mount:
    major: int
    minor: int
    mountpoint: str
    fstype: str
    source: str
    read_only: bool


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    """Parse mountinfo; lines that do not parse are skipped rather than fatal."""
    mounts = []
    text = read_attr(path) or ""
    for line in text.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-", 6)
            major, minor = (int(part) for part in fields[2].split(":"))
            mounts.append(Mount(major=major, minor=minor, mountpoint=_unescape(fields[4]),
                                fstype=fields[separator + 1],
                                source=_unescape(fields[separator + 2]),
                                read_only="ro" in fields[5].split(",")))
        except (ValueError, IndexError):
            continue
    return mounts


def read_swaps(path: str = SWAPS) -> list[str]:
    """Active swap areas: device paths or swap files."""
    lines = (read_attr(path) or "").splitlines()[1:]
    return [_unescape(line.split()[0]) for line in lines if line.split()]


@dataclass
class BlockTree:
    """A snapshot of how the kernel's block devices stack: partitions on disks, holders
    (md, LVM, dm-crypt) on their slaves, loop devices on the file system of their backing file."""

    names: dict[tuple[int, int], str] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slaves: dict[str, tuple[str, ...]] = field(default_factory=dict)
    backing_file: dict[str, str] = field(default_factory=dict)
    backing_device: dict[str, str] = field(default_factory=dict)
    anonymous: dict[tuple[int, int], str] = field(default_factory=dict)

    @classmethod
    def read(cls, root: str = SYS_CLASS_BLOCK, mounts: Iterable[Mount] = ()) -> BlockTree:
        """Read sysfs; `mounts` teach it which block device stands behind the anonymous device
        numbers that btrfs and similar file systems report."""
        tree = cls()
        for name in _listdir(root):
            base = f"{root}/{name}"
            dev = read_attr(f"{base}/dev")
            if dev is None:
                continue  # vanished while we looked
            try:
                major, minor = (int(part) for part in dev.split(":"))
            except ValueError:
                continue
            tree.names[(major, minor)] = name
            if os.path.exists(f"{base}/partition"):
                tree.parent[name] = os.path.basename(os.path.dirname(os.path.realpath(base)))
            tree.holders[name] = tuple(_listdir(f"{base}/holders"))
            tree.slaves[name] = tuple(_listdir(f"{base}/slaves"))
            backing = read_attr(f"{base}/loop/backing_file")
            if backing:
                tree.backing_file[name] = backing
        for mount in mounts:
            if mount.major == 0 and mount.source.startswith("/dev/"):
                behind = tree.name_of_path(mount.source)
                if behind:
                    tree.anonymous[(mount.major, mount.minor)] = behind
        for name, backing in tree.backing_file.items():
            holder = tree.device_of_file(backing.removesuffix(" (deleted)"))
            if holder:
                tree.backing_device[name] = holder
        return tree

    def name_of(self, rdev: int) -> str | None:
        key = (os.major(rdev), os.minor(rdev))
        return self.names.get(key) or self.anonymous.get(key)

    def name_of_path(self, path: str) -> str | None:
        """Kernel name of a block device node, or None if it is not one (or is gone)."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        return self.name_of(info.st_rdev) if stat.S_ISBLK(info.st_mode) else None

    def device_of_file(self, path: str) -> str | None:
        """Kernel name of the block device whose file system holds `path`."""
        try:
            return self.name_of(os.stat(path).st_dev)
        except OSError:
            return None

    def mount_device(self, mount: Mount) -> str | None:
        """The block device behind a mount; btrfs and friends report an anonymous 0:N device,
        so fall back to the source path."""
        key = (mount.major, mount.minor)
        return self.names.get(key) or self.anonymous.get(key)

    def partitions(self, name: str) -> list[str]:
        return sorted((child for child, disk in self.parent.items() if disk == name),
                      key=_natural_key)

    def descendants(self, name: str) -> set[str]:
        """`name` and everything built on its sectors: partitions and holders, recursively."""
        found: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in found:
                found.add(current)
                pending.extend(self.partitions(current))
                pending.extend(self.holders.get(current, ()))
        return found

    def ancestors(self, name: str, *, through_loops: bool = False) -> set[str]:
        """`name` and everything it is built on: its disk, its slaves, recursively; with
        `through_loops`, also the device holding a loop device's backing file."""
        found: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current in found:
                continue
            found.add(current)
            if current in self.parent:
                pending.append(self.parent[current])
            pending.extend(self.slaves.get(current, ()))
            if through_loops and current in self.backing_device:
                pending.append(self.backing_device[current])
        return found

    def overlaps(self, first: str, second: str) -> bool:
        """True when writing one changes sectors of the other."""
        return second in self.descendants(first) or first in self.descendants(second)

    def disks_of(self, name: str) -> set[str]:
        """The whole disks whose sectors `name` uses."""
        return {item for item in self.ancestors(name)
                if item not in self.parent and not self.slaves.get(item)}


def _natural_key(name: str) -> tuple[str, int]:
    match = re.match(r"(.*?)(\d+)$", name)
    return (match[1], int(match[2])) if match else (name, -1)


@dataclass(frozen=True)
class SystemState:
    """Mounts, swap and the devices the running system depends on, read once."""

    tree: BlockTree
    mounts: tuple[Mount, ...]
    swaps: tuple[str, ...]

    @classmethod
    def read(cls) -> SystemState:
        mounts = tuple(read_mounts())
        return cls(tree=BlockTree.read(mounts=mounts), mounts=mounts, swaps=tuple(read_swaps()))

    def mountpoints(self) -> dict[str, list[str]]:
        """Kernel name → its mount points."""
        result: dict[str, list[str]] = {}
        for mount in self.mounts:
            name = self.tree.mount_device(mount)
            if name:
                result.setdefault(name, []).append(mount.mountpoint)
        return result

    def swap_devices(self) -> set[str]:
        """Devices that are active swap, or hold an active swap file."""
        found = set()
        for path in self.swaps:
            name = self.tree.name_of_path(path) or self.tree.device_of_file(path)
            if name:
                found.add(name)
        return found

    def mount_of(self, path: str) -> Mount | None:
        """The mount whose file system holds `path`: of the mounts of its device, the
        deepest one above it (a bind mount of the same file system has the same type)."""
        try:
            device = os.stat(path).st_dev
        except OSError:
            return None
        real = os.path.realpath(path)
        above = [mount for mount in self.mounts
                 if (mount.major, mount.minor) == (os.major(device), os.minor(device))
                 and (real + "/").startswith(mount.mountpoint.rstrip("/") + "/")]
        return max(above, key=lambda mount: len(mount.mountpoint), default=None)

    def system_devices(self) -> dict[str, set[str]]:
        """Kernel name → what of the running system it carries directly: "root",
        "live-medium", "boot" or "swap"."""
        direct: dict[str, set[str]] = {}
        for mount in self.mounts:
            role = ("root" if mount.mountpoint == "/" else
                    "live-medium" if mount.mountpoint in LIVE_MEDIUM_MOUNTS else
                    "boot" if mount.mountpoint in BOOT_MOUNTS else None)
            name = self.tree.mount_device(mount) if role else None
            if role and name:
                direct.setdefault(name, set()).add(role)
        for name in self.swap_devices():
            direct.setdefault(name, set()).add("swap")
        return direct

    def affected_by(self, name: str) -> set[str]:
        """Devices whose loss would take `name` with it, and those built on it."""
        return self.tree.ancestors(name, through_loops=True) | self.tree.descendants(name)

    def system_roles(self) -> dict[str, set[str]]:
        """Kernel name → the running system's roles it carries, spread to every device that
        shares sectors with such a device or lies beneath it."""
        spread: dict[str, set[str]] = {}
        for name, roles in self.system_devices().items():
            for item in self.affected_by(name):
                spread.setdefault(item, set()).update(roles)
        return spread


@dataclass(frozen=True)
class Partition:
    path: str
    name: str
    disk: str  # path of the disk it lies on
    number: int
    start: int  # bytes from the start of the disk
    size: int  # bytes
    fstype: str | None
    label: str | None
    uuid: str | None
    read_only: bool
    mountpoints: tuple[str, ...]
    holders: tuple[str, ...]  # md, LVM, dm-crypt devices built on it
    system_roles: tuple[str, ...]  # "root", "live-medium", "boot", "swap"


@dataclass(frozen=True)
class Disk:
    path: str
    name: str
    size: int  # bytes
    logical_sector_size: int
    physical_sector_size: int
    model: str | None
    vendor: str | None
    serial: str | None
    transport: str | None  # usb, sata, nvme, virtio, scsi, mmc, loop, md, dm, ...
    rotational: bool | None
    removable: bool | None
    read_only: bool
    table_type: str | None  # "gpt" or "dos"
    fstype: str | None  # a file system on the whole disk (an ISO, a superfloppy)
    label: str | None
    uuid: str | None
    backing_file: str | None  # for loop devices
    mountpoints: tuple[str, ...]
    holders: tuple[str, ...]
    system_roles: tuple[str, ...]  # non-empty: the running system lives on this disk
    partitions: tuple[Partition, ...] = ()

    @property
    def running_system(self) -> bool:
        return bool(self.system_roles)


@dataclass(frozen=True)
class _Signatures:
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    table_type: str | None = None


# Transport by what the device's sysfs path passes through; the order matters (a USB-SATA
# bridge shows both, and USB is what the user plugged in).
_TRANSPORT_MARKERS = (("/usb", "usb"), ("/nvme", "nvme"), ("/ata", "sata"), ("/mmc", "mmc"),
                      ("/host", "scsi"), ("/virtio", "virtio"))
_TRANSPORT_PREFIXES = (("loop", "loop"), ("dm-", "dm"), ("md", "md"), ("nbd", "nbd"),
                       ("zram", "zram"), ("ram", "ram"))


def _transport(name: str, sys_path: str) -> str | None:
    for prefix, transport in _TRANSPORT_PREFIXES:
        if name.startswith(prefix):
            return transport
    for marker, transport in _TRANSPORT_MARKERS:
        if marker in sys_path:
            return transport
    return None


def _udev_text(properties: dict[str, str], key: str) -> str | None:
    """udev's *_ENC values escape unsafe bytes as \\xNN; the plain ones replace spaces."""
    encoded = properties.get(f"{key}_ENC")
    if encoded is not None:
        value = re.sub(r"\\x([0-9a-fA-F]{2})", lambda match: chr(int(match[1], 16)), encoded)
        return value.strip() or None
    return properties.get(key) or None


def _vpd_serial(sys_path: str) -> str | None:
    """SCSI/SATA serial from VPD page 0x80 (4-byte header, then the serial)."""
    try:
        with open(f"{sys_path}/device/vpd_pg80", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return raw[4:].decode("ascii", errors="replace").strip("\0 ") or None


def _flag(path: str) -> bool | None:
    value = read_int(path)
    return None if value is None else value != 0


class _Discovery:
    """One pass over the block devices, with every kernel table read once."""

    def __init__(self, state: SystemState, probe_signatures: bool) -> None:
        self.state = state
        self.probe_signatures = probe_signatures
        self.mountpoints = state.mountpoints()
        self.roles = state.system_roles()

    def signatures(self, device: pyudev.Device) -> _Signatures:
        """udev's answer when it has processed the device, else our own probe."""
        properties = dict(device.properties)
        if device.is_initialized:
            return _Signatures(properties.get("ID_FS_TYPE") or None,
                               _udev_text(properties, "ID_FS_LABEL"),
                               properties.get("ID_FS_UUID") or None,
                               properties.get("ID_PART_TABLE_TYPE") or None)
        if not self.probe_signatures or device.device_node is None:
            return _Signatures()
        try:
            found = probe.probe_path(device.device_node)
        except (SourceError, Unreadable):
            return _Signatures()  # vanished, no medium, or unreadable: nothing to report
        filesystem = found.filesystem
        if filesystem is None:
            return _Signatures(table_type=found.table)
        return _Signatures(filesystem.fstype, filesystem.label, filesystem.uuid, found.table)

    def common(self, name: str) -> dict[str, object]:
        return {
            "mountpoints": tuple(self.mountpoints.get(name, ())),
            "holders": tuple(f"/dev/{holder}" for holder in self.state.tree.holders.get(name, ())),
            "system_roles": tuple(sorted(self.roles.get(name, ()))),
        }

    def disk(self, device: pyudev.Device, partitions: list[pyudev.Device]) -> Disk | None:
        name, base = device.sys_name, device.sys_path
        sectors = read_int(f"{base}/size")
        if not sectors or device.device_node is None:
            return None  # gone, or an empty loop/ram device: nothing to read or write
        logical = read_int(f"{base}/queue/logical_block_size") or SECTOR
        properties = dict(device.properties)
        found = self.signatures(device)
        return Disk(
            path=device.device_node, name=name, size=sectors * SECTOR,
            logical_sector_size=logical,
            physical_sector_size=read_int(f"{base}/queue/physical_block_size") or logical,
            model=_udev_text(properties, "ID_MODEL") or read_attr(f"{base}/device/model"),
            vendor=_udev_text(properties, "ID_VENDOR") or read_attr(f"{base}/device/vendor"),
            serial=(properties.get("ID_SERIAL_SHORT") or read_attr(f"{base}/serial")
                    or read_attr(f"{base}/device/serial") or _vpd_serial(base)),
            transport=_transport(name, base),
            rotational=_flag(f"{base}/queue/rotational"),
            removable=_flag(f"{base}/removable"),
            read_only=bool(_flag(f"{base}/ro")),
            table_type=found.table_type, fstype=found.fstype, label=found.label,
            uuid=found.uuid, backing_file=self.state.tree.backing_file.get(name),
            partitions=tuple(part for part in (self.partition(item, device.device_node)
                                               for item in partitions) if part),
            **self.common(name),  # type: ignore[arg-type]
        )

    def partition(self, device: pyudev.Device, disk_path: str) -> Partition | None:
        base = device.sys_path
        number, start, sectors = (read_int(f"{base}/{attribute}")
                                  for attribute in ("partition", "start", "size"))
        if number is None or start is None or sectors is None or device.device_node is None:
            return None  # vanished while we looked
        found = self.signatures(device)
        return Partition(
            path=device.device_node, name=device.sys_name, disk=disk_path, number=number,
            start=start * SECTOR, size=sectors * SECTOR, fstype=found.fstype,
            label=found.label, uuid=found.uuid, read_only=bool(_flag(f"{base}/ro")),
            **self.common(device.sys_name),  # type: ignore[arg-type]
        )


def list_block_devices() -> list[pyudev.Device]:
    return list(pyudev.Context().list_devices(subsystem="block"))


def discover(*, probe_signatures: bool = True) -> list[Disk]:
    """Every whole disk with its partitions; devices that vanish meanwhile are left out.
    Without `probe_signatures`, no device is read (only udev's and the kernel's knowledge)."""
    state = SystemState.read()
    devices = list_block_devices()
    partitions: dict[str, list[pyudev.Device]] = {}
    for device in devices:
        if device.device_type == "partition":
            disk_name = os.path.basename(os.path.dirname(device.sys_path))
            partitions.setdefault(disk_name, []).append(device)
    discovery = _Discovery(state, probe_signatures)
    disks = []
    for device in devices:
        if device.device_type != "disk":
            continue
        children = sorted(partitions.get(device.sys_name, []),
                          key=lambda item: _natural_key(item.sys_name))
        try:
            disk = discovery.disk(device, children)
        except (OSError, pyudev.DeviceNotFoundError):
            disk = None
        if disk is not None:
            disks.append(disk)
    return sorted(disks, key=lambda disk: _natural_key(disk.name))


def find(path: str, disks: Iterable[Disk] | None = None) -> Disk | Partition | None:
    """The disk or partition behind a device path (symlinks such as /dev/disk/by-id work)."""
    real = os.path.realpath(path)
    name = BlockTree.read().name_of_path(real)
    for disk in discover() if disks is None else disks:
        items: tuple[Disk | Partition, ...] = (disk, *disk.partitions)
        for item in items:
            if item.name == name or item.path == real:
                return item
    return None


def as_dict(item: Disk | Partition) -> dict[str, object]:
    """JSON-ready form, with `running_system` spelled out for scripts."""
    data = dataclasses.asdict(item)
    if isinstance(item, Disk):
        data["running_system"] = item.running_system
    return data
