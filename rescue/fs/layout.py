"""A partition layout for a disk of another size than the image's: which partitions keep their
size, which grow or shrink, and where each one starts.

Small and special partitions (EFI system, BIOS boot, swap, Microsoft reserved, anything under
64 MiB, or under 1 GiB and under an eighth of the disk) and those whose file system cannot be
resized keep their size: boot loaders and firmware expect them as they are, and a few MiB more
or less in them helps nobody. The data partitions share the rest of the disk in proportion to
their old sizes, or as the user sets them (`2=60%`, `3=rest`, `2=20G`), never below what their
file system needs and never above what it can grow to (a FAT16 stays FAT16). Every moved or
resized partition starts on a 1 MiB boundary, and a GPT keeps room for its backup at the end.
Planning is pure arithmetic: the minimum sizes are measured elsewhere (fs/resizing.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from rescue.errors import RefusedError, UsageError
from rescue.fs.fitting import GPT_ENTRIES_SECTORS, smallest_disk
from rescue.fs.partitions import PartitionEntry, PartitionTable
from rescue.units import human_size, parse_size

MIB = 1 << 20
SMALL = 1 << 30  # partitions under this and under an eighth of their disk keep their size
TINY = 64 * MIB  # partitions under this keep their size whatever the disk
KEPT_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "swap",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "MS reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "recovery",
    "0xef": "EFI system", "0x82": "swap", "0x27": "recovery",
}


@dataclass(frozen=True)
class Sizing:
    """What the planner knows of one partition's file system."""

    fs_type: str | None
    minimum: int | None  # bytes it can shrink to; None: it cannot be resized here
    used_end: int | None = None  # FAT, exFAT: where their last used cluster ends
    maximum: int | None = None  # FAT16: the most it holds before it would have to be FAT32

    @property
    def least(self) -> int | None:
        """The smallest it could be, as far as is known, whether or not it is resized here."""
        return self.minimum if self.minimum is not None else self.used_end


@dataclass(frozen=True)
class PartitionPlan:
    number: int
    type_id: str
    fs_type: str | None
    old_start: int
    old_size: int
    new_start: int
    new_size: int
    minimum: int | None  # the least its file system needs, when known
    note: str  # why it keeps its size, or ""
    logical: bool = False

    @property
    def action(self) -> str:
        if self.new_size > self.old_size:
            return "grow"
        if self.new_size < self.old_size:
            return "shrink"
        return "move" if self.new_start != self.old_start else "keep"

    def as_dict(self) -> dict[str, object]:
        return {"number": self.number, "type": self.type_id, "fs": self.fs_type,
                "old_start": self.old_start, "old_size": self.old_size,
                "new_start": self.new_start, "new_size": self.new_size,
                "min_size": self.minimum, "action": self.action, "note": self.note}


@dataclass(frozen=True)
class Move:
    """Image bytes [source, source + length) go to target offset `dest`."""

    source: int
    length: int
    dest: int


@dataclass(frozen=True)
class LayoutPlan:
    kind: str  # "gpt" or "dos"
    sector_size: int
    target_size: int
    partitions: tuple[PartitionPlan, ...]

    @property
    def changed(self) -> bool:
        """Whether any partition moves or changes size; otherwise the image goes as it is."""
        return any(p.action != "keep" for p in self.partitions)

    def moves(self) -> tuple[Move, ...]:
        """What to copy: the disk's head (tables, boot code) up to the first partition, then
        every partition's bytes to its new start."""
        head = min((p.old_start for p in self.partitions), default=0)
        return (Move(0, head, 0), *(Move(p.old_start, min(p.old_size, p.new_size), p.new_start)
                                    for p in self.partitions))

    def as_dict(self) -> dict[str, object]:
        return {"table": self.kind, "target_size": self.target_size,
                "partitions": [p.as_dict() for p in self.partitions]}

    def lines(self) -> list[str]:
        """The plan as a table that fits 78 columns."""
        rows = [f"{'nr':>2} {'fs':<5} {'old start':>9} {'old size':>9} {'new start':>9} "
                f"{'new size':>9} {'min size':>9} action"]
        for p in self.partitions:
            sizes = (p.old_start, p.old_size, p.new_start, p.new_size)
            minimum = human_size(p.minimum) if p.minimum is not None else "-"
            rows.append(f"{p.number:>2} {(p.fs_type or '?')[:5]:<5} "
                        f"{' '.join(f'{human_size(v):>9}' for v in sizes)} {minimum:>9} "
                        f"{p.action}{' (' + p.note + ')' if p.note else ''}")
        return rows


class NoRoom(RefusedError):
    """The data cannot fit the target; `need` says how much it needs, partition by partition."""

    def __init__(self, target: str, size: int, need: str) -> None:
        super().__init__(f"{target} holds {human_size(size)} ({size} bytes); {need}")
        self.need = need


Share = str | float | int  # "rest", a fraction of the disk, or bytes


def parse_layout(specs: list[str]) -> dict[int, Share]:
    """`2=60%`, `3=rest`, `2=20G` (comma-separated or repeated) as partition number → share."""
    shares: dict[int, Share] = {}
    for spec in ",".join(specs).split(","):
        if not spec.strip():
            continue
        found = re.fullmatch(r"\s*(\d+)\s*=\s*(\S+)\s*", spec)
        if not found:
            raise UsageError(f"--layout {spec!r}: expected N=SIZE, N=PERCENT% or N=rest")
        number, value = int(found[1]), found[2].lower()
        if value == "rest":
            shares[number] = "rest"
        elif value.endswith("%"):
            try:
                percent = float(value[:-1])
            except ValueError:
                raise UsageError(f"--layout {spec!r}: {value} is not a percentage") from None
            if not 0 < percent <= 100:
                raise UsageError(f"--layout {spec!r}: a percentage is over 0 and at most 100")
            shares[number] = percent / 100
        else:
            try:
                shares[number] = parse_size(value)
            except UsageError as exc:
                raise UsageError(f"--layout {spec!r}: {exc}") from None
    if list(shares.values()).count("rest") > 1:
        raise UsageError("--layout: only one partition can take the rest")
    return shares


def _down(value: int) -> int:
    return value // MIB * MIB


def _up(value: int) -> int:
    return -(-value // MIB) * MIB


def kept_type(table: PartitionTable, entry: PartitionEntry) -> str:
    """Why the partition keeps its size whatever its file system: its type, or that it is
    small (under 64 MiB, or under 1 GiB and under an eighth of its disk); "" when it may
    change."""
    if entry.type_id in KEPT_TYPES:
        return KEPT_TYPES[entry.type_id]
    if entry.size < max(TINY, min(SMALL, table.disk_size // 8)):
        return "small"
    return ""


def _kept_reason(table: PartitionTable, entry: PartitionEntry, sizing: Sizing) -> str:
    if kept := kept_type(table, entry):
        return kept
    if sizing.minimum is None:
        return "no resizer" if sizing.fs_type else "unknown fs"
    return ""


def plan_layout(table: PartitionTable, target: str, target_size: int,
                sizings: dict[int, Sizing], shares: dict[int, Share] | None = None
                ) -> LayoutPlan:
    """Partition sizes and starts for a `target_size`-byte disk; RefusedError, with the numbers,
    when the image's data cannot fit it."""
    if table.kind is None:
        raise UsageError("only an image with a partition table can be laid out anew")
    shares = shares or {}
    entries = sorted(table.file_systems, key=lambda p: p.start)
    unknown = set(shares) - {p.number for p in entries}
    if unknown:
        raise UsageError(f"--layout names partition {min(unknown)}, which the image does not have")
    notes = {p.number: _kept_reason(table, p, sizings.get(p.number, Sizing(None, None)))
             for p in entries}
    fixed = {p.number for p in entries if notes[p.number] and p.number not in shares}
    usable_end = target_size - ((1 + GPT_ENTRIES_SECTORS) * table.sector_size
                                if table.kind == "gpt" else 0)
    gaps = _gaps(entries)
    taken = sum(p.size for p in entries if p.number in fixed) + sum(gaps.values()) + len(
        entries) * MIB  # alignment may cost up to 1 MiB per partition
    free = max(0, usable_end - taken)
    sizes = _share_out(entries, fixed, shares, sizings, free, target_size)
    if not shares and target_size >= smallest_disk(table) and any(
            sizes[p.number] < p.size for p in entries):
        sizes = {p.number: p.size for p in entries}  # what the alignment costs, not a shrink
    _require_room(table, target, target_size, usable_end, entries, fixed, sizes, sizings, gaps)
    plans = _place(entries, sizes, gaps, sizings, notes, fixed)
    last = plans[-1] if plans else None
    if last and last.action != "keep" and last.number not in fixed and not isinstance(
            shares.get(last.number), int | float):  # what alignment left at the end is its
        end = _capped(_down(usable_end) - last.new_start, sizings.get(last.number))
        last = replace(last, new_size=max(last.new_size, end))
        plans = (*plans[:-1], last)
    return LayoutPlan(table.kind, table.sector_size, target_size, plans)


def _gaps(entries: list[PartitionEntry]) -> dict[int, int]:
    """The space before each partition (the first one's from the disk's start): kept, since
    it may hold an EBR or boot code."""
    gaps, end = {}, 0
    for entry in entries:
        gaps[entry.number] = max(0, entry.start - end)
        end = entry.end
    return gaps


def _capped(size: int, sizing: Sizing | None) -> int:
    """`size`, or less when the file system cannot grow that far."""
    if sizing is None or sizing.maximum is None:
        return size
    return min(size, _down(sizing.maximum))


def _share_out(entries: list[PartitionEntry], fixed: set[int], shares: dict[int, Share],
               sizings: dict[int, Sizing], free: int, disk: int) -> dict[int, int]:
    """New sizes of the partitions that may change: explicit ones first, then the rest, or
    else the others in proportion to their old sizes, each at least its minimum."""
    sizes = {p.number: p.size for p in entries if p.number in fixed}
    minimum = {p.number: _up(sizings[p.number].minimum or 0) if p.number in sizings else 0
               for p in entries}
    flexible = [p for p in entries if p.number not in fixed]
    for p in flexible:
        share = shares.get(p.number)
        if isinstance(share, float):
            sizes[p.number] = _down(int(disk * share))
        elif isinstance(share, int):
            sizes[p.number] = _up(share)
    left = free - sum(sizes[p.number] for p in flexible if p.number in sizes)
    rest = [p for p in flexible if shares.get(p.number) == "rest"]
    pending = [p for p in flexible if p.number not in sizes and not rest]
    if rest:
        for p in flexible:
            if p.number not in sizes and p not in rest:
                sizes[p.number] = p.size
                left -= p.size
        sizes[rest[0].number] = _capped(max(_down(left), 0), sizings.get(rest[0].number))
    while pending:  # a share under its minimum gets the minimum, over its maximum the maximum
        total = sum(p.size for p in pending)
        portion = {p.number: left * p.size // total for p in pending}
        bounded = {p.number: minimum[p.number] for p in pending
                   if portion[p.number] < minimum[p.number]} or {
            p.number: _capped(portion[p.number], sizings.get(p.number)) for p in pending
            if _capped(portion[p.number], sizings.get(p.number)) < portion[p.number]}
        if not bounded:
            for p in pending:
                sizes[p.number] = _down(portion[p.number])
            break
        for p in [p for p in pending if p.number in bounded]:
            sizes[p.number] = bounded[p.number]
            left -= bounded[p.number]
            pending.remove(p)
    return sizes


def _require_room(table: PartitionTable, target: str, target_size: int, usable_end: int,
                  entries: list[PartitionEntry], fixed: set[int], sizes: dict[int, int],
                  sizings: dict[int, Sizing], gaps: dict[int, int]) -> None:
    """Refuse, before any write, a layout the data cannot fit, naming every partition's need."""
    needs = {p.number: p.size if p.number in fixed else _up(sizings[p.number].minimum or 0)
             if p.number in sizings else p.size for p in entries}
    # partitions are aligned to 1 MiB; a few sectors of a kept odd size may cost one MiB each
    overhead = sum(gaps.values()) + (target_size - usable_end) + MIB * len(entries)
    needed = sum(needs.values()) + overhead
    small = [p.number for p in entries if sizes[p.number] < needs[p.number]]
    for p in entries:
        most = sizings[p.number].maximum if p.number in sizings else None
        if most is not None and sizes[p.number] > _down(most):
            raise RefusedError(f"--layout gives partition {p.number} "
                               f"{human_size(sizes[p.number])}, more than the "
                               f"{human_size(_down(most))} its {sizings[p.number].fs_type} "
                               "file system can grow to without changing its type")
    if needed <= target_size and not small:
        return
    detail = "; ".join(
        f"partition {p.number} {sizings[p.number].fs_type if p.number in sizings else '?'}: "
        f"{'keeps' if p.number in fixed else 'min'} {human_size(needs[p.number])} "
        f"({needs[p.number]} bytes)" for p in entries)
    if small:
        number = small[0]
        raise RefusedError(f"--layout gives partition {number} {human_size(sizes[number])}, "
                           f"less than the {human_size(needs[number])} ({needs[number]} bytes) "
                           f"its data needs ({detail})")
    raise NoRoom(target, target_size, f"the image's data needs at least {human_size(needed)} "
                 f"({needed} bytes) ({detail})")


def _place(entries: list[PartitionEntry], sizes: dict[int, int], gaps: dict[int, int],
           sizings: dict[int, Sizing], notes: dict[int, str], fixed: set[int]
           ) -> tuple[PartitionPlan, ...]:
    """Starts in the old order, each gap kept; a partition after a change starts on 1 MiB."""
    plans, end, shifted = [], 0, False
    for p in entries:
        start = p.start if not shifted else _up(end + gaps[p.number])
        size = sizes[p.number]
        shifted = shifted or start != p.start or size != p.size
        sizing = sizings.get(p.number, Sizing(None, None))
        plans.append(PartitionPlan(p.number, p.type_id, sizing.fs_type, p.start, p.size, start,
                                   size, sizing.least,
                                   notes[p.number] if p.number in fixed else "", p.logical))
        end = start + size
    return tuple(plans)
