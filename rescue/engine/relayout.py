"""A restore onto a disk of another size, partitions laid out anew (fs/layout.py).

The partitions are written at their planned starts, each read back like any restore, and only
then does the target get its new partition table and its grown file systems: a grown file
system is checked by its own checker, since its bytes rightly differ from the image's.
Shrinking is not done: it needs the file system shrunk in a copy-on-write layer over the image
first, and a target that needs it is refused with the sizes the data needs.
"""

from __future__ import annotations

from rescue.devices import safety
from rescue.engine.pipeline import Span
from rescue.errors import RescueError
from rescue.formats.image import open_reader
from rescue.fs import fitting, resizing
from rescue.fs.layout import LayoutPlan, NoRoom, Share, Sizing, plan_layout
from rescue.fs.partitions import PartitionTable
from rescue.units import human_size


class Planner:
    """Layouts for the targets of one image; the file systems are measured once, on the
    first target that needs it."""

    def __init__(self, image: str, image_format: str, image_size: int, table: PartitionTable,
                 shares: dict[int, Share]) -> None:
        self.image, self.image_format, self.image_size = image, image_format, image_size
        self.table, self.shares = table, shares
        self._sizings: dict[int, Sizing] | None = None

    def planned(self, target: str, size: int, problem: safety.Reason | None
                ) -> tuple[Span | None, LayoutPlan | None, safety.Reason | None] | None:
        """What a whole-disk target receives when its partitions are laid out anew (one of
        them may change size on a disk of another size), or why it cannot; None when the
        image goes onto it as it is, or is refused as it is (`RestoreJob._span_for`)."""
        if self.table.kind is None or (size == self.image_size and not self.shares) or (
                problem is not None and problem.code != "too-small"):
            return None
        try:
            self.sizings()
        except RescueError:
            if self.shares:
                raise
            return None  # no tool could measure: the image goes as it is, or is refused
        try:
            plan = plan_layout(self.table, target, size, self.sizings(), self.shares)
        except NoRoom as exc:
            text = f"{problem.message}; {exc.need}" if problem else str(exc)
            return None, None, safety.Reason("too-small", text, False)
        if not plan.changed:
            return None
        if shrinking := _shrinking(plan):
            text = f"{problem.message}; {shrinking}" if problem else shrinking
            return None, plan, safety.Reason("too-small", text, False)
        moved = sum(move.length for move in plan.moves())
        return Span(0, moved, "resize", self.table.kind), plan, None

    def sizings(self) -> dict[int, Sizing]:
        if self._sizings is None:
            reader = open_reader(self.image, self.image_format)
            try:
                self._sizings = resizing.measure(reader, self.table, self.image,
                                                 self.image_format)
            finally:
                reader.close()
        return self._sizings


def _shrinking(plan: LayoutPlan) -> str:
    """Why the plan cannot be carried out yet, or ""."""
    shrunk = [p for p in plan.partitions if p.action == "shrink"]
    if not shrunk:
        return ""
    p = shrunk[0]
    return (f"partition {p.number} ({p.fs_type}) would shrink from {_size(p.old_size)} to "
            f"{_size(p.new_size)} (its minimum is {_size(p.minimum or p.new_size)}); shrinking a "
            "file system while restoring is not done yet")


def _size(value: int) -> str:
    return f"{human_size(value)} ({value} bytes)"


def finish(device: str, table: PartitionTable, plan: LayoutPlan) -> None:
    """The new table on `device`, then each grown file system grown to its partition and
    checked by its own checker."""
    fitting.write_layout(device, table, {p.number: (p.new_start, p.new_size)
                                         for p in plan.partitions})
    for part in plan.partitions:
        if part.action != "grow" or part.fs_type is None:
            continue
        with resizing.loop_device(device, part.new_start, part.new_size,
                                  read_only=False) as loop:
            resizing.grow(part.fs_type, loop)
            resizing.check(part.fs_type, loop)
