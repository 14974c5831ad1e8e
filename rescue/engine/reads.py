"""The one way every pass of a rescue reads: into the image, recorded in the map.

Durability: data goes to the writer before the map says '+', and the map is saved only after
`writer.sync()`, so the saved map never claims data that is not on disk. Each read also answers
the job's controls (pause, cancel, timeout) and tells the `SourceWatch` how it went.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rescue.engine.jobs import JobControl, RateMeter
from rescue.engine.liveness import SourceWatch
from rescue.errors import DestinationError
from rescue.formats.base import ImageWriter
from rescue.formats.mapfile import Mapfile
from rescue.formats.readlog import ReadObserver
from rescue.io.reader import Unreadable
from rescue.io.source import Source
from rescue.rangemap import BAD, FINISHED, NON_TRIMMED, RangeMap


class Stopped(Exception):
    """The job was cancelled, or nothing was read for the timeout."""

    def __init__(self, timeout: bool) -> None:
        super().__init__("timeout" if timeout else "interrupted")
        self.timeout = timeout


@dataclass(frozen=True)
class ReadSettings:
    """What a rescue's options say about reading as such."""

    checkpoint_interval: float
    timeout: float | None  # seconds without a good read before stopping
    min_read_rate: int | None  # bytes/s; 0 = a tenth of the average; None = off


class MapReads:
    """Reads of one source into one image, each recorded in the map (under a lock, since
    presenters take snapshots from other threads), clipped to the domain when there is one."""

    def __init__(self, source: Source, writer: ImageWriter, mapfile: Mapfile,
                 save_map: Callable[[Mapfile], None], settings: ReadSettings,
                 control: JobControl, meter: RateMeter | None,
                 domain: RangeMap | None, observer: ReadObserver | None = None) -> None:
        self.source, self.writer, self.mapfile = source, writer, mapfile
        self.rmap = mapfile.rmap
        self.sector = source.sector_size
        self.save_map, self.settings = save_map, settings
        self.control, self.domain = control, domain
        self.clock = control.clock  # job time: stands still while paused
        self.meter = meter or RateMeter(self.clock.now())  # shared by a job's rescues
        self.lock = threading.Lock()
        self.observer = observer
        self.watch = SourceWatch(source, mapfile, observer)
        self.read_errors = 0
        self.pos = mapfile.current_pos
        self._last_save = time.monotonic()

    def read(self, offset: int, length: int, on_error: str | None) -> bool:
        """Read, write what was read, record it. On a read error mark `on_error` (if given)."""
        self.control.wait_if_paused()
        if self.control.cancelled.is_set():
            raise Stopped(timeout=False)
        self.pos = offset
        self.mapfile.current_pos = offset
        try:
            data = self.source.read(offset, length)
        except Unreadable:
            if self.observer is not None:
                self.observer.read(offset, length, 0, length)
            self.read_errors += 1
            self.watch.read_failed()
            if on_error is not None:
                self.mark(offset, length, on_error)
            self.watch.check()
            self._after_read()
            return False
        if self.observer is not None:
            self.observer.read(offset, length, length, 0)
        self.writer.write(offset, data)
        self.meter.add(length, self.clock.now())
        self.watch.read_good(offset)
        self.mark(offset, length, FINISHED)
        self._after_read()
        return True

    def read_timed(self, begin: int, end: int) -> tuple[bool, bool]:
        """Read [begin, end); returns (read, slower than --min-read-rate)."""
        started = self.clock.now()
        if not self.read(begin, end - begin, on_error=None):
            return False, False
        minimum = self.settings.min_read_rate
        if minimum is None:
            return True, False
        rate = (end - begin) / max(self.clock.now() - started, 1e-6)
        if minimum == 0:
            return True, rate < self.meter.average(self.clock.now()) / 10
        return True, rate < minimum

    def read_sector(self, offset: int) -> bool:
        """One sector, marked bad if it fails."""
        length = min(self.sector, self.rmap.size - offset)
        started = self.clock.now()
        good = self.read(offset, length, on_error=BAD)
        self.meter.sector_reads.add(length, self.clock.now() - started)
        return good

    def read_clusters(self, begin: int, end: int, cluster: int) -> bool:
        """Read [begin, end) again cluster by cluster after a failed read of it, so only the
        failing clusters become non-trimmed (no sector is read more than twice before
        trimming). True if all read."""
        failed = False
        for offset in range(begin, end, cluster):
            length = min(cluster, end - offset)
            if not self.read(offset, length, on_error=NON_TRIMMED):
                failed = True
        return not failed

    def mark(self, offset: int, length: int, state: str) -> None:
        with self.lock:
            self.watch.before_mark(offset, offset + length)
            self.rmap.set(offset, length, state)

    def state_at(self, pos: int) -> str | None:
        """The state at `pos`, None past either end of the disk."""
        return self.rmap.state_at(pos) if 0 <= pos < self.rmap.size else None

    def _after_read(self) -> None:
        timeout = self.settings.timeout
        if timeout is not None and self.meter.since_last(self.clock.now()) > timeout:
            raise Stopped(timeout=True)
        if time.monotonic() - self._last_save >= self.settings.checkpoint_interval:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the image durable, then save the map that describes it."""
        self.writer.sync()
        with self.lock:
            self.save_map(self.mapfile)
        self._last_save = time.monotonic()

    def save_after_failure(self) -> None:
        """Keep the job resumable after the source or destination failed: save the map only
        if the image could still be synced; otherwise the last saved map stays valid."""
        try:
            self.writer.sync()
        except DestinationError:
            return
        with self.lock:
            self.save_map(self.mapfile)

    def next_block(self, state: str, pos: int, forward: bool) -> tuple[int, int, str] | None:
        """The nearest area in `state` from `pos`, clipped to the domain."""
        while True:
            area = self.rmap.find(state, pos, forward)
            if area is None or self.domain is None:
                return area
            begin, length, found = area
            end = begin + length
            if forward:
                inside = self.domain.find(FINISHED, begin, True)
                if inside is None:
                    return None
                if inside[0] < end:
                    return inside[0], min(end, inside[0] + inside[1]) - inside[0], found
                pos = inside[0]
            else:
                inside = self.domain.find(FINISHED, end, False)
                if inside is None:
                    return None
                inside_end = inside[0] + inside[1]
                if inside_end > begin:
                    first = max(begin, inside[0])
                    return first, inside_end - first, found
                pos = inside_end


def chunk(begin: int, end: int, forward: bool, size: int, cluster: int) -> tuple[int, int]:
    """The next read inside [begin, end) from one side: `size` bytes (a multiple of
    `cluster`), its far end aligned to clusters, so it is never empty."""
    if forward:
        return begin, min(end, (begin + size) // cluster * cluster)
    return max(begin, -(-(end - size) // cluster) * cluster), end
