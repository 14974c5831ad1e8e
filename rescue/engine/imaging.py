"""An imaging job: opens source, image and map with every check, then runs the rescue.

The CLI and the TUI both build an ImageJob from the same request and only differ in how they
present its progress.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import os
import stat
import threading
import time
from typing import Any

from rescue.devices import safety
from rescue.devices.discover import Disk, discover, find
from rescue.devices.locks import Locks
from rescue.devices.probe import ProbeResult, probe
from rescue.engine.choices import MODES, ORDERS
from rescue.engine.convert import partial_path
from rescue.engine.digest import DigestingWriter
from rescue.engine.first import FirstFiles, check_first_paths
from rescue.engine.joblogs import JobLogs
from rescue.engine.jobs import JobControl, Phase, Progress, RateMeter
from rescue.engine.request import ImageRequest
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.engine.resume import IDENTITY_FIELDS, identity_mismatch
from rescue.engine.zststream import StreamImage, ZstStream, staging_path
from rescue.errors import FormatError, RefusedError, UsageError
from rescue.formats import mapfile
from rescue.formats.base import ImageReader, ImageWriter
from rescue.formats.fingerprint import hash_image
from rescue.formats.image import (
    default_threads,
    format_for,
    open_reader,
    open_writer,
    read_manifest,
    require_format,
    store_manifest,
)
from rescue.formats.manifest import SIDECAR_SUFFIX, Manifest, rescue_summary
from rescue.formats.qcow2chain import Base, check_base, open_overlay_writer
from rescue.fs.chosen import FirstPath
from rescue.fs.domain import DiskPlan, ResumeReader, SourceReader, plan_disk
from rescue.fs.partitions import SliceReader
from rescue.io.reader import Reader, Unreadable
from rescue.io.source import BlockSource, Source
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIMMED, MapSnapshot, RangeMap
from rescue.sim import faulty

SAMPLES = 4  # rescued areas re-read and compared with the image on resume
SAMPLE_CANDIDATES = 16
SAMPLE_SIZE = 4096


def _same_file(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def open_source(path: str) -> Source:
    if path.startswith(faulty.PREFIX):
        return faulty.FaultySource(path)
    return BlockSource(path)


def protected_sources(source: str) -> list[str]:
    """What an imaging job reads, so nothing it writes may touch: the source, unless it is a
    simulated disk (which has no device or file behind it)."""
    return [] if source.startswith(faulty.PREFIX) else [source]


def source_identity(path: str, size: int, sector_size: int, physical_sector_size: int
                    ) -> dict[str, Any]:
    """What identifies the source later: a device's model, serial and partition layout."""
    identity: dict[str, Any] = {"path": path, "size": size, "logical_sector_size": sector_size,
                                "physical_sector_size": physical_sector_size}
    if path.startswith("/dev/"):
        # no signature probing: every extra read of a failing source is a risk
        found = find(path, discover(probe_signatures=False))
        if isinstance(found, Disk):
            identity.update(model=found.model, serial=found.serial, vendor=found.vendor,
                            partition_table=found.table_type, partitions=[
                                {"number": p.number, "start": p.start, "size": p.size,
                                 "fstype": p.fstype, "label": p.label}
                                for p in found.partitions])
        elif found is not None:
            identity.update(partition_number=found.number, fstype=found.fstype,
                            label=found.label, uuid=found.uuid)
    return identity


def identity_from_image(identity: dict[str, Any], image: Reader) -> dict[str, Any]:
    """`identity` with what discovery could not tell without reading the source (the kind of
    partition table, each partition's file system and label) read from the rescued image
    instead: reading it costs the failing disk nothing. Unread areas are zeros there and
    stay unknown."""
    known = dict(identity)
    if "partitions" in identity:
        known["partition_table"] = identity.get("partition_table") or probe(image).table
        known["partitions"] = [
            part if part.get("fstype") else
            _with_file_system(part, probe(SliceReader(image, part["start"], part["size"])))
            for part in identity["partitions"]]
    elif "partition_number" in identity and not identity.get("fstype"):
        known = _with_file_system(known, probe(image))
    return known


def _with_file_system(entry: dict[str, Any], found: ProbeResult) -> dict[str, Any]:
    fs = found.filesystem
    if fs is None:
        return entry
    return {**entry, "fstype": fs.fstype, "label": entry.get("label") or fs.label}


def identity_of(source: Source) -> dict[str, Any]:
    """What the job records of an open source, and compares on resume."""
    if isinstance(source, BlockSource):
        return source_identity(source.path, source.size, source.sector_size,
                               source.physical_sector_size)
    return {"path": source.path, "size": source.size, "logical_sector_size": source.sector_size,
            "physical_sector_size": source.physical_sector_size}


def source_warnings(source: Source) -> tuple[str, ...]:
    """Why an image of this open source may come out inconsistent (mounted read-write)."""
    if not isinstance(source, BlockSource) or not source.is_device:
        return ()
    return safety.source_warnings(source.path, claimed=not source.exclusive)


class ImageJob:
    """Everything one `rescue image` needs, opened and checked before any byte is read."""

    def __init__(self, request: ImageRequest, control: JobControl | None = None) -> None:
        self.request = request
        self.control = control or JobControl()
        self.started = time.time()
        self.format = format_for(request.dest, request.image_format)
        # an .img.zst is streamed into DEST.partial, which takes its name once complete
        streamed = self.format == "zst"
        self.image_path = partial_path(request.dest) if streamed else request.dest
        self.staging_path = staging_path(request.dest) if streamed else None
        self.stream: ZstStream | None = None
        require_format(self.image_path, self.format)
        self._check_mode()
        self.wanted = tuple(FirstPath.parse(path) for path in request.first)
        self.source = open_source(request.source)
        self.plan: DiskPlan | None = None
        self.locks = Locks()
        self.logs = JobLogs(request.reads_log, request.events_log, request.command_line,
                            self.progress)
        try:
            self._check_safety()
            self.source_warnings = source_warnings(self.source)
            self._lock()
            self.mapfile = self._load_or_create_map()
            self._check_files()
            self._check_logs()
            self.base = self._check_base()
            self.identity = self._source_identity()
            rescued = self._rescued_image()  # opened once: an unfinished stream is walked
            try:
                self._check_same_source(rescued)
                domain = self._load_domain()
                metadata_first = self._metadata_first()
                if request.mode == "used" or metadata_first:
                    self.plan = self._plan_disk(rescued)
                    domain = self.plan.used if request.mode == "used" else domain
                    check_first_paths(self.wanted, self.plan)
            finally:
                if rescued is not None:
                    rescued.close()
            self.logs.open()  # before the image: a log that cannot be written leaves no image
            writer = self._open_writer(domain, metadata_first)
            # a fresh image can be hashed as it is written; a resumed one cannot, nor an
            # overlay whose unwritten (unused) blocks read from its base rather than as zeros
            fresh = not self.mapfile.rmap.totals()[FINISHED] and not (
                self.base is not None and request.mode == "used")
            self.digesting = DigestingWriter(writer, self._hash_threads()) if fresh else None
            self.writer: ImageWriter = self.digesting or writer
        except BaseException:
            self.logs.close()
            self.source.close()
            self.locks.release()
            raise
        self._meter = RateMeter(self.control.clock.now())  # rates and elapsed: the whole job
        self._observer = self.logs if self.logs.wanted else None
        self.rescue = Rescue(self.source, self.writer, self.mapfile, self._save_map,
                             request.options, self.control, domain, self._meter, self._observer)
        # metadata first: a rescue over the metadata, then the main one over everything; the
        # second skips what the first finished, since passes only read non-finished areas
        self._first = self._rescue_of(self.plan.metadata, request.options) \
            if metadata_first and self.plan else None
        # --first: the chosen files between the two, looked up in the image once the
        # metadata is in
        self.chosen = FirstFiles(self.wanted, self.mapfile.rmap, self.source.sector_size,
                                 self._open_image, self._rescue_chosen) if self.wanted else None
        self._active = self._first or self.rescue
        self._stage_lock = threading.Lock()
        self._errors_before = 0  # read errors of the rescues that have ended
        self._ended: Rescue | None = None  # the last of them

    @property
    def warnings(self) -> tuple[str, ...]:
        """A source that may change while it is read, and what the used-block planning could
        not trust (imaged whole instead)."""
        return (*self.source_warnings, *(self.plan.warnings if self.plan else ()))

    def _rescue_of(self, domain: RangeMap, options: RescueOptions) -> Rescue:
        """A rescue of this job over `domain`, sharing its map, image and rate meter."""
        return Rescue(self.source, self.writer, self.mapfile, self._save_map,
                      dataclasses.replace(options), self.control, domain, self._meter,
                      self._observer)

    def _rescue_chosen(self, domain: RangeMap) -> Outcome:
        """One batch of the chosen files: no retries, the last stage retries every bad
        sector anyway."""
        options = dataclasses.replace(self.request.options, retries=0)
        return self._run_rescue(self._rescue_of(domain, options))

    def _run_rescue(self, rescue: Rescue) -> Outcome:
        """Run one of the job's rescues as the one its progress shows."""
        with self._stage_lock:
            self._active = rescue
        try:
            return rescue.run()
        finally:
            errors = rescue.progress().read_errors
            with self._stage_lock:
                self._errors_before += errors
                self._ended = rescue

    def _open_writer(self, domain: RangeMap | None, metadata_first: bool) -> ImageWriter:
        """qcow2 or raw take writes in any order, and continue what they find; an .img.zst
        is streamed, and may skip what this job never writes (outside its domain)."""
        if self.base is not None:
            return open_overlay_writer(self.image_path, self.source.size, self.base,
                                       self.request.level,
                                       self.request.threads or default_threads())
        if self.staging_path is None:
            return open_writer(self.image_path, self.format, self.source.size,
                               self.request.level, self.request.threads, self.request.encrypt)
        if domain is not None and metadata_first and self.plan is not None:
            domain = RangeMap.from_areas(domain.size, domain.areas())
            for start, length, state in self.plan.metadata.areas():
                if state == FINISHED:
                    domain.set(start, length, FINISHED)
        self.stream = ZstStream(self.request.dest, self.source.size, self.request.level,
                                self.mapfile.rmap, domain,
                                threads=self.request.threads or default_threads())
        return self.stream

    def _hash_threads(self) -> int:
        """A raw image leaves the cores idle while the disk is read: the image's hash takes
        them all. Compressed formats keep them busy compressing: one hashing thread."""
        return (self.request.threads or default_threads()) if self.format == "raw" else 1

    def _open_image(self) -> ImageReader:
        if self.stream is not None:
            return self.stream.reader()
        self.writer.sync()
        return open_reader(self.image_path, self.format)

    def _check_mode(self) -> None:
        req = self.request
        if req.mode not in MODES:
            raise UsageError(f"unknown mode {req.mode!r}; choose one of {', '.join(MODES)}")
        if req.order not in ORDERS:
            raise UsageError(f"unknown order {req.order!r}; choose one of {', '.join(ORDERS)}")
        if req.domain_path and (req.mode == "used" or req.order == "metadata-first"
                                or req.first):
            raise UsageError("--domain cannot be combined with --mode used, "
                             "--order metadata-first or --first")
        if req.base is not None and self.format != "qcow2":
            raise UsageError("--base makes a qcow2 overlay: the new image must be a .qcow2")
        if req.first and req.order == "sequential":
            raise UsageError("--first reads the metadata first; it cannot be combined with "
                             "--order sequential")

    def _metadata_first(self) -> bool:
        """Explicitly asked for, or by default when the disk is known to be failing: errors
        already in the map, or a SMART verdict of failing or worn."""
        order = self.request.order
        if self.request.first:
            return True
        if order != "auto" or self.request.domain_path:
            return order == "metadata-first"
        totals = self.mapfile.rmap.totals()
        if totals[BAD] or totals[NON_TRIMMED] or totals[NON_SCRAPED]:
            return True
        if isinstance(self.source, faulty.FaultySource):
            return bool(self.source.spec.bad or self.source.spec.flaky)
        if isinstance(self.source, BlockSource) and self.source.is_device:
            from rescue.devices.health import check_health

            return check_health(self.source.path, timeout=10).status in ("failing", "warning")
        return False

    def _plan_disk(self, image: ImageReader | None) -> DiskPlan:
        """The used and metadata domains; a resumed job reads what it rescued before from
        the image, not again from the source."""
        path = self.source.path if isinstance(self.source, BlockSource) else None
        source = SourceReader(self.source)
        reader = source if image is None else ResumeReader(image, source, self.mapfile.rmap)
        return plan_disk(reader, path, self.source.sector_size)

    def _check_base(self) -> Base | None:
        """The older image an overlay is made over, read-locked: nothing may rewrite it
        while the overlay relies on it."""
        if self.request.base is None:
            return None
        base = check_base(self.request.base, self.image_path, self.source.size)
        self.locks.read(base.path)
        return base

    def _check_safety(self) -> None:
        """The write-safety policy on everything this job writes, before it takes its own
        locks (so what it finds held is held by other jobs)."""
        req = self.request
        folder = os.path.dirname(os.path.abspath(req.dest))
        if not os.path.isdir(folder):
            raise UsageError(f"destination folder {folder} does not exist")
        protected = protected_sources(self.request.source)
        safety.require_writable(req.dest, needed_size=self.source.size, protected=protected,
                                force=req.force, compressed=self.format != "raw")
        safety.require_writable(req.mapfile_path, protected=protected, force=req.force)
        if os.path.abspath(req.mapfile_path) == os.path.abspath(self.image_path) or (
                os.path.exists(req.mapfile_path) and os.path.exists(self.image_path)
                and os.path.samefile(req.mapfile_path, self.image_path)):
            raise UsageError(f"the mapfile {req.mapfile_path} cannot be the image itself")
        for path in (self.image_path, self.staging_path):
            if path is not None and path != req.dest:
                safety.require_writable(path, protected=protected, force=req.force)

    def _lock(self) -> None:
        """One job per image and map, and no write to what this job reads, across every
        rescue process: refused here, naming the holder, before the map is read."""
        for path in protected_sources(self.request.source):
            self.locks.read(path)
        for path in dict.fromkeys(filter(None, (self.request.dest, self.image_path,
                                                self.staging_path,
                                                self.request.mapfile_path))):
            self.locks.write(path)

    def _check_files(self) -> None:
        """What the image and map on disk say: complete already, or rescued data gone."""
        req = self.request
        if (self.staging_path is not None and os.path.exists(req.dest)
                and self.mapfile.current_status == Phase.FINISHED.status and not req.force):
            # the .img.zst took its name only once complete: a staging image still beside it
            # was left by a stop between that rename and its removal
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.staging_path)
            raise UsageError(f"{req.dest} is already complete (map {req.mapfile_path}); "
                             "use --force to image again")
        have_map = os.path.exists(req.mapfile_path)
        try:
            st = os.stat(self.image_path)
        except FileNotFoundError:
            if self.mapfile.rmap.totals()[FINISHED]:
                raise UsageError(
                    f"mapfile {req.mapfile_path} records rescued data but {self.image_path} "
                    "is missing; move the mapfile away to start over") from None
            return
        # an unfinished stream of ours without a map claims nothing: it starts over
        if stat.S_ISREG(st.st_mode) and st.st_size and not have_map and not self.staging_path:
            if not req.force:
                raise UsageError(f"{self.image_path} already exists and has no mapfile; "
                                 "use --force to overwrite it")
            with open(self.image_path, "r+b") as f:
                f.truncate(0)

    def _check_logs(self) -> None:
        """A log is a file of its own: not a folder or device, nor anything the job reads or
        writes besides."""
        req = self.request
        others = {"the image": req.dest, "the unfinished image": self.image_path,
                  "the staging image": self.staging_path,
                  "the image's manifest": self.image_path + SIDECAR_SUFFIX,
                  "the mapfile": req.mapfile_path,
                  "the mapfile's backup": f"{req.mapfile_path}.bak",
                  "the domain mapfile": req.domain_path}
        if protected_sources(req.source):
            others["the source"] = req.source
        for name, path in (("reads log", req.reads_log), ("events log", req.events_log)):
            if path is None:
                continue
            if os.path.exists(path) and not os.path.isfile(path):
                raise UsageError(f"the {name} {path} is not a regular file")
            if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise UsageError(f"the folder of the {name} {path} does not exist")
            for other, other_path in others.items():
                if other_path is not None and _same_file(path, other_path):
                    raise UsageError(f"the {name} {path} cannot be {other}")
            others[f"the {name}"] = path

    def _source_identity(self) -> dict[str, Any]:
        return identity_of(self.source)

    def _check_same_source(self, reader: ImageReader | None) -> None:
        """Resume only from the source the map and the image were made from; then record it
        in the map, which every save writes. A map without an identity (GNU ddrescue's) is
        judged by its rescued data alone."""
        recorded = [(self.request.mapfile_path, self.mapfile.source)]
        if reader is not None:
            recorded.append((self.image_path, self._manifest_source(reader)))
        self._compare_identity(recorded)
        if reader is not None:
            self._compare_rescued_data(reader)
        self.mapfile.source = {key: self.identity.get(key) for key in IDENTITY_FIELDS}

    def _rescued_image(self) -> ImageReader | None:
        if not self.mapfile.rmap.totals()[FINISHED] or not os.path.exists(self.image_path):
            return None
        try:
            if self.staging_path is not None:
                staging = self.staging_path if os.path.exists(self.staging_path) else None
                return StreamImage(self.image_path, self.source.size, staging)
            return open_reader(self.image_path, self.format)
        except (FormatError, OSError):
            return None  # opening it for writing says what is wrong with it

    def _manifest_source(self, reader: ImageReader) -> dict[str, Any] | None:
        try:
            manifest = read_manifest(self.image_path, reader)
        except FormatError:
            return None  # a damaged manifest is rewritten at the end of this run
        return manifest.source if manifest else None

    def _compare_identity(self, recorded: list[tuple[str, dict[str, Any] | None]]) -> None:
        for where, identity in recorded:
            mismatch = identity_mismatch(identity, self.identity)
            if mismatch is not None:
                raise RefusedError(f"{self.request.source} is not the source of {where} "
                                   f"({mismatch}); image it into a new file")

    def _compare_rescued_data(self, reader: ImageReader) -> None:
        """Two disks of one size and model, or two files, differ in what was rescued: read a
        few rescued areas again and compare them with the image."""
        for offset, expected in self._samples(reader):
            try:
                found = bytes(self.source.read(offset, len(expected)))
            except Unreadable:
                continue  # a failing disk may lose a sector it gave before: that proves nothing
            if found != expected:
                raise RefusedError(
                    f"{self.request.source} is not the source of {self.image_path}: its bytes "
                    f"at {offset:#x} differ from the rescued ones (another disk, or it changed "
                    "since); image it into a new file")

    def _samples(self, reader: ImageReader) -> list[tuple[int, bytes]]:
        """Up to SAMPLES sector-aligned windows spread over the rescued areas, with the
        image's bytes there; windows holding data are preferred to all-zero ones."""
        finished = [(start, length) for start, length, state in self.mapfile.rmap.areas()
                    if state == FINISHED]
        ends = list(itertools.accumulate(length for _, length in finished))
        sector = self.source.sector_size
        data: list[tuple[int, bytes]] = []
        zeros: list[tuple[int, bytes]] = []
        for step in range(SAMPLE_CANDIDATES):
            position = ends[-1] * step // SAMPLE_CANDIDATES
            index = bisect.bisect_right(ends, position)
            start, length = finished[index]
            begin = -(-(start + position - ends[index] + length) // sector) * sector
            size = min(SAMPLE_SIZE, (start + length - begin) // sector * sector)
            if size > 0:
                window = reader.read(begin, size)
                (data if any(window) else zeros).append((begin, window))
        return (data or zeros)[:SAMPLES]

    def _load_or_create_map(self) -> mapfile.Mapfile:
        path = self.request.mapfile_path
        if os.path.exists(path):  # a shorter map is completed: ddrescue omits a trailing '?'
            return mapfile.load(path, self.source.size)
        return mapfile.Mapfile(RangeMap(self.source.size))

    def _load_domain(self) -> RangeMap | None:
        if not self.request.domain_path:
            return None
        return mapfile.load(self.request.domain_path, self.source.size).rmap

    def _save_map(self, current: mapfile.Mapfile) -> None:
        mapfile.save(self.request.mapfile_path, current, self.request.command_line,
                     self.started)

    def run(self) -> Outcome:
        with self.locks:  # held until the .img.zst is complete
            return self._run_and_finish()

    def _run_and_finish(self) -> Outcome:
        try:
            outcome = self.logs.around(self._run_phases)
            self._store_manifest(outcome)
        finally:
            self._close_files()
        return outcome

    def _run_phases(self) -> Outcome:
        """The metadata, then the chosen files, then everything: each stage ends before the
        next begins, and a stage that stops (cancelled, timed out) stops the job."""
        if self._first is not None:
            outcome = self._run_rescue(self._first)
            if not outcome.finished:
                return outcome
        if self.chosen is not None:
            outcome = self.chosen.run()
            if not outcome.finished:
                return outcome
        outcome = self._run_rescue(self.rescue)
        if self.chosen is not None:
            self.chosen.restate()
        return outcome

    def _store_manifest(self, outcome: Outcome) -> None:
        """Record where the image came from and how the rescue went, inside the image."""
        manifest = Manifest(
            source=self._identity_with_image(), mode=self._manifest_mode(),
            rescue=rescue_summary(list(self.mapfile.rmap.areas()), outcome.value),
            base=self.base.as_manifest() if self.base else None)
        if outcome.finished:  # the image will not change again: hash it
            self.writer.sync()
            manifest.blake3 = self.digesting.fingerprint() if self.digesting else None
            if self.stream is not None:  # it reads the digest back if need be
                self.stream.finish(manifest)
                return
            manifest.blake3 = manifest.blake3 or self._read_back_fingerprint()
        if self.stream is None:  # an unfinished stream has no room for one
            store_manifest(self.writer, self.image_path, manifest)

    def _identity_with_image(self) -> dict[str, Any]:
        """The source's identity, completed from the image where discovery left it unknown;
        as discovered when the image cannot be read (the job's own error tells why)."""
        try:
            image = self._open_image()
        except (FormatError, OSError):
            return self.identity
        try:
            return identity_from_image(self.identity, image)
        except (FormatError, Unreadable):
            return self.identity
        finally:
            image.close()

    def _read_back_fingerprint(self) -> str:
        reader = open_reader(self.image_path, self.format)
        try:
            return hash_image(reader)
        finally:
            reader.close()

    def _manifest_mode(self) -> str:
        if self.request.mode == "used":
            return "used"
        return "domain" if self.request.domain_path else "full"

    def progress(self) -> Progress:
        """Progress over the whole job's domain, also while the metadata or the chosen files
        go first; read errors of every stage so far."""
        with self._stage_lock:
            active, errors, ended = self._active, self._errors_before, self._ended
        current = active.progress()
        errors += 0 if ended is active else current.read_errors
        first = self.chosen.progress() if self.chosen is not None else None
        if active is self.rescue:
            return dataclasses.replace(current, read_errors=errors, first=first)
        totals = self.rescue.totals()
        return dataclasses.replace(current, totals=totals, domain_size=self.rescue.domain_size,
                                   eta=self.rescue.eta(totals, current.average_rate),
                                   read_errors=errors, first=first)

    def snapshot(self) -> MapSnapshot:
        return self._active.snapshot()

    def close(self) -> None:
        """Let go of a job that will not run: close its files and release its locks."""
        try:
            self._close_files()
        finally:
            self.locks.release()

    def _close_files(self) -> None:
        """Close the logs, image and source; a close that fails leaves the map as last
        saved."""
        self.logs.close()
        try:
            self.writer.close()
        finally:
            self.source.close()
