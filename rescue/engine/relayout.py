"""A restore onto a disk of another size, partitions laid out anew (fs/layout.py).

The partitions are written at their planned starts, each read back like any restore, and only
then does the target get its new partition table and its resized file systems (shrunk in a
copy-on-write layer over the image before writing, grown on the target after). A resized file
system rightly differs from the image byte for byte, so it is checked by its own checker and
then compared file by file with the image's partition (fs/filesample.py): the same listing,
and a sample of files with the same SHA-256; any difference fails the target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from rescue.devices import safety
from rescue.engine.pipeline import Span, Target
from rescue.errors import DestinationError, RescueError, UsageError
from rescue.formats.image import open_reader
from rescue.fs import fitting, resizing
from rescue.fs.filesample import FileComparison, compare_files
from rescue.fs.layout import (
    LayoutPlan,
    NoRoom,
    PartitionPlan,
    Share,
    Sizing,
    parse_layout,
    plan_layout,
)
from rescue.fs.partitions import PartitionTable, SliceReader
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
    shrinks = [(p.fs_type or "", p.number, p.old_start, p.old_size, p.new_size)
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
        compared = finish(pieces[0].path, planner.image, planner.image_format, planner.table,
                          plan)
    except (OSError, RescueError) as exc:
        for piece in pieces:
            piece.fail(f"{piece.path}: {exc}")
        return
    pieces[0].compared = (sum(c.listed for c in compared), sum(c.hashed for c in compared),
                          sum(c.size for c in compared)) if compared else None
    for piece in pieces:
        done(piece)


def finish(device: str, image: str, image_format: str, table: PartitionTable,
           plan: LayoutPlan) -> list[FileComparison]:
    """The new table on `device`, then each grown file system grown to its partition, and
    every resized one checked by its own checker and compared with the image's by its files;
    DestinationError naming the files when any differ."""
    places = {p.number: (p.new_start, p.new_size) for p in plan.partitions}
    resized = [p for p in plan.partitions if p.action in ("grow", "shrink") and p.fs_type]
    grown = [p for p in resized if p.action == "grow"]
    with resizing.image_file(image, image_format) as source:
        fitting.write_layout(device, table, source, places)
        for part in grown:
            resizing.resize(part.fs_type or "", device, part.number, part.new_start,
                            part.new_size, None)
        if any(p.fs_type == "fat" for p in grown):  # fatresize wrote its own table entries
            fitting.write_layout(device, table, source, places)
    for part in resized:
        with resizing.loop_device(device, part.new_start, part.new_size,
                                  read_only=False) as loop:
            resizing.check(part.fs_type, loop)
    compared = []
    for part in resized:
        comparison = compare_partition(device, image, image_format, part)
        if problem := comparison.problem():
            raise DestinationError(f"partition {part.number} ({part.fs_type}) was resized, "
                                   f"but {problem}")
        compared.append(comparison)
    return compared


def compare_partition(device: str, image: str, image_format: str, part: PartitionPlan
                      ) -> FileComparison:
    """The resized partition on `device` compared by its files with the image's own (the
    image itself, never the layer it was shrunk in)."""
    source, target = open_reader(image, image_format), open_reader(device, "raw")
    try:
        return compare_files(SliceReader(source, part.old_start, part.old_size),
                             SliceReader(target, part.new_start, part.new_size))
    finally:
        source.close()
        target.close()
