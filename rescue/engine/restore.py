"""Restore an image onto one or many disks: checked before, written once-read, verified after.

The image is read once, in chunks, by a small pool of decoders (qcow2 and .img.zst decoding is
CPU work that runs in parallel threads); every chunk goes, in order, into one bounded queue per
target, and one writer thread per target drains its queue. A decoder copies its chunk once into
a page-aligned buffer (and hashes it, when verifying), and every target's writer hands that same
buffer to an O_DIRECT write, so one more target costs its writes and no more copies or hashing
(the writes release the GIL). A slow target fills its queue and so
slows the reader, and with it the others, but memory never grows past the queues. A target that
fails is dropped with its reason while the others finish.

Durability follows the imaging rule: a range is marked written ('+') in the target's mapfile only
after an fsync of the target, so a restore interrupted at any moment (even `kill -9`) continues
where the last checkpoint left it when the same command runs again.

Damaged images: every byte goes through the image's integrity gate (formats/integrity.py), the
same checks `rescue verify` makes. Opening the image reads its structure (qcow2 tables against
their refcounts, the zstd seek table against the frames) and the partition table before anything
is written; an unreadable table stops the restore there. While restoring, a cluster or frame that
fails its checksum is written as zeros and its range recorded, so every target still gets the
rest of the image; the fingerprint of the whole image is compared with the manifest's at the
end. Damage of any kind makes the outcome "damaged", never "restored": the read-back confirms
only that the targets hold what was decoded. The full pre-check (`check_image`) runs the gate
over the whole image first, at the cost of one more read of it, and writes nothing if it fails.

Holes: by default unallocated image areas are written as zeros, so each target equals the image
byte for byte. With `skip_holes`, whole-hole chunks are not sent as data: the target is told to
zero them itself (BLKZEROOUT), which thin, flash and loop storage do without transferring zeros
and which still reads back as zeros, so the result and its verification are the same.

Sizes: a target smaller than the image is refused unless the image holds a partition table and
every partition fits; then only [0, end of the last partition) is restored and the table is made
to fit (GPT: `sgdisk -e`; DOS: the extended container is cut to the disk). A GPT image onto a
larger disk gets its backup header and table moved to the end of the target (`sgdisk -e`).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import functools
import hashlib
import mmap
import os
import queue
import re
import stat
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from rescue.devices import safety
from rescue.devices.discover import BlockTree, find
from rescue.devices.locks import Locks
from rescue.engine.jobs import JobControl, RateMeter
from rescue.errors import (
    DamagedImageError,
    DestinationError,
    FormatError,
    RefusedError,
    UsageError,
)
from rescue.formats import mapfile
from rescue.formats.base import ImageReader, Ranges
from rescue.formats.fingerprint import Fingerprint, chunk_digests, zero_chunk_digests
from rescue.formats.image import detect_format, open_reader
from rescue.formats.integrity import ImageGate, Verdict, read_checked
from rescue.fs.partitions import PartitionTable, read_partition_table
from rescue.io.source import LOST_ERRORS
from rescue.rangemap import FINISHED, NON_TRIED, RangeMap
from rescue.units import human_size

CHUNK = 4 << 20  # unit of reading, hashing, writing and verifying
QUEUE_CHUNKS = 6  # per target: at most this many chunks wait to be written
GPT_ENTRIES_SECTORS = 32  # 128 entries of 128 bytes at 512-byte sectors

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKZEROOUT = 0x127F  # _IO(0x12, 127): the device zeroes a range itself
BLKRRPART = 0x125F  # _IO(0x12, 95): re-read the partition table


@dataclass(frozen=True)
class RestoreRequest:
    image: str
    targets: tuple[str, ...]
    partition: int | None = None  # restore only this partition of a whole-disk image
    verify: bool = True
    skip_holes: bool = False
    force: bool = False
    map_dir: str | None = None  # default: $XDG_STATE_HOME/rescue/restore
    check_image: bool = False  # decode the whole image before writing anything
    checkpoint: float = 5.0  # seconds between fsync + map save on each target
    command_line: str = ""
    image_format: str | None = None  # --format; detected from the image when None

    def to_argv(self) -> list[str]:
        """The `rescue restore` command that starts (or continues) this restore: what differs
        from the defaults."""
        argv = ["rescue", "restore", self.image, *self.targets]
        if self.image_format is not None:
            argv += ["--format", self.image_format]
        if self.partition is not None:
            argv += ["--partition", str(self.partition)]
        for flag, on in (("--no-verify", not self.verify), ("--skip-holes", self.skip_holes),
                         ("--check-image", self.check_image), ("--force", self.force)):
            if on:
                argv.append(flag)
        if self.map_dir is not None:
            argv += ["--map-dir", self.map_dir]
        if self.checkpoint != RestoreRequest.checkpoint:
            argv += ["--checkpoint", f"{self.checkpoint:g}"]
        return argv


@dataclass(frozen=True)
class Span:
    """What goes onto a target: image bytes [offset, offset + length) to target offset 0."""

    offset: int
    length: int
    mode: str  # "whole", "partition", "fit" (a smaller disk, table made to fit)
    table: str | None  # "gpt" or "dos" when the restored bytes start with that table


@dataclass(frozen=True)
class TargetCheck:
    """The verdict on one target, before anything is written."""

    target: str
    name: str  # kernel name, e.g. sdb; typed to confirm
    serial: str | None
    model: str | None
    size: int
    span: Span | None  # None when the target cannot take the image
    verdict: safety.Verdict

    def allowed(self, force: bool = False) -> bool:
        return self.span is not None and self.verdict.allowed(force)

    def problem(self, force: bool = False) -> str | None:
        """One line naming every reason against this target, or None."""
        blocking = self.verdict.blocking(force)
        if not blocking:
            return None
        hint = ("use --force to override" if all(r.overridable for r in blocking)
                else "--force cannot override this")
        return (f"refusing to write to {self.target}: "
                f"{'; '.join(r.message for r in blocking)} ({hint})")

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "name": self.name, "serial": self.serial,
                "model": self.model, "size": self.size,
                "mode": self.span.mode if self.span else None,
                "length": self.span.length if self.span else None,
                "reasons": [r.message for r in self.verdict.reasons]}


@dataclass(frozen=True)
class TargetProgress:
    """One target at one moment; phase: waiting, writing, verifying, fixing-table, done,
    mismatch, failed, incomplete, interrupted."""

    target: str
    phase: str
    size: int  # bytes restored onto this target
    written: int  # bytes durable on the target (earlier runs included)
    verified: int
    current_rate: float
    average_rate: float
    eta: float | None
    mismatches: tuple[tuple[int, int], ...] = ()
    error: str | None = None
    map_path: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "phase": self.phase, "size": self.size,
                "written": self.written, "verified": self.verified,
                "current_rate": round(self.current_rate),
                "average_rate": round(self.average_rate),
                "eta": None if self.eta is None else round(self.eta, 1),
                "mismatches": [list(m) for m in self.mismatches], "error": self.error,
                "mapfile": self.map_path}


@dataclass(frozen=True)
class RestoreProgress:
    image: str
    phase: str  # checking, restoring, verifying, finished
    elapsed: float
    paused: bool
    targets: tuple[TargetProgress, ...]

    def as_dict(self) -> dict[str, object]:
        return {"image": self.image, "phase": self.phase, "elapsed": round(self.elapsed, 3),
                "paused": self.paused, "targets": [t.as_dict() for t in self.targets]}


@dataclass(frozen=True)
class RestoreResult:
    outcome: str  # restored, damaged (the image; the rest is restored), mismatch, failed,
    # interrupted
    targets: tuple[TargetProgress, ...]
    image: Verdict  # what the image's checks found, and what they could check


class _BufferPool:
    """Page-aligned chunk buffers, reused: a fresh anonymous mapping costs a page fault and a
    page zeroing per 4 KiB, more than the copy that fills it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        with self.lock:
            if self.free:
                return self.free.pop()
        return _aligned_buffer(CHUNK)

    def give(self, buffer: mmap.mmap) -> None:
        with self.lock:
            self.free.append(buffer)


class _Chunk:
    """One decoded chunk, read-only and shared by every target's writer, so N targets cost one
    copy and not N. Its buffer returns to the pool when the last holder releases it."""

    __slots__ = ("_buffer", "_holders", "_pool", "damaged", "digest", "length", "offset")

    def __init__(self, offset: int, length: int, digest: bytes | None,
                 buffer: mmap.mmap | None = None, pool: _BufferPool | None = None,
                 damaged: Ranges | None = None) -> None:
        self.offset = offset  # within the span
        self.length = length
        self.digest = digest  # its 1 MiB pieces' SHA-256s (fingerprint.chunk_digests) or None
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


def default_map_dir() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "rescue", "restore")


def _ioctl_u64(fd: int, request: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, request, buf)
    return struct.unpack("Q", buf)[0]


def _device_geometry(path: str) -> tuple[int, int]:
    """(size in bytes, logical sector size) of a block device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = _ioctl_u64(fd, BLKGETSIZE64)
        sector = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    finally:
        os.close(fd)
    return size, sector


def _merge(ranges: list[tuple[int, int]], offset: int, length: int) -> None:
    if ranges and ranges[-1][0] + ranges[-1][1] == offset:
        ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
    else:
        ranges.append((offset, length))


def _aligned_buffer(size: int) -> mmap.mmap:
    return mmap.mmap(-1, max(size, mmap.PAGESIZE))  # page aligned, as O_DIRECT wants


class _Decoders:
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
        try:
            data, damaged = read_checked(self._reader(), offset, length)
        except OSError as exc:
            raise FormatError(f"cannot read image {self.path} at {offset:#x}: "
                              f"{exc.strerror}") from None
        if len(data) != length:
            raise FormatError(f"image {self.path} ends at {offset + len(data):#x}, "
                              f"before its size")
        return data, damaged

    def stream(self, jobs: Iterator[tuple[int, Callable[[], _Chunk]]]
               ) -> Iterator[tuple[int, _Chunk]]:
        pending: deque[tuple[int, Future[_Chunk]]] = deque()
        for key, work in jobs:
            pending.append((key, self.pool.submit(work)))
            if len(pending) >= self.window:
                key, future = pending.popleft()
                yield key, future.result()
        while pending:
            key, future = pending.popleft()
            yield key, future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for reader in self.readers:
            reader.close()


class _Target:
    """One target: its queue, its writer thread, its map and its counters."""

    def __init__(self, check: TargetCheck, map_path: str, command_line: str,
                 verify: bool) -> None:
        assert check.span is not None
        self.path, self.span, self.map_path = check.target, check.span, map_path
        self.command_line, self.verify = command_line, verify
        self.size = check.span.length
        self.sector = _device_geometry(self.path)[1]
        self.queue: queue.Queue[_Chunk | None] = queue.Queue(QUEUE_CHUNKS)
        self.rmap = self._load_map()
        self.phase = "waiting"
        self.error: str | None = None
        self.mismatches: list[tuple[int, int]] = []
        self.verified = 0
        self.meter = RateMeter()
        self.started = time.time()
        self.thread: threading.Thread | None = None

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

    def todo(self, chunks: Iterator[tuple[int, int]]) -> set[int]:
        """Offsets of the chunks not yet durable on this target (decided before writing, so
        the reader never looks at a map a writer is changing)."""
        return {offset for offset, length in chunks
                if self.rmap.state_bytes(offset, offset + length).get(FINISHED, 0) < length}

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            self.phase = "failed"

    def progress(self) -> TargetProgress:
        now = time.monotonic()
        written = self.rmap.totals()[FINISHED]
        rate = self.meter.current(now)
        verify_total = self.size if self.verify else 0
        remaining = (self.size - written) + (verify_total - self.verified)
        active = self.phase in ("writing", "verifying", "waiting")
        eta = remaining / rate if rate > 0 and active else None
        return TargetProgress(self.path, self.phase, self.size, written, self.verified, rate,
                              self.meter.average(now), eta, tuple(self.mismatches), self.error,
                              self.map_path)


class _Writer:
    """Writes chunks to one block device: O_DIRECT from an aligned buffer where the device
    allows it, buffered otherwise; zeroes holes by BLKZEROOUT when asked to."""

    def __init__(self, path: str, sector: int) -> None:
        self.path, self.sector = path, sector
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            self.buffered = os.open(path, flags | os.O_EXCL)
        except OSError as exc:
            raise DestinationError(_write_error(path, exc, "cannot open")) from None
        try:
            self.direct: int | None = os.open(path, flags | os.O_DIRECT)
        except OSError:
            self.direct = None
        self.zeros = _aligned_buffer(CHUNK)

    def write(self, offset: int, data: memoryview | None, length: int) -> None:
        """Write `data` (or `length` zeros when it is None) at `offset`; `data` must start
        page aligned, as chunk buffers do, for O_DIRECT to take it without a copy."""
        view = memoryview(self.zeros)[:length] if data is None else data
        aligned = self.direct is not None and length % self.sector == 0
        fd = self.direct if aligned and self.direct is not None else self.buffered
        done = 0
        while done < length:
            written = os.pwritev(fd, [view[done:]], offset + done)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written

    def zero(self, offset: int, length: int) -> None:
        """Let the device zero the range; write zeros where it cannot."""
        if length % self.sector == 0:
            try:
                fcntl.ioctl(self.buffered, BLKZEROOUT, struct.pack("QQ", offset, length))
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
                    raise
        self.write(offset, None, length)

    def sync(self) -> None:
        os.fsync(self.buffered)

    def close(self) -> None:
        for fd in (self.direct, self.buffered):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _write_error(path: str, exc: OSError, what: str) -> str:
    if exc.errno in LOST_ERRORS:
        return f"{path} vanished ({exc.strerror})"
    if exc.errno == errno.EBUSY:
        return f"{what} {path}: it is in use (mounted or claimed by the kernel)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{what} {path}: it is read-only ({exc.strerror})"
    return f"{what} {path}: {exc.strerror}"


class RestoreJob:
    """A restore of one image onto its targets. `check()` judges without writing; `run()`
    writes, verifies and fixes tables; `progress()` may be called from any thread."""

    def __init__(self, request: RestoreRequest, control: JobControl | None = None) -> None:
        if not request.targets:
            raise UsageError("no target given")
        self.request = request
        self.control = control or JobControl()
        self.started = time.monotonic()
        self.phase = "checking"
        self.image = os.path.abspath(request.image)
        if not os.path.exists(self.image):
            raise UsageError(f"image {request.image} does not exist")
        try:
            self._inspect_image()
        except FormatError as exc:
            named = request.image in str(exc) or self.image in str(exc)
            raise FormatError(str(exc) if named else f"{request.image}: {exc}") from None
        self.source = self._source_range()
        self._read_length = 0  # the longest span of any target: what is read from the image
        self._targets: list[_Target] = []
        self._checks: tuple[TargetCheck, ...] | None = None

    # ---- before writing ------------------------------------------------------------------

    def _inspect_image(self) -> None:
        self.image_format = detect_format(self.image, self.request.image_format)
        reader = open_reader(self.image, self.image_format)
        try:
            self.size = reader.size
            self.gate = ImageGate(self.image, reader)  # structure and manifest checked here
            self.table = self._read_table(reader, self._image_sector_size())
            self.sector = self.table.sector_size
            self.allocated = self._allocated(reader)
            if self.request.check_image:
                self._check_whole_image(reader)
        finally:
            reader.close()

    def _image_sector_size(self) -> int:
        """The source disk's logical sector size, as the image's manifest recorded it."""
        manifest = self.gate.manifest
        value = manifest.source.get("logical_sector_size") if manifest else None
        return value if isinstance(value, int) and value in (512, 1024, 2048, 4096) else 512

    def _read_table(self, reader: ImageReader, sector_size: int) -> PartitionTable:
        table = read_partition_table(reader, sector_size=sector_size)
        if self.request.partition is not None and table.kind is None:
            raise UsageError(f"{self.request.image} holds no partition table; --partition "
                             "needs a whole-disk image")
        return table

    def _allocated(self, reader: ImageReader) -> list[tuple[int, int]]:
        """Allocated runs of the image; walking them reads every qcow2 table or the seek
        table, so structural damage shows before anything is written."""
        runs: list[tuple[int, int]] = []
        for offset, length, allocated in reader.extents():
            if allocated:
                _merge(runs, offset, length)
        return runs

    def _check_whole_image(self, reader: ImageReader) -> None:
        """Every check `verify` makes, before a byte is written."""
        verdict = self.gate.check_all(reader)
        if not verdict.intact:
            raise DamagedImageError(f"image {self.request.image} is damaged ({verdict.brief()}); "
                                    "nothing was written")

    def _source_range(self) -> tuple[int, int]:
        number = self.request.partition
        if number is None:
            return 0, self.size
        try:
            entry = self.table.find(number)
        except FormatError:
            have = ", ".join(str(p.number) for p in self.table.file_systems) or "none"
            raise UsageError(f"{self.request.image} has no partition {number} "
                             f"(partitions: {have})") from None
        if entry.is_container:
            raise UsageError(f"partition {number} of {self.request.image} is an extended "
                             "container, not a file system")
        return entry.start, entry.size

    def _partitions_end(self) -> int:
        """Where the last partition (not an extended container) ends, in bytes."""
        first_usable = (2 + GPT_ENTRIES_SECTORS) * self.sector if self.table.kind == "gpt" \
            else self.sector
        return max([first_usable, *(p.end for p in self.table.file_systems)])

    def _span_for(self, target: str, target_size: int, target_sector: int
                  ) -> tuple[Span | None, safety.Reason | None]:
        """What this target receives, or the reason it cannot take the image."""
        start, length = self.source
        partition = self.request.partition is not None
        table = None if partition else self.table.kind
        if table and target_sector != self.sector:
            return None, safety.Reason("sector-size", f"{target} has {target_sector}-byte "
                                       f"sectors, the image's partition table {self.sector}-byte "
                                       "ones", False)
        if target_size >= length:
            return Span(start, length, "partition" if partition else "whole", table), None
        holds = f"{target} is too small: it holds {human_size(target_size)} ({target_size} bytes)"
        needed = f"{human_size(length)} ({length} bytes)"
        if partition or not table:
            what = f"partition {self.request.partition}" if partition else "the image"
            return None, safety.Reason("too-small", f"{holds}, {what} needs {needed}", False)
        end = self._partitions_end()
        backup = (1 + GPT_ENTRIES_SECTORS) * self.sector if table == "gpt" else 0
        if end + backup <= target_size:
            return Span(0, end, "fit", table), None
        return None, safety.Reason("too-small", f"{holds}, the image needs {needed} and its "
                                   f"partitions at least {human_size(end + backup)} "
                                   f"({end + backup} bytes)", False)

    def check(self) -> tuple[TargetCheck, ...]:
        """Per-target verdicts of the safety policy and the size rules; writes nothing."""
        tree = BlockTree.read()
        checks = []
        seen: dict[str, str] = {}
        for target in self.request.targets:
            checks.append(self._check_one(target, tree, seen))
        self._checks = tuple(checks)
        return self._checks

    def _check_one(self, target: str, tree: BlockTree, seen: dict[str, str]) -> TargetCheck:
        verdict = safety.check_write_target(target, protected=[self.image])
        reasons = list(verdict.reasons)
        size, span, name, serial, model = 0, None, os.path.basename(target), None, None
        try:
            is_block = stat.S_ISBLK(os.stat(target).st_mode)
        except OSError:
            is_block = False
        if not is_block and not reasons:
            reasons.append(safety.Reason("not-a-disk", f"{target} is not a block device", False))
        if is_block:
            kernel_name = tree.name_of_path(os.path.realpath(target))
            name = kernel_name or name
            for other_target, other in seen.items():
                if kernel_name and (other == kernel_name or tree.overlaps(kernel_name, other)):
                    reasons.append(safety.Reason(
                        "duplicate", f"{target} overlaps the target {other_target}", False))
            if kernel_name:
                seen[target] = kernel_name
            item = find(target)
            serial = getattr(item, "serial", None)
            model = getattr(item, "model", None)
            try:
                size, sector = _device_geometry(target)
            except OSError as exc:
                reasons.append(safety.Reason("not-writable", f"{target}: {exc.strerror}", False))
            else:
                span, problem = self._span_for(target, size, sector)
                if problem:
                    reasons.append(problem)
        return TargetCheck(target, name, serial, model, size, span,
                           replace(verdict, reasons=tuple(reasons)))

    def map_path(self, target: str, span: Span) -> str:
        """The target's mapfile: named after image, target and span, so the same command finds
        it again and a changed image does not."""
        info = os.stat(self.image)
        key = "\0".join(map(str, (self.image, info.st_size, info.st_mtime_ns,
                                  os.path.realpath(target), span.offset, span.length)))
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        folder = self.request.map_dir or default_map_dir()
        return os.path.join(folder, f"{os.path.basename(target)}-{digest}.map")

    # ---- writing -------------------------------------------------------------------------

    def run(self) -> RestoreResult:
        """Check, then restore every allowed target; raise RefusedError if any is refused."""
        checks = self._checks or self.check()
        refused = [c.problem(self.request.force) for c in checks
                   if not c.allowed(self.request.force)]
        if refused:
            raise RefusedError(" | ".join(p for p in refused if p))
        with Locks() as held:  # no other job uses a target or its map while this one runs
            for check in checks:
                assert check.span is not None
                held.write(check.target)
                held.write(self.map_path(check.target, check.span))
            return self._restore(checks)

    def _restore(self, checks: tuple[TargetCheck, ...]) -> RestoreResult:
        folder = self.request.map_dir or default_map_dir()
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create map folder {folder}: {exc.strerror}") from None
        for check in checks:
            assert check.span is not None
            self._targets.append(_Target(check, self.map_path(check.target, check.span),
                                         self.request.command_line, self.request.verify))
        self._read_length = max(t.size for t in self._targets)
        self.phase = "restoring"
        digests: dict[int, bytes] = {}
        damage = None
        with safety.protect(self.image):
            try:
                self._write_all(digests)
            except FormatError as exc:
                damage = exc
            if damage is None and not self.control.cancelled.is_set() and self.request.verify:
                self.phase = "verifying"
                self._each_target(lambda t: self._verify(t, digests), "cannot read back")
            if damage is None and not self.control.cancelled.is_set():
                self._each_target(self._finish_table, "cannot write to")
        self.phase = "finished"
        return self._result(damage)

    def _each_target(self, work: Callable[[_Target], None], failing: str) -> None:
        """Run `work` on every live target at once; an I/O error fails that target with
        `failing` (what it could not do) and its reason."""
        threads = [threading.Thread(target=self._guarded, args=(work, t, failing), name=t.path)
                   for t in self._targets if not t.failed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    @staticmethod
    def _guarded(work: Callable[[_Target], None], target: _Target, failing: str) -> None:
        try:
            work(target)
        except OSError as exc:
            target.fail(_write_error(target.path, exc, failing))
        except (FormatError, DestinationError) as exc:
            target.fail(str(exc))

    def _plan(self, length: int) -> Iterator[tuple[int, int]]:
        for offset in range(0, length, CHUNK):
            yield offset, min(CHUNK, length - offset)

    def _is_hole(self, offset: int, length: int) -> bool:
        """Whether image bytes [offset, offset+length) hold no allocated data."""
        runs = self.allocated
        i = bisect.bisect_right(runs, (offset, float("inf"))) - 1
        if i >= 0 and runs[i][0] + runs[i][1] > offset:
            return False
        return i + 1 >= len(runs) or runs[i + 1][0] >= offset + length

    def _write_all(self, digests: dict[int, bytes]) -> None:
        """Read the image once and feed every target; the writers run in their own threads.
        With verification on, chunks already written by an earlier run are read too, only to
        learn their digests."""
        start, length = self.source[0], self._read_length
        todo = {t.path: t.todo(self._plan(t.size)) for t in self._targets}
        decoders = _Decoders(self.image, self.image_format, max(1, min(4, os.cpu_count() or 1)))
        pool = _BufferPool()
        writers = [t for t in self._targets if self._start_writer(t)]
        # the whole image goes through: its fingerprint can be compared with the manifest's
        fingerprint = Fingerprint() if (self.gate.fingerprinted and start == 0
                                        and length == self.size) else None
        hashing = self.request.verify or fingerprint is not None
        left = len(range(0, length, CHUNK))

        def decode(offset: int, size: int) -> _Chunk:
            """Runs in a decoder thread: the copy into the shared buffer and the digests are
            done here, in parallel, and not by the one thread that feeds the targets."""
            if self._is_hole(start + offset, size):
                return _Chunk(offset, size, zero_chunk_digests(size) if hashing else None)
            data, damaged = decoders.read(start + offset, size)
            buffer = pool.take()
            buffer[:size] = data
            digest = chunk_digests(data) if hashing else None
            return _Chunk(offset, size, digest, buffer, pool, damaged)

        def jobs() -> Iterator[tuple[int, Callable[[], _Chunk]]]:
            for offset, size in self._plan(length):
                if hashing or any(offset in todo[t.path] for t in writers):
                    yield offset, functools.partial(decode, offset, size)

        try:
            for offset, item in decoders.stream(jobs()):
                self.control.wait_if_paused()
                if self.control.cancelled.is_set() or all(t.failed for t in writers):
                    break  # with every target dropped, reading on would only cost time
                self.gate.record(item.damaged)
                left -= 1
                if item.digest is not None:
                    digests[offset] = item.digest
                    if fingerprint is not None:
                        fingerprint.add_chunk_digests(item.digest)
                for target in writers:
                    if offset in todo[target.path]:
                        self._deliver(target, item)
                item.release()
        finally:
            for target in writers:
                self._deliver(target, None)
            for target in writers:
                assert target.thread is not None
                target.thread.join()
            decoders.close()
        if fingerprint is not None and not left:
            self.gate.compare(fingerprint.hexdigest())

    def _deliver(self, target: _Target, item: _Chunk | None) -> None:
        """Queue a chunk, held for the target's writer; a full queue waits (back-pressure), a
        failed target is skipped."""
        if item is not None:
            if item.offset >= target.size or target.failed:
                return
            item.hold()
        while True:
            try:
                target.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if target.failed or (target.thread and not target.thread.is_alive()):
                    if item is not None:
                        item.release()
                    return

    def _start_writer(self, target: _Target) -> bool:
        try:
            writer = _Writer(target.path, target.sector)
        except DestinationError as exc:
            target.fail(str(exc))
            return False
        target.save_map()  # from here on the target is no longer what it was
        target.thread = threading.Thread(target=self._write_target, args=(target, writer),
                                         name=f"restore-{target.path}")
        target.phase = "writing"
        target.thread.start()
        return True

    def _write_target(self, target: _Target, writer: _Writer) -> None:
        pending: list[tuple[int, int]] = []
        last = time.monotonic()
        try:
            while (item := target.queue.get()) is not None:
                size = min(item.length, target.size - item.offset)
                try:
                    if item.is_hole and self.request.skip_holes:
                        writer.zero(item.offset, size)
                    else:
                        writer.write(item.offset, None if item.is_hole else item.view(size),
                                     size)
                finally:
                    item.release()
                target.meter.add(size, time.monotonic())
                _merge(pending, item.offset, size)
                if time.monotonic() - last >= self.request.checkpoint:
                    self._checkpoint(target, writer, pending)
                    last = time.monotonic()
            self._checkpoint(target, writer, pending)
            self._reread_partitions(writer)
        except OSError as exc:
            target.fail(_write_error(target.path, exc, "cannot write to"))
        except DestinationError as exc:
            target.fail(str(exc))
        finally:
            writer.close()
            while target.failed and (item := target.queue.get()) is not None:
                item.release()  # drain, so the reader is never blocked by a dropped target

    def _checkpoint(self, target: _Target, writer: _Writer, pending: list[tuple[int, int]]
                    ) -> None:
        """fsync first, then claim the ranges: the map never claims what is not durable."""
        if not pending:
            return
        writer.sync()
        for offset, length in pending:
            target.rmap.set(offset, length, FINISHED)
        pending.clear()
        target.save_map()

    @staticmethod
    def _reread_partitions(writer: _Writer) -> None:
        """Ask the kernel to read the new table; devices without partition scanning refuse."""
        with contextlib.suppress(OSError):
            fcntl.ioctl(writer.buffered, BLKRRPART)

    # ---- after writing -------------------------------------------------------------------

    def _verify(self, target: _Target, digests: dict[int, bytes]) -> None:
        """Read the target back (O_DIRECT, so the page cache cannot answer) and compare its
        chunks' digests with the image's; a differing chunk is compared sector by sector."""
        if target.rmap.totals()[FINISHED] < target.size:
            target.phase = "incomplete"
            return
        target.phase = "verifying"
        target.meter = RateMeter()
        fd, direct = _open_for_reading(target.path)
        view = memoryview(_aligned_buffer(CHUNK))
        image: ImageReader | None = None
        try:
            for offset, size in self._plan(target.size):
                if self.control.cancelled.is_set():
                    return
                self.control.wait_if_paused()
                request = -(-size // target.sector) * target.sector if direct else size
                data = view[:min(os.preadv(fd, [view[:request]], offset), size)]
                whole_chunk = size == min(CHUNK, self._read_length - offset)
                if not whole_chunk or chunk_digests(data) != digests.get(offset):
                    image = image or open_reader(self.image, self.image_format)
                    expected = read_checked(image, self.source[0] + offset, size)[0]
                    self._compare(target, offset, bytes(data), expected)
                target.verified += size
                target.meter.add(size, time.monotonic())
        finally:
            os.close(fd)
            if image is not None:
                image.close()
        if target.mismatches:
            for offset, length in target.mismatches:
                target.rmap.set(offset, length, NON_TRIED)  # written again on the next run
            target.save_map()
            target.phase = "mismatch"

    @staticmethod
    def _compare(target: _Target, offset: int, written: bytes, expected: bytes) -> None:
        """Record the exact sectors that differ."""
        if written == expected:
            return
        step = 512
        for pos in range(0, len(expected), step):
            if written[pos:pos + step] != expected[pos:pos + step]:
                length = min(step, len(expected) - pos)
                _merge(target.mismatches, offset + pos, length)

    def _finish_table(self, target: _Target) -> None:
        """Move the GPT backup to the end of the target, or fit a DOS table; then check it."""
        if target.phase in ("mismatch", "incomplete") or target.span.table is None:
            self._done(target)
            return
        target_size = _device_geometry(target.path)[0]
        if target.span.table == "gpt" and target_size != self.size:
            target.phase = "fixing-table"
            # an interrupted fix is redone from the image: the table areas are written again
            for offset, length in self.table.table_areas:
                target.rmap.set(offset, length, NON_TRIED)
            target.save_map()
            _tool(["sgdisk", "-e", target.path], target.path)
            report = _tool(["sgdisk", "-v", target.path], target.path)
            if "No problems found" not in report:
                raise DestinationError(f"{target.path}: GPT still has problems after moving its "
                                       f"backup: {_first_problem(report)}")
        elif target.span.table == "dos" and target.span.mode == "fit":
            target.phase = "fixing-table"
            self._fit_dos(target, target_size)
        self._done(target)

    def _fit_dos(self, target: _Target, target_size: int) -> None:
        """Cut an extended container that reaches past the smaller target to its end."""
        disk_end = target_size // self.sector
        for entry in self.table.partitions:
            first = entry.start // self.sector
            if entry.is_container and (entry.end - 1) // self.sector >= disk_end:
                _tool(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "-N",
                       str(entry.number), target.path], target.path,
                      stdin=f"{first},{disk_end - first}\n")
        _tool(["sfdisk", "--verify", target.path], target.path)

    @staticmethod
    def _done(target: _Target) -> None:
        if target.phase in ("mismatch", "incomplete"):
            return
        target.rmap.set(0, target.size, FINISHED)
        target.phase = "done"
        with contextlib.suppress(OSError):
            os.unlink(target.map_path)
            os.unlink(f"{target.map_path}.bak")

    def _result(self, damage: FormatError | None) -> RestoreResult:
        cancelled = self.control.cancelled.is_set()
        for target in self._targets:
            if target.failed:
                continue
            if damage is not None:
                target.phase = "incomplete"
                target.error = f"{damage}; target incomplete"
            elif cancelled and target.phase not in ("done", "mismatch"):
                target.phase = "interrupted"
        if damage is not None:
            raise FormatError(f"{damage}; nothing written past that point, targets "
                              f"{', '.join(t.path for t in self._targets)} are incomplete "
                              "(resumable once the image is repaired)")
        progress = tuple(t.progress() for t in self._targets)
        phases = {p.phase for p in progress}
        verdict = self.gate.verdict().within(self.source[0], self._read_length)
        outcome = ("failed" if "failed" in phases else "mismatch" if "mismatch" in phases
                   else "interrupted" if cancelled else "restored" if verdict.intact
                   else "damaged")
        return RestoreResult(outcome, progress, verdict)

    def progress(self) -> RestoreProgress:
        targets = tuple(t.progress() for t in self._targets) or tuple(
            TargetProgress(c.target, "waiting", c.span.length if c.span else 0, 0, 0, 0.0,
                           0.0, None) for c in self._checks or ())
        return RestoreProgress(self.request.image, self.phase,
                               time.monotonic() - self.started, self.control.paused, targets)


def _open_for_reading(path: str) -> tuple[int, bool]:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC), True
    except OSError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False


def _tool(args: list[str], target: str, stdin: str | None = None) -> str:
    """Run a partition tool; its failure is the target's one-line error."""
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise DestinationError(f"{args[0]} is not installed; it is needed to fix the partition "
                               f"table of {target}") from None
    if done.returncode:
        raise DestinationError(f"{' '.join(args[:2])} failed on {target}: "
                               f"{_first_problem(done.stderr + done.stdout)}")
    return done.stdout


def _first_problem(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    problems = [line for line in lines if re.match(r"(Problem|Warning|Error|Caution)", line)]
    return (problems or lines or ["no output"])[0]
