"""The image decoded once, in order, and written onto every target in parallel.

A small pool of decoders reads the image in chunks (qcow2 and .img.zst decoding is CPU work that
runs in parallel threads); every chunk goes, in order, into one bounded queue per target, and
one writer thread per target drains its queue, keeping several writes in flight. A decoder
copies its chunk once into a page-aligned buffer (and hashes it, when asked), and every
target's writer hands that same buffer to an O_DIRECT write, so one more target costs its
writes and no more copies or hashing (the writes release the GIL). A slow target fills its
queue and so slows the reader, and with it the others, but memory never grows past the
queues. A target that fails is dropped with its reason while the others go on.

Durability: a writer marks a range written in its target's map only after an fsync of the
target, every `checkpoint` seconds and at the end, so what a map claims is on the disk. A
target read back while it is written (engine/readback.py) is synced every `FOLLOW_SYNC` bytes
too, and its watermark moved to what that sync made durable: the read-back follows it.
"""

from __future__ import annotations

import bisect
import functools
import mmap
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from rescue.engine.jobs import JobClock, RateMeter
from rescue.errors import DestinationError, FormatError
from rescue.formats import mapfile
from rescue.formats.base import ImageReader, Ranges
from rescue.formats.fingerprint import chunk_digest, zero_chunk_digest
from rescue.formats.image import open_reader
from rescue.formats.integrity import add_range, read_checked, read_checked_into
from rescue.io.blockdev import BlockTarget, Watermark, aligned_buffer, write_error
from rescue.rangemap import FINISHED, RangeMap

Decoded = TypeVar("Decoded")  # what a decoding job returns: a chunk, or bytes to send

CHUNK = 4 << 20  # unit of reading, hashing, writing and verifying
QUEUE_CHUNKS = 6  # per target: at most this many chunks wait to be written
WRITES_IN_FLIGHT = 4  # per target
FOLLOW_SYNC = 8 * CHUNK  # a target read back while written is synced after this many bytes


def plan(length: int) -> Iterator[tuple[int, int]]:
    """The chunks (offset, length) of `length` bytes."""
    for offset in range(0, length, CHUNK):
        yield offset, min(CHUNK, length - offset)


@dataclass(frozen=True)
class Span:
    """What goes onto a target: image bytes [offset, offset + length) to target offset
    `dest`."""

    offset: int
    length: int
    mode: str  # "whole", "partition", "fit" (a smaller disk, table made to fit), "resize"
    table: str | None  # "gpt" or "dos" when the restored bytes start with that table
    dest: int = 0  # "resize": one partition's bytes go to its new start
    source: str | None = None  # a raw file to read instead of the image (a shrunk copy)


class Target:
    """One target: its span, its map, its phase and its counters. Its map claims only what
    is durable: the writer marks ranges written after an fsync."""

    def __init__(self, path: str, span: Span, map_path: str, command_line: str,
                 clock: JobClock) -> None:
        self.path, self.span, self.map_path = path, span, map_path
        self.clock = clock  # the job's: rates hold still while it is paused
        self.command_line = command_line
        self.size = span.length
        self.rmap = self._load_map()
        self.todo = self._todo()
        self.phase = "waiting"
        self.error: str | None = None
        self.mismatches: list[tuple[int, int]] = []
        self.verified = 0
        self.compared: tuple[int, int, int] | None = None  # files listed, hashed, bytes hashed
        self.meter = RateMeter(clock.now())
        self.started = time.time()
        self.written: Watermark | None = None  # set when it is read back while written

    @property
    def failed(self) -> bool:
        return self.error is not None

    def _load_map(self) -> RangeMap:
        if os.path.exists(self.map_path):
            return mapfile.load(self.map_path, self.size).rmap
        return RangeMap(self.size)

    def save_map(self) -> None:
        done = self.rmap.totals()[FINISHED] == self.size
        mapfile.save(self.map_path, mapfile.Mapfile(self.rmap, 0, "+" if done else "?"),
                     self.command_line, self.started)

    def _todo(self) -> set[int]:
        """Offsets of the chunks not yet durable on this target (decided before writing, so
        the reader never looks at a map a writer is changing)."""
        return {offset for offset, length in plan(self.size)
                if self.rmap.state_bytes(offset, offset + length).get(FINISHED, 0) < length}

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            self.phase = "failed"
        if self.written is not None:  # nothing more will be written: a read-back stops
            self.written.end()


class BufferPool:
    """Page-aligned chunk buffers, reused: a fresh anonymous mapping costs a page fault and a
    page zeroing per 4 KiB, more than the copy that fills it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        with self.lock:
            if self.free:
                return self.free.pop()
        return aligned_buffer(CHUNK)

    def give(self, buffer: mmap.mmap) -> None:
        with self.lock:
            self.free.append(buffer)


class Chunk:
    """One decoded chunk, read-only and shared by every target's writer, so N targets cost one
    copy and not N. Its buffer returns to the pool when the last holder releases it."""

    __slots__ = ("_buffer", "_holders", "_pool", "damaged", "digest", "length", "offset")

    def __init__(self, offset: int, length: int, digest: bytes | None,
                 buffer: mmap.mmap | None = None, pool: BufferPool | None = None,
                 damaged: Ranges | None = None) -> None:
        self.offset = offset  # within the bytes being restored
        self.length = length
        self.digest = digest  # its BLAKE3 (fingerprint.chunk_digest) when hashing, else None
        self.damaged = damaged or []  # image ranges that failed their checks: zeros here
        self._buffer = buffer  # None: a hole, reads as zeros
        self._pool = pool
        self._holders = 1  # the reader's own hold, released once every target has it

    @property
    def is_hole(self) -> bool:
        return self._buffer is None

    def view(self, length: int) -> memoryview:
        """The first `length` bytes; valid only until this holder's `release`."""
        assert self._buffer is not None
        return memoryview(self._buffer)[:length]

    def hold(self) -> None:
        if self._pool is not None:
            with self._pool.lock:
                self._holders += 1

    def release(self) -> None:
        if self._pool is None or self._buffer is None:
            return
        with self._pool.lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._pool.give(self._buffer)
            self._buffer = None


class Decoders:
    """Chunks of the image decoded in parallel, one reader per thread (readers keep caches
    and are not shared), delivered in order through a bounded window of futures."""

    def __init__(self, path: str, image_format: str, threads: int) -> None:
        self.path, self.image_format = path, image_format
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="restore-decode")
        self.local = threading.local()
        self.readers: list[ImageReader] = []
        self.lock = threading.Lock()
        self.window = threads * 2

    def _reader(self) -> ImageReader:
        reader = getattr(self.local, "reader", None)
        if reader is None:
            reader = self.local.reader = open_reader(self.path, self.image_format)
            with self.lock:
                self.readers.append(reader)
        return reader

    def read(self, offset: int, length: int) -> tuple[bytes, Ranges]:
        """Image bytes, damaged parts as zeros, and the damaged ranges (the integrity gate)."""
        data, damaged = read_checked(self._reader(), offset, length)
        if len(data) != length:
            raise FormatError(f"image {self.path} ends at {offset + len(data):#x}, "
                              f"before its size")
        return data, damaged

    def read_into(self, offset: int, view: memoryview) -> Ranges:
        """`read` into `view`, which the image must fill; the damaged ranges."""
        reader = self._reader()
        if offset + len(view) > reader.size:
            raise FormatError(f"image {self.path} ends at {reader.size:#x}, before its size")
        return read_checked_into(reader, offset, view)

    def stream(self, jobs: Iterator[Callable[[], Decoded]]) -> Iterator[Decoded]:
        """The jobs' results in order, computed `window` ahead on the pool."""
        pending: deque[Future[Decoded]] = deque()
        for work in jobs:
            pending.append(self.pool.submit(work))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for reader in self.readers:
            reader.close()


class _InFlight:
    """A target's writes sent to the device and not yet counted. `WRITES_IN_FLIGHT` go at
    once: a disk takes several requests sooner than the same ones one after another (a loop
    device over a virtual disk here wrote 2.5 times as fast with four). They complete in any
    order but are counted in the order sent, so the ranges a sync claims all completed
    before it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pool = ThreadPoolExecutor(WRITES_IN_FLIGHT, thread_name_prefix="restore-write")
        self.sent: deque[tuple[Future[None], int, int]] = deque()
        self.done: list[tuple[int, int]] = []  # written, not yet synced
        self.unsynced = 0  # their bytes

    def send(self, write: Callable[[], None], offset: int, size: int) -> None:
        """Send the write of target bytes [offset, offset + size); raises OSError of an earlier
        one."""
        self.sent.append((self.pool.submit(write), offset, size))
        if len(self.sent) >= WRITES_IN_FLIGHT:
            self._count_oldest()

    def _count_oldest(self) -> None:
        future, offset, size = self.sent.popleft()
        future.result()
        self.target.meter.add(size, self.target.clock.now())
        add_range(self.done, offset, size)
        self.unsynced += size

    def drain(self) -> list[tuple[int, int]]:
        """Wait for every write sent; the ranges written since the last drain, handed over."""
        while self.sent:
            self._count_oldest()
        done, self.done, self.unsynced = self.done, [], 0
        return done

    def close(self) -> None:
        """Wait for the writes still running (after a failure), so the device may close."""
        self.pool.shutdown(wait=True)


class _Lane:
    """One target's queue and the writer thread that drains it."""

    def __init__(self, target: Target, device: BlockTarget) -> None:
        self.target, self.device = target, device
        self.queue: queue.Queue[Chunk | None] = queue.Queue(QUEUE_CHUNKS)
        self.thread: threading.Thread | None = None


class Writers:
    """One writer thread per target, each draining its own bounded queue of chunks delivered
    in order; leaving the `with` block ends the writers and waits for them. Whoever produces
    the chunks (the image's decoders, a deployment's stream) takes their buffers from `pool`."""

    def __init__(self, *, skip_holes: bool, checkpoint: float) -> None:
        self.skip_holes, self.checkpoint = skip_holes, checkpoint
        self.pool = BufferPool()
        self.lanes: list[_Lane] = []

    def __enter__(self) -> Writers:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for lane in self.lanes:
            self._put(lane, None)
        for lane in self.lanes:
            assert lane.thread is not None
            lane.thread.join()

    def start_writers(self, targets: list[Target]) -> list[Target]:
        """Open every target and start its writer; those that cannot be opened fail.
        Returns the ones being written."""
        for target in targets:
            try:
                device = BlockTarget(target.path, direct=True, exclusive=True)
            except OSError as exc:
                target.fail(write_error(target.path, exc, "cannot open"))
                continue
            target.save_map()  # from here on the target is no longer what it was
            target.phase = "writing"
            lane = _Lane(target, device)
            lane.thread = threading.Thread(target=self._write, args=(lane,),
                                           name=f"restore-{target.path}")
            lane.thread.start()
            self.lanes.append(lane)
        return [lane.target for lane in self.lanes]

    def deliver(self, chunk: Chunk) -> None:
        """Queue the chunk for every writer that still needs it, then let go of it."""
        for lane in self.lanes:
            if chunk.offset in lane.target.todo:
                self._put(lane, chunk)
        chunk.release()

    def _put(self, lane: _Lane, chunk: Chunk | None) -> None:
        """Queue a chunk, held for the lane's writer; a full queue waits (back-pressure), a
        failed target is skipped. The end (None) waits for room while the writer lives: a
        failed target's writer drains its queue until it comes."""
        target = lane.target
        if chunk is not None:
            if chunk.offset >= target.size or target.failed:
                return
            chunk.hold()
        while True:
            try:
                lane.queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                writer_gone = lane.thread is not None and not lane.thread.is_alive()
                if writer_gone or (target.failed and chunk is not None):
                    if chunk is not None:
                        chunk.release()
                    return

    def _write(self, lane: _Lane) -> None:
        """The writer thread: drain the queue onto the device, syncing every checkpoint."""
        target, device = lane.target, lane.device
        flight = _InFlight(target)
        last = time.monotonic()
        ended = False  # the end (None) was taken from the queue
        try:
            while (chunk := lane.queue.get()) is not None:
                size = min(chunk.length, target.size - chunk.offset)
                flight.send(functools.partial(self._put_chunk, device, chunk,
                                              target.span.dest + chunk.offset, size),
                            chunk.offset, size)
                if time.monotonic() - last >= self.checkpoint:
                    self._sync(lane, flight)
                    last = time.monotonic()
                elif target.written is not None and flight.unsynced >= FOLLOW_SYNC:
                    self._sync(lane, flight, save=False)
            ended = True
            self._sync(lane, flight)
            device.reread_partitions()
        except OSError as exc:
            target.fail(write_error(target.path, exc, "cannot write to"))
        except DestinationError as exc:
            target.fail(str(exc))
        finally:
            flight.close()
            device.close()
            if target.written is not None:
                target.written.end()
            while target.failed and not ended and (chunk := lane.queue.get()) is not None:
                chunk.release()  # drain, so the reader is never blocked by a dropped target

    def _put_chunk(self, device: BlockTarget, chunk: Chunk, where: int, size: int) -> None:
        """Runs on a lane's write thread: the chunk's bytes (or zeros) at `where`."""
        try:
            if not chunk.is_hole:
                device.write(where, chunk.view(size))
            elif self.skip_holes:
                device.zero(where, size)
            else:
                device.write_zeros(where, size)
        finally:
            chunk.release()

    @staticmethod
    def _sync(lane: _Lane, flight: _InFlight, save: bool = True) -> None:
        """Every write sent completed, then fsync, then claim the ranges: the map never claims
        what is not durable. The map file is saved at checkpoints only; a sync between them
        moves the watermark."""
        pending, target = flight.drain(), lane.target
        if pending:
            lane.device.sync()
            for offset, length in pending:
                target.rmap.set(offset, length, FINISHED)
            if target.written is not None:  # the chunks go in order: durable up to here
                target.written.advance(pending[-1][0] + pending[-1][1])
        if save:
            target.save_map()


class Pipeline(Writers):
    """Image bytes [start, start + length) decoded once and fed, in order, to every
    target's writer."""

    def __init__(self, image: str, image_format: str, start: int,
                 allocated: list[tuple[int, int]], *, hashing: bool, skip_holes: bool,
                 checkpoint: float, threads: int) -> None:
        super().__init__(skip_holes=skip_holes, checkpoint=checkpoint)
        self.image_offset, self.allocated, self.hashing = start, allocated, hashing
        self.decoders = Decoders(image, image_format, threads)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        super().__exit__(kind, error, trace)
        self.decoders.close()

    def chunks(self, length: int, every: bool) -> Iterator[Chunk]:
        """The decoded chunks, in order; those no writer needs are skipped unless `every`."""
        def jobs() -> Iterator[Callable[[], Chunk]]:
            for offset, size in plan(length):
                if every or any(offset in lane.target.todo for lane in self.lanes):
                    yield functools.partial(self._decode, offset, size)

        return self.decoders.stream(jobs())

    def _decode(self, offset: int, size: int) -> Chunk:
        """Runs in a decoder thread: the copy into the shared buffer and the digests are
        done here, in parallel, and not by the one thread that feeds the targets."""
        if self._is_hole(self.image_offset + offset, size):
            return Chunk(offset, size, zero_chunk_digest(size) if self.hashing else None)
        buffer = self.pool.take()
        view = memoryview(buffer)[:size]
        damaged = self.decoders.read_into(self.image_offset + offset, view)
        digest = chunk_digest(view) if self.hashing else None
        view.release()
        return Chunk(offset, size, digest, buffer, self.pool, damaged)

    def _is_hole(self, offset: int, length: int) -> bool:
        """Whether image bytes [offset, offset+length) hold no allocated data."""
        runs = self.allocated
        i = bisect.bisect_right(runs, (offset, float("inf"))) - 1
        if i >= 0 and runs[i][0] + runs[i][1] > offset:
            return False
        return i + 1 >= len(runs) or runs[i + 1][0] >= offset + length
