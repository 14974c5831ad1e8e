"""`rescue disks [--json]`: every disk and partition, and which one the running system is on."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rescue.errors import ExitCode
from rescue.units import human_size

if TYPE_CHECKING:
    from rescue.devices.discover import Disk

# (heading, width) of each column; the last one takes what is left of 80 columns.
COLUMNS = (("DEVICE", 14), ("SIZE", 10), ("TYPE", 7), ("FS", 11), ("LABEL", 12), ("NOTES", 21))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("disks", help="list disks, partitions and file systems",
                                   description="List every disk and partition with size, "
                                   "file system, mounts, and which disk holds the running "
                                   "system.")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Device discovery (pyudev) is imported here: building the parser stays light."""
    from rescue.devices.discover import as_dict, discover

    disks = discover()
    if args.json:
        json.dump({"disks": [as_dict(disk) for disk in disks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(disks))
    return ExitCode.OK


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _row(cells: tuple[str, ...]) -> str:
    parts = [_fit(cell, width).ljust(width)
             for cell, (_, width) in zip(cells, COLUMNS, strict=True)]
    return " ".join(parts).rstrip() + "\n"


def render_table(disks: list[Disk]) -> str:
    """A table that fits 80 columns; partitions are indented under their disk."""
    from rescue.devices.describe import notes

    lines = [_row(tuple(heading for heading, _ in COLUMNS))]
    for disk in disks:
        kind = disk.table_type or disk.fstype or ""
        lines.append(_row((disk.path, human_size(disk.size), disk.transport or "-", kind,
                           disk.label or "", notes(disk))))
        for part in disk.partitions:
            lines.append(_row((f" └{part.path.removeprefix('/dev/')}", human_size(part.size),
                               f"part{part.number}", part.fstype or "", part.label or "",
                               notes(part))))
    if not disks:
        lines.append("no disks found\n")
    return "".join(lines)
