"""A restore onto a disk of another size, partitions laid out anew (fs/layout.py).

The partitions are written at their planned starts, each read back like any restore, and only
then does the target get its new partition table and its grown file systems: a grown file
system is checked by its own checker, since its bytes rightly differ from the image's.
Shrinking is not done: it needs the file system shrunk in a copy-on-write layer over the image
first, and a target that needs it is refused with the sizes the data needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from rescue.devices import safety
from rescue.engine.pipeline import Span, Target
from rescue.errors import RescueError, UsageError
from rescue.formats.image import open_reader
from rescue.fs import fitting, resizing
from rescue.fs.layout import LayoutPlan, NoRoom, Share, Sizing, parse_layout, plan_layout
from rescue.fs.partitions import PartitionTable
from rescue.units import human_size


class Planner:
    """Layouts for the targets of one image; the file systems are measured once, on the
    first target that needs it."""

    def __init__(self, image: str, image_format: str, image_size: int, table: PartitionTable,
                 layout: tuple[str, ...] = (), partition: int | None = None) -> None:
        """`layout`: the --layout values; `partition`: the one partition restored, if any."""
        if layout and (partition is not None or table.kind is None):
            raise UsageError("--layout needs a whole-disk image with a partition table")
        self.image, self.image_format, self.image_size = image, image_format, image_size
        self.table, self.partition = table, partition
        self.shares: dict[int, Share] = parse_layout(list(layout))
        self._sizings: dict[int, Sizing] | None = None

    def relaid(self, layout: tuple[str, ...]) -> Planner:
        """The same image planned with other sizes; what was measured is kept, since the
        measuring reads every file system of the image."""
        planner = Planner(self.image, self.image_format, self.image_size, self.table, layout,
                          self.partition)
        planner._sizings = self._sizings
        return planner

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


def shrunk_source(image: str, image_format: str, plan: LayoutPlan
                  ) -> contextlib.AbstractContextManager[str | None]:
    """The image with the plan's shrinking done in a copy-on-write layer, as a raw file to
    read the shrunk partitions from; None when nothing shrinks."""
    shrinks = [(p.fs_type or "", p.old_start, p.old_size, p.new_size)
               for p in plan.partitions if p.action == "shrink"]
    if not shrinks:
        return contextlib.nullcontext()
    return resizing.shrunk_image(image, image_format, shrinks)


def _size(value: int) -> str:
    return f"{human_size(value)} ({value} bytes)"


def finish_target(pieces: list[Target], planner: Planner, plan: LayoutPlan,
                  done: Callable[[Target], None]) -> None:
    """A laid-out target whose pieces were all written and read back gets its new table and
    its file systems resized and checked; each piece is `done` then, or failed with why."""
    if any(t.failed or t.phase in ("mismatch", "incomplete") for t in pieces):
        return
    for piece in pieces:
        piece.phase = "fixing-table"
    try:
        finish(pieces[0].path, planner.image, planner.image_format, planner.table, plan)
    except (OSError, RescueError) as exc:
        for piece in pieces:
            piece.fail(f"{piece.path}: {exc}")
        return
    for piece in pieces:
        done(piece)


def finish(device: str, image: str, image_format: str, table: PartitionTable,
           plan: LayoutPlan) -> None:
    """The new table on `device`, then each grown file system grown to its partition and
    checked by its own checker."""
    with resizing.image_file(image, image_format) as source:
        fitting.write_layout(device, table, source, {p.number: (p.new_start, p.new_size)
                                                     for p in plan.partitions})
    for part in plan.partitions:
        if part.action not in ("grow", "shrink") or part.fs_type is None:
            continue
        with resizing.loop_device(device, part.new_start, part.new_size,
                                  read_only=False) as loop:
            if part.action == "grow":
                resizing.grow(part.fs_type, loop)
            resizing.check(part.fs_type, loop)
