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

# (heading, width) of each column on a terminal; the last one takes what is left of 80 columns.
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
        sys.stdout.write(render_table(disks, fit=sys.stdout.isatty()))
    return ExitCode.OK


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _lines(rows: list[tuple[str, ...]], fit: bool) -> list[str]:
    """Rows in aligned columns: cut to 80 columns when `fit`, else each column as wide as its
    longest cell, so nothing read through a pipe is lost."""
    widths = [width if fit else max(width, *(len(row[i]) for row in rows))
              for i, (_, width) in enumerate(COLUMNS)]
    return [" ".join((_fit(cell, width) if fit else cell).ljust(width)
                     for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
            for row in rows]


def render_table(disks: list[Disk], fit: bool) -> str:
    """A table that fits 80 columns when `fit` (a terminal), whole otherwise; partitions are
    indented under their disk."""
    from rescue.devices.describe import notes

    rows = [tuple(heading for heading, _ in COLUMNS)]
    for disk in disks:
        kind = disk.table_type or disk.fstype or ""
        rows.append((disk.path, human_size(disk.size), disk.transport or "-", kind,
                     disk.label or "", notes(disk)))
        for part in disk.partitions:
            rows.append((f" └{part.path.removeprefix('/dev/')}", human_size(part.size),
                         f"part{part.number}", part.fstype or "", part.label or "",
                         notes(part)))
    lines = _lines(rows, fit)
    if not disks:
        lines.append("no disks found\n")
    return "".join(lines)
