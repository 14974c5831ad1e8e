"""An imaging job: opens source, image and map with every check, then runs the rescue.

The CLI and the TUI both build an ImageJob from the same request and only differ in how they
present its progress.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from rescue.devices import safety
from rescue.engine.jobs import JobControl, Progress
from rescue.engine.rangemap import FINISHED, MapSnapshot, RangeMap
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.errors import UsageError
from rescue.formats import mapfile
from rescue.formats.image import ImageWriter, format_for
from rescue.io import faulty
from rescue.io.source import BlockSource, Source


@dataclass
class ImageRequest:
    source: str
    dest: str
    map_path: str | None = None
    image_format: str | None = None
    level: int = 3
    domain_path: str | None = None
    force: bool = False
    options: RescueOptions = field(default_factory=RescueOptions)
    command_line: str = ""

    @property
    def mapfile_path(self) -> str:
        return self.map_path or f"{self.dest}.map"


def open_source(path: str) -> Source:
    if path.startswith(faulty.PREFIX):
        return faulty.FaultySource(path)
    return BlockSource(path)


def open_writer(path: str, image_format: str, size: int, level: int) -> ImageWriter:
    if image_format == "qcow2":
        from rescue.formats.qcow2 import Qcow2Writer

        return Qcow2Writer(path, size, level=level)
    if image_format == "zst":
        raise UsageError("a rescue writes out of order: image to .qcow2 or .img, then "
                         "`rescue convert` it to .img.zst")
    from rescue.formats.raw import RawWriter

    return RawWriter(path, size)


class ImageJob:
    """Everything one `rescue image` needs, opened and checked before any byte is read."""

    def __init__(self, request: ImageRequest, control: JobControl | None = None) -> None:
        self.request = request
        self.control = control or JobControl()
        self.started = time.time()
        self.source = open_source(request.source)
        try:
            self.mapfile = self._load_or_create_map()
            self._check_destination()
            domain = self._load_domain()
            fmt = format_for(request.dest, request.image_format)
            self.writer = open_writer(request.dest, fmt, self.source.size, request.level)
        except BaseException:
            self.source.close()
            raise
        self.rescue = Rescue(self.source, self.writer, self.mapfile, self._save_map,
                             request.options, self.control, domain)

    def _check_destination(self) -> None:
        req = self.request
        folder = os.path.dirname(os.path.abspath(req.dest))
        if not os.path.isdir(folder):
            raise UsageError(f"destination folder {folder} does not exist")
        protected = [] if req.source.startswith(faulty.PREFIX) else [req.source]
        safety.require_writable(req.dest, needed_size=self.source.size, protected=protected,
                                force=req.force)
        safety.require_writable(req.mapfile_path, protected=protected, force=req.force)
        have_map = os.path.exists(req.mapfile_path)
        try:
            st = os.stat(req.dest)
        except FileNotFoundError:
            if self.mapfile.rmap.totals()[FINISHED]:
                raise UsageError(
                    f"mapfile {req.mapfile_path} records rescued data but {req.dest} is "
                    "missing; move the mapfile away to start over") from None
            return
        if stat.S_ISREG(st.st_mode) and st.st_size and not have_map:
            if not req.force:
                raise UsageError(f"{req.dest} already exists and has no mapfile; "
                                 "use --force to overwrite it")
            with open(req.dest, "r+b") as f:
                f.truncate(0)

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
        try:
            with safety.protect(self.request.source):
                return self.rescue.run()
        finally:
            self.close()

    def progress(self) -> Progress:
        return self.rescue.progress()

    def snapshot(self) -> MapSnapshot:
        return self.rescue.snapshot()

    def close(self) -> None:
        """Close the image and source; a close that fails leaves the map as last saved."""
        try:
            self.writer.close()
        finally:
            self.source.close()
