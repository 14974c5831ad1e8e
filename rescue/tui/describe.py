"""Plain-text descriptions of disks and partitions, shared by the Disks screen and wizards.

The one-line `notes` live in rescue.devices.describe, so the headless `rescue disks` shares them."""

from __future__ import annotations

from collections.abc import Iterator

from rescue.devices.describe import Device
from rescue.devices.describe import notes as notes  # re-exported for the screens
from rescue.devices.discover import Disk
from rescue.devices.health import Health
from rescue.units import human_size


def every_device(disks: list[Disk]) -> Iterator[Device]:
    """Each disk, then its partitions: the rows the screens list."""
    for disk in disks:
        yield disk
        yield from disk.partitions


def device_line(item: Device) -> str:
    """One device as the wizards list it: path, size, notes."""
    return f"{item.path:<14} {human_size(item.size):>9}  {notes(item)}".rstrip()


def describe(item: Device, health: Health | None) -> str:
    """Every known fact about one device, for the inspect screen."""
    lines = [item.path]
    if isinstance(item, Disk):
        lines += [f"  model     {item.vendor or ''} {item.model or '-'}".rstrip(),
                  f"  serial    {item.serial or '-'}",
                  f"  transport {item.transport or '-'}"
                  f"{', removable' if item.removable else ''}"
                  f"{', rotational' if item.rotational else ''}",
                  f"  size      {human_size(item.size)} ({item.size} bytes), sectors "
                  f"{item.logical_sector_size}/{item.physical_sector_size}",
                  f"  table     {item.table_type or '-'}"]
        if item.backing_file:
            lines.append(f"  backing   {item.backing_file}")
    else:
        lines += [f"  on        {item.disk}, partition {item.number}",
                  f"  start     {item.start} bytes, size {human_size(item.size)}"]
    lines += [f"  file sys  {item.fstype or '-'}  label {item.label or '-'}  "
              f"uuid {item.uuid or '-'}",
              f"  mounted   {', '.join(item.mountpoints) or 'no'}",
              f"  system    {', '.join(item.system_roles) or 'no'}"
              f"{'  (read-only)' if item.read_only else ''}"]
    if item.holders:
        lines.append(f"  held by   {', '.join(item.holders)}")
    if health is not None:
        lines.append(f"  health    {health.summary}")
        figures = [f"{name.replace('_', ' ')} {value}" for name, value in (
            ("reallocated", health.reallocated_sectors), ("pending", health.pending_sectors),
            ("uncorrectable", health.offline_uncorrectable),
            ("media_errors", health.media_errors), ("power_on_hours", health.power_on_hours),
            ("°C", health.temperature)) if value is not None]
        if figures:
            lines.append(f"            {', '.join(figures)}")
    if isinstance(item, Disk):
        for part in item.partitions:
            lines.append(f"  {part.name:<10} {human_size(part.size):>9}  {part.fstype or '-':<8}"
                         f" {part.label or ''} {' '.join(part.mountpoints)}".rstrip())
    return "\n".join(lines)
