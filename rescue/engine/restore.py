"""Restore an image onto one or many disks: checked before, written once-read, verified after.

The story of a restore: the image is opened and its structure and partition table checked;
every target is judged by the write-safety policy and the size rules; the image is read once
and written onto every target in parallel (engine/pipeline.py); each target is read back and
compared with the image (engine/readback.py: while it is written, where the disk does not
spin); a partition table restored onto a disk of another size is made to fit it
(fs/fitting.py). A target that fails is dropped with its reason while the others finish.

Durability follows the imaging rule: a range is marked written ('+') in the target's mapfile only
after an fsync of the target, so a restore interrupted at any moment (even `kill -9`) continues
where the last checkpoint left it when the same command runs again.

Damaged images: every byte goes through the image's integrity gate (formats/integrity.py), the
same checks `rescue verify` makes. Opening the image reads its structure (qcow2 tables against
their refcounts, the zstd seek table against the frames) and the partition table before anything
is written; an unreadable table stops the restore there. While restoring, a cluster or frame that
fails its checksum is written as zeros and its range recorded, so every target still gets the
rest of the image; the digest of the whole image (BLAKE3, hashed on a thread of its own as the
chunks go by) is compared with the manifest's at the end. Damage of any kind makes the outcome
"damaged", never "restored": the read-back confirms only that the targets hold what was decoded.
The full pre-check (`check_image`) runs the gate over the whole image first, at the cost of one
more read of it, and writes nothing if it fails.

Holes: by default unallocated image areas are written as zeros, so each target equals the image
byte for byte. With `skip_holes`, whole-hole chunks are not sent as data: the target is told to
zero them itself (BLKZEROOUT), which thin, flash and loop storage do without transferring zeros
and which still reads back as zeros, so the result and its verification are the same.

Sizes: a disk of another size whose partitions may change size gets them laid out anew
(engine/relayout.py: grown, or shrunk in a layer over the image). Otherwise a smaller target
takes the image when every partition fits: [0, end of the last partition) is restored and the
table made to fit (GPT: `sgdisk -e`; DOS: the extended container is cut to the disk); a GPT
onto a larger disk gets its backup header and table moved to the end (`sgdisk -e`).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from rescue.devices import safety
from rescue.devices.locks import Locks
from rescue.engine import relayout
from rescue.engine.choices import READ_BACKS, default_map_dir
from rescue.engine.jobs import JobControl
from rescue.engine.pipeline import CHUNK, Chunk, Pipeline, Span, Target
from rescue.engine.readback import Digests, ReadBack, follows_writer
from rescue.engine.relayout import Planner
from rescue.engine.restorestate import RestoreProgress, TargetProgress, merged
from rescue.errors import (
    DamagedImageError,
    DestinationError,
    ExitCode,
    FormatError,
    RefusedError,
    UsageError,
)
from rescue.formats.base import DamagedData, ImageReader
from rescue.formats.fingerprint import BackgroundHasher
from rescue.formats.image import default_threads, detect_format, open_reader, require_threads
from rescue.formats.integrity import ImageGate, Verdict, add_range
from rescue.fs import fitting
from rescue.fs.layout import LayoutPlan, parse_layout
from rescue.fs.partitions import PartitionTable, read_partition_table
from rescue.io.blockdev import geometry, write_error
from rescue.rangemap import FINISHED, NON_TRIED
from rescue.units import human_size


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
    threads: int | None = None  # decoding threads; None: one per CPU this process may use
    layout: tuple[str, ...] = ()  # --layout: partition sizes on a disk of another size
    read_back: str = "auto"  # --read-back: during the writing, after it, or as the disk suits

    def __post_init__(self) -> None:
        """Refuse what no restore could use, whoever asks; NaN fails the comparison too."""
        if not self.checkpoint >= 0:
            raise UsageError("--checkpoint must not be negative")
        require_threads(self.threads)
        parse_layout(list(self.layout))
        if self.read_back not in READ_BACKS:
            raise UsageError(f"--read-back must be one of {', '.join(READ_BACKS)}")

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
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        for spec in self.layout:
            argv += ["--layout", spec]
        if self.read_back != RestoreRequest.read_back:
            argv += ["--read-back", self.read_back]
        return argv


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
    plan: LayoutPlan | None = None  # the partitions laid out anew for a disk of another size

    def allowed(self, force: bool = False) -> bool:
        return self.span is not None and self.verdict.allowed(force)

    def problem(self, force: bool = False) -> str | None:
        """One line naming every reason against this target, or None."""
        return self.verdict.refusal(force)

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "name": self.name, "serial": self.serial,
                "model": self.model, "size": self.size,
                "mode": self.span.mode if self.span else None,
                "length": self.span.length if self.span else None,
                "reasons": [r.message for r in self.verdict.reasons],
                "plan": self.plan.as_dict() if self.plan else None}


class RestoreOutcome(enum.StrEnum):
    """How a restore ended; its value is the word that JSON output and logs show."""

    RESTORED = "restored"
    DAMAGED = "damaged"  # the image is damaged; the targets hold the rest of it
    MISMATCH = "mismatch"  # a target read back differently; running again rewrites that
    FAILED = "failed"  # a target could not be written; running again continues it
    INTERRUPTED = "interrupted"  # cancelled; running again continues

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    RestoreOutcome.RESTORED: ExitCode.OK,
    RestoreOutcome.DAMAGED: ExitCode.UNREADABLE,
    RestoreOutcome.MISMATCH: ExitCode.UNREADABLE,
    RestoreOutcome.FAILED: ExitCode.DESTINATION,
    RestoreOutcome.INTERRUPTED: ExitCode.INTERRUPTED,
}


@dataclass(frozen=True)
class RestoreResult:
    outcome: RestoreOutcome
    targets: tuple[TargetProgress, ...]
    image: Verdict  # what the image's checks found, and what they could check


class RestoreJob:
    """A restore of one image onto its targets. `check()` judges without writing; `run()`
    writes, verifies and fixes tables; `progress()` may be called from any thread."""

    def __init__(self, request: RestoreRequest, control: JobControl | None = None) -> None:
        if not request.targets:
            raise UsageError("no target given")
        self.request = request
        self.control = control or JobControl()
        self.started = self.control.clock.now()
        self._ended: float | None = None  # job time when run() returned: progress stays put
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
        self.planner = Planner(self.image, self.image_format, self.size, self.table,
                               request.layout, request.partition)
        self._targets: list[Target] = []
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
                add_range(runs, offset, length)
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
        smallest = fitting.smallest_disk(self.table)
        if smallest <= target_size:
            return Span(0, fitting.partitions_end(self.table), "fit", table), None
        return None, safety.Reason("too-small", f"{holds}, the image needs {needed} and its "
                                   f"partitions at least {human_size(smallest)} "
                                   f"({smallest} bytes)", False)

    def check(self) -> tuple[TargetCheck, ...]:
        """Per-target verdicts of the safety policy and the size rules; writes nothing."""
        self._checks = tuple(self._fit(disk) for disk in safety.check_disk_targets(
            self.request.targets, protected=[self.image]))
        return self._checks

    def relay_out(self, sizes: tuple[str, ...]) -> tuple[TargetCheck, ...]:
        """The targets judged with other --layout sizes; the image is not measured again."""
        self.request, self.planner = replace(self.request, layout=sizes), self.planner.relaid(sizes)
        return self.check()

    def _fit(self, disk: safety.DiskTarget) -> TargetCheck:
        """The policy's verdict on a disk, with the size rules' reason added when the image
        does not fit it."""
        span, problem, plan = None, None, None
        if disk.sector is not None:
            span, problem = self._span_for(disk.path, disk.size, disk.sector)
            planned = None if self.request.partition is not None else self.planner.planned(
                disk.path, disk.size, problem)
            if planned is not None:
                span, plan, problem = planned
        verdict = disk.verdict if problem is None else replace(
            disk.verdict, reasons=(*disk.verdict.reasons, problem))
        return TargetCheck(disk.path, disk.name, disk.serial, disk.model, disk.size, span,
                           verdict, plan)

    def map_path(self, target: str, span: Span) -> str:
        """The target's mapfile: named after image, target and span, so the same command finds
        it again and a changed image does not; a shrunk piece is named after its layer, made
        anew by every run (the resizers stamp times), so it is never continued."""
        info = os.stat(self.image)
        key = "\0".join(map(str, (self.image, info.st_size, info.st_mtime_ns,
                                  os.path.realpath(target), span.offset, span.length,
                                  *(extra for extra in (span.dest, span.source) if extra))))
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
            try:
                return self._restore(checks)
            finally:
                self._stop_clock()

    def _restore(self, checks: tuple[TargetCheck, ...]) -> RestoreResult:
        folder = self.request.map_dir or default_map_dir()
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create map folder {folder}: {exc.strerror}") from None
        if any(c.plan and any(p.action == "shrink" for p in c.plan.partitions) for c in checks):
            self.phase = "shrinking"  # in a layer over the image, before anything is written
        with contextlib.ExitStack() as shrunk:
            for check in checks:
                source = None if check.plan is None else shrunk.enter_context(
                    relayout.shrunk_source(self.image, self.image_format, check.plan))
                self._add_targets(check, source)
            return self._restore_targets(checks)

    def _add_targets(self, check: TargetCheck, shrunk: str | None) -> None:
        """The target, or the pieces of a target laid out anew (each shrunk partition read
        from `shrunk`)."""
        assert check.span is not None
        spans = [check.span]
        if check.plan is not None:
            spans = [Span(move.source, move.length, "resize", None, move.dest,
                          shrunk if part and part.action == "shrink" else None)
                     for move, part in zip(check.plan.moves(), (None, *check.plan.partitions),
                                           strict=True)]
        self._targets += [Target(check.target, span, self.map_path(check.target, span),
                                 self.request.command_line, self.control.clock)
                          for span in spans]

    def _restore_targets(self, checks: tuple[TargetCheck, ...]) -> RestoreResult:
        whole = [t for t in self._targets if t.span.mode != "resize"]
        digests: Digests = {}
        reading = ReadBack(self.image, self.image_format, digests, self.control)
        reading.read_length = max((t.size for t in whole), default=0)
        self.phase = "restoring"
        damage: FormatError | DamagedData | None = None
        with safety.protect(self.image):
            try:  # the image as it is onto all such targets at once, then each moved piece
                for group in [whole] * bool(whole) + [[t] for t in self._targets
                                                      if t not in whole]:
                    self._write_all(digests, group, reading)
            except (FormatError, DamagedData) as exc:  # the image ends early or fails to read
                damage = exc
            if damage is None and not self.control.cancelled.is_set() and self.request.verify:
                self.phase = "verifying"
                self._each_target(reading.after, "cannot read back",
                                  [t for t in self._targets if t.written is None])
            if damage is None and not self.control.cancelled.is_set():
                self._each_target(self._finish_table, "cannot write to")
                for check in checks:
                    if check.plan is not None:
                        relayout.finish_target(
                            [t for t in self._targets if t.path == check.target], self.planner,
                            check.plan, self._done)
        self.phase = "finished"
        self._stop_clock()
        return self._result(damage)

    def _stop_clock(self) -> None:
        """From here on progress shows the job as it ended, however long it is looked at."""
        if self._ended is None:
            self._ended = self.control.clock.now()

    def _each_target(self, work: Callable[[Target], None], failing: str,
                     targets: list[Target] | None = None) -> None:
        """Run `work` on every live target (of `targets`) at once; an I/O error fails that
        target with `failing` (what it could not do) and its reason."""
        threads = [threading.Thread(target=self._guarded, args=(work, t, failing), name=t.path)
                   for t in (self._targets if targets is None else targets) if not t.failed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    @staticmethod
    def _guarded(work: Callable[[Target], None], target: Target, failing: str) -> None:
        try:
            work(target)
        except OSError as exc:
            target.fail(write_error(target.path, exc, failing))
        except (FormatError, DestinationError, DamagedData) as exc:
            target.fail(str(exc))

    def _write_all(self, digests: Digests, targets: list[Target], reading: ReadBack) -> None:
        """Read the targets' span of the image once and feed every target; the writers run in
        their own threads, and so do the read-backs of targets read back while written. With
        verification on, chunks already written by an earlier run are read too, only to learn
        their digests."""
        span = targets[0].span
        start, length = span.offset, max(t.size for t in targets)
        image, image_format, allocated = (
            (self.image, self.image_format, self.allocated) if span.source is None
            else (span.source, "raw", [(0, self.size)]))
        # the whole image goes through: its digest can be compared with the manifest's
        whole = self.gate.expected is not None and start == 0 and length == self.size
        hasher = BackgroundHasher(self.gate.hasher()) if whole else None
        left = len(range(0, length, CHUNK))
        following = [t for t in targets if self.request.verify
                     and follows_writer(t, self.request.read_back)]
        readers: list[threading.Thread] = []
        try:
            with Pipeline(image, image_format, start, allocated,
                          hashing=self.request.verify, skip_holes=self.request.skip_holes,
                          checkpoint=self.request.checkpoint,
                          threads=self.request.threads or default_threads()) as pipeline:
                readers = reading.follow(following)
                writing = pipeline.start_writers(targets)
                for chunk in pipeline.chunks(length, every=self.request.verify or whole):
                    self.control.wait_if_paused()
                    if self.control.cancelled.is_set() or all(t.failed for t in writing):
                        break  # with every target dropped, reading on would only cost time
                    self.gate.record(chunk.damaged)
                    left -= 1
                    if chunk.digest is not None:
                        digests[span.source or "", start, chunk.offset] = chunk.digest
                    if hasher is not None:
                        self._hash(hasher, chunk)
                    pipeline.deliver(chunk)
            if hasher is not None and not left:
                self.gate.compare(hasher.hexdigest())
        finally:
            self._end_reading(following, readers, reading)
            if hasher is not None:
                hasher.close()

    @staticmethod
    def _end_reading(following: list[Target], readers: list[threading.Thread],
                     reading: ReadBack) -> None:
        """Once the writers ended: wait for the read-backs that follow them, then settle."""
        following = [t for t in following if t.written is not None]
        for target in following:
            if target.phase == "writing":
                target.phase = "verifying"
        for thread in readers:
            thread.join()
        for target in following:
            reading.settle(target)

    @staticmethod
    def _hash(hasher: BackgroundHasher, chunk: Chunk) -> None:
        """Hand the chunk to the whole image's hasher, held until it is hashed."""
        if chunk.is_hole:
            hasher.zeros(chunk.length)
        else:
            chunk.hold()
            hasher.update(chunk.view(chunk.length), release=chunk.release)

    # ---- after writing -------------------------------------------------------------------

    def _finish_table(self, target: Target) -> None:
        """Move the GPT backup to the end of the target, or fit a DOS table; then check it."""
        if target.span.mode == "resize":
            return  # done once the whole disk has its new table (_relayout)
        if target.phase in ("mismatch", "incomplete") or target.span.table is None:
            self._done(target)
            return
        target_size = geometry(target.path)[0]
        if target.span.table == "gpt" and target_size != self.size:
            target.phase = "fixing-table"
            # an interrupted fix is redone from the image: the table areas are written again
            for offset, length in self.table.table_areas:
                target.rmap.set(offset, length, NON_TRIED)
            target.save_map()
            fitting.move_gpt_backup(target.path)
        elif target.span.table == "dos" and target.span.mode == "fit":
            target.phase = "fixing-table"
            fitting.fit_dos(target.path, self.table, target_size)
        self._done(target)

    @staticmethod
    def _done(target: Target) -> None:
        if target.phase in ("mismatch", "incomplete"):
            return
        target.rmap.set(0, target.size, FINISHED)
        target.phase = "done"
        with contextlib.suppress(OSError):
            os.unlink(target.map_path)
            os.unlink(f"{target.map_path}.bak")

    def _result(self, damage: FormatError | DamagedData | None) -> RestoreResult:
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
        progress = self.progress().targets
        phases = {p.phase for p in progress}
        read = max(t.span.offset + t.size for t in self._targets) - self.source[0]
        verdict = self.gate.verdict().within(self.source[0], read)
        outcome = (RestoreOutcome.FAILED if "failed" in phases
                   else RestoreOutcome.MISMATCH if "mismatch" in phases
                   else RestoreOutcome.INTERRUPTED if cancelled
                   else RestoreOutcome.RESTORED if verdict.intact else RestoreOutcome.DAMAGED)
        return RestoreResult(outcome, progress, verdict)

    def progress(self) -> RestoreProgress:
        now = self.control.clock.now() if self._ended is None else self._ended
        pieces: dict[str, list[TargetProgress]] = {}
        for target in self._targets:
            pieces.setdefault(target.path, []).append(self._target_progress(target, now))
        targets = tuple(merged(p) for p in pieces.values()) or tuple(
            TargetProgress(c.target, "waiting", c.span.length if c.span else 0, 0, 0, 0.0,
                           0.0, None) for c in self._checks or ())
        return RestoreProgress(self.request.image, self.phase,
                               now - self.started, self.control.paused, targets)

    def _target_progress(self, target: Target, now: float) -> TargetProgress:
        written = target.rmap.totals()[FINISHED]
        rate = target.meter.current(now)
        verify_total = target.size if self.request.verify else 0
        remaining = (target.size - written) + (verify_total - target.verified)
        if target.written is not None:  # read back while written: the two overlap
            remaining = target.size - min(written, target.verified)
        active = target.phase in ("writing", "verifying", "waiting")
        eta = remaining / rate if rate > 0 and active else None
        return TargetProgress(target.path, target.phase, target.size, written, target.verified,
                              rate, target.meter.average(now), eta, tuple(target.mismatches),
                              target.error, target.map_path, target.compared)
