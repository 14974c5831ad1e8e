"""One-line notes on a disk or partition, shared by `rescue disks` and the TUI's pickers."""

from __future__ import annotations

from rescue.devices.discover import Disk, Partition

Device = Disk | Partition


def notes(item: Device) -> str:
    """What a user should know before touching the device, most important first."""
    parts = []
    if item.system_roles:
        parts.append(f"SYSTEM ({','.join(item.system_roles)})")
    parts.extend(item.mountpoints)
    parts.extend(f"held by {holder.removeprefix('/dev/')}" for holder in item.holders)
    if item.read_only:
        parts.append("read-only")
    if isinstance(item, Disk):
        parts.extend(part for part in (item.model, item.serial, item.backing_file) if part)
    return " ".join(parts)
