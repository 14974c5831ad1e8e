"""The chosen files' stage of an imaging job (`rescue image --first PATH`).

Once the metadata is in, the chosen paths are looked up in the image itself, never on the
failing source, and their files' data is rescued before anything else: the files in the
order they were chosen, grouped into batches of about BATCH_BYTES, each batch a complete
rescue of its own (copy, trim, scrape) so that every file is settled, complete or with its
bad ranges known, as early as possible. Retry passes are left to the job's last stage, which
goes over every bad sector anyway. A resumed job skips the batches that have nothing left to
read, so nothing already in is read again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rescue.engine.jobs import FirstProgress
from rescue.engine.rescue import Outcome
from rescue.errors import UsageError
from rescue.formats.base import ImageReader
from rescue.fs.chosen import (
    UNREAD,
    ChosenFile,
    FileState,
    FirstPath,
    domain_of,
    file_state,
    resolve,
)
from rescue.fs.domain import NATIVE, DiskPlan
from rescue.rangemap import FINISHED, STATES, RangeMap

BATCH_BYTES = 4 << 20  # file data one rescue of the stage covers, at least one whole file


def check_first_paths(wanted: tuple[FirstPath, ...], plan: DiskPlan) -> None:
    """Refuse, before anything is imaged, what the disk's layout already rules out: a
    partition that does not exist, or no file system the chosen paths could be looked up in.
    Whether a path exists is known only once the metadata is in."""
    if not wanted:
        return
    readable = {area.partition.number if area.partition else None: area.used.fs_type
                for area in plan.areas}
    kinds = "ext2/3/4, FAT, exFAT or NTFS"
    for chosen in wanted:
        if chosen.partition is None:
            if not any(_native(fs_type) for fs_type in readable.values()):
                raise UsageError(f"--first {chosen}: the source holds no {kinds} file system "
                                 "to look it up in")
            continue
        if plan.table_kind is None:
            raise UsageError(f"--first {chosen}: the source has no partition table; give the "
                             "path without a partition number")
        if chosen.partition not in readable:
            numbers = ", ".join(str(n) for n in readable)
            raise UsageError(f"--first {chosen}: no partition {chosen.partition} (the source "
                             f"has {numbers or 'none'})")
        fs_type = readable[chosen.partition]
        if not _native(fs_type):
            raise UsageError(f"--first {chosen}: partition {chosen.partition} holds "
                             f"{fs_type or 'no known file system'}, not {kinds}")


def _native(fs_type: str | None) -> bool:
    """A file system whose files rescue lists itself; a damaged one may still list them from
    a backup superblock, or from what the metadata stage rescues."""
    return fs_type is not None and (fs_type in NATIVE or fs_type.startswith(("ext", "fat")))


class FirstFiles:
    """Looks the chosen paths up in the image, then rescues their files batch by batch.

    `rescue_over(domain)` runs one rescue over a domain as the job's active rescue;
    `open_image()` reads the image as it is now, everything written so far synced."""

    def __init__(self, wanted: tuple[FirstPath, ...], rmap: RangeMap, sector_size: int,
                 open_image: Callable[[], ImageReader],
                 rescue_over: Callable[[RangeMap], Outcome]) -> None:
        self.wanted = wanted
        self._rmap = rmap
        self._sector_size = sector_size
        self._open_image = open_image
        self._rescue_over = rescue_over
        self._lock = threading.Lock()
        self._stage = "metadata"
        self._files: tuple[ChosenFile, ...] = ()
        self._settled: list[FileState] = []
        self._notes: tuple[str, ...] = ()

    def progress(self) -> FirstProgress:
        with self._lock:
            return FirstProgress(self._stage, len(self._files), tuple(self._settled),
                                 self._notes)

    def run(self) -> Outcome:
        """Look up, then rescue batch by batch; UsageError when a chosen path exists in no
        file system and no unreadable metadata could hide it."""
        self._look_up()
        for batch in self._batches():
            domain = domain_of([file.extents for file in batch], self._rmap.size)
            if self._unsettled(domain):
                outcome = self._rescue_over(domain)
                if not outcome.finished:
                    return outcome
            states = [file_state(file, self._rmap) for file in batch]
            with self._lock:
                self._settled += states
        with self._lock:
            self._stage = "done"
        complete = all(state.complete for state in self._settled)
        return Outcome.RESCUED if complete else Outcome.UNREADABLE

    def restate(self) -> None:
        """Settle every file again from the map as it is now: after the last stage, whose
        retries may have recovered some of their bytes."""
        if not self._files:
            return
        states = [file_state(file, self._rmap) for file in self._files]
        with self._lock:
            self._settled = states

    def _look_up(self) -> None:
        reader = self._open_image()
        try:
            selection = resolve(reader, self._rmap, self.wanted, self._sector_size)
        finally:
            reader.close()
        selection.require_found()
        with self._lock:
            self._files, self._notes, self._stage = selection.files, selection.notes, "files"

    def _batches(self) -> list[tuple[ChosenFile, ...]]:
        """The files in their order, cut into runs of about BATCH_BYTES of data."""
        batches: list[tuple[ChosenFile, ...]] = []
        batch: list[ChosenFile] = []
        size = 0
        for file in self._files:
            batch.append(file)
            size += sum(length for _, length in file.extents)
            if size >= BATCH_BYTES:
                batches.append(tuple(batch))
                batch, size = [], 0
        if batch:
            batches.append(tuple(batch))
        return batches

    def _unsettled(self, domain: RangeMap) -> bool:
        """Whether anything in `domain` is still to be read (bad sectors wait for retries)."""
        counts = dict.fromkeys(STATES, 0)
        for pos, length, state in domain.areas():
            if state == FINISHED:
                for key, n in self._rmap.state_bytes(pos, pos + length).items():
                    counts[key] += n
        return any(counts[state] for state in UNREAD)
