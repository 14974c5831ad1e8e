"""Partition tables made to fit a disk of another size than the one they were made for.

A GPT keeps a backup header and entry table in the last sectors of its disk: on a larger or
smaller disk they are moved to its end (`sgdisk -e`). A DOS table onto a smaller disk keeps
its partitions, all of which must fit, and has its extended container cut at the disk's end
(`sfdisk -N`). Either way the result is checked by the same tool before it counts as done.
"""

from __future__ import annotations

import re
import subprocess

from rescue.errors import DestinationError
from rescue.fs.partitions import PartitionTable

GPT_ENTRIES_SECTORS = 32  # 128 entries of 128 bytes at 512-byte sectors


def partitions_end(table: PartitionTable) -> int:
    """Where the last partition (not an extended container) ends, in bytes; at least past
    the table itself."""
    sector = table.sector_size
    first_usable = (2 + GPT_ENTRIES_SECTORS) * sector if table.kind == "gpt" else sector
    return max([first_usable, *(p.end for p in table.file_systems)])


def smallest_disk(table: PartitionTable) -> int:
    """The size of the smallest disk every partition fits on, room for a GPT backup included."""
    backup = (1 + GPT_ENTRIES_SECTORS) * table.sector_size if table.kind == "gpt" else 0
    return partitions_end(table) + backup


def move_gpt_backup(device: str) -> None:
    """Move the GPT backup header and table to the end of `device`, then check the table."""
    _tool(["sgdisk", "-e", device], device)
    report = _tool(["sgdisk", "-v", device], device)
    if "No problems found" not in report:
        raise DestinationError(f"{device}: GPT still has problems after moving its "
                               f"backup: {_first_problem(report)}")


def fit_dos(device: str, table: PartitionTable, disk_size: int) -> None:
    """Cut an extended container that reaches past the end of the smaller `device` to that
    end, then check the table."""
    sector = table.sector_size
    disk_end = disk_size // sector
    for entry in table.partitions:
        first = entry.start // sector
        if entry.is_container and (entry.end - 1) // sector >= disk_end:
            _tool(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "-N", str(entry.number),
                   device], device, stdin=f"{first},{disk_end - first}\n")
    _tool(["sfdisk", "--verify", device], device)


def _tool(args: list[str], device: str, stdin: str | None = None) -> str:
    """Run a partition tool; its failure is the device's one-line error."""
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise DestinationError(f"{args[0]} is not installed; it is needed to fix the partition "
                               f"table of {device}") from None
    if done.returncode:
        raise DestinationError(f"{' '.join(args[:2])} failed on {device}: "
                               f"{_first_problem(done.stderr + done.stdout)}")
    return done.stdout


def _first_problem(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    problems = [line for line in lines if re.match(r"(Problem|Warning|Error|Caution)", line)]
    return (problems or lines or ["no output"])[0]


def write_layout(device: str, table: PartitionTable, source: str,
                 starts: dict[int, tuple[int, int]]) -> None:
    """Give `device` the partition table of `source` (the image's disk bytes as a file, as
    `table` was read from it) with new (start, size) in bytes by number: every other field
    sfdisk knows stays (disk and partition GUIDs, types, names, attributes, logical
    partitions), and a DOS extended container follows its logical partitions. Checked
    afterwards like any fitted table."""
    sector = table.sector_size
    places = {n: (start // sector, size // sector) for n, (start, size) in starts.items()}
    for container in (p for p in table.partitions if p.is_container):
        inside = [p for p in table.partitions if p.logical and p.number in places]
        if inside:
            first = min(inside, key=lambda p: p.start)
            begin = (container.start - first.start) // sector + places[first.number][0]
            end = max(places[p.number][0] + places[p.number][1] for p in inside)
            places[container.number] = (begin, end - begin)
    prefix = f"{device}p" if device[-1:].isdigit() else device
    script = []
    for line in _tool(["sfdisk", "--dump", source], source).splitlines():
        found = re.match(r"\S*?(\d+)\s*:\s*start=\s*(\d+),\s*size=\s*(\d+)(.*)", line)
        if found:
            number = int(found[1])
            start, size = places.get(number, (int(found[2]), int(found[3])))
            line = f"{prefix}{number} : start={start}, size={size}{found[4]}"
        if not line.startswith(("last-lba:", "device:")):  # the new disk's own end
            script.append(line)
    _tool(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", device], device,
          stdin="\n".join(script) + "\n")
    if table.kind == "gpt":
        move_gpt_backup(device)
    else:
        _tool(["sfdisk", "--verify", device], device)
