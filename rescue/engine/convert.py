"""Copy an image into another format, sparse-aware, streaming in order.

Unallocated ranges are never read or compressed: raw and qcow2 leave them as holes, and the
seekable zstd writer stores them as one reused all-zero frame. The manifest travels along,
completed with the fingerprint of the logical image, which the in-order copy gets for free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rescue.devices import safety
from rescue.devices.locks import Locks
from rescue.engine.jobs import JobControl
from rescue.errors import UsageError
from rescue.formats.fingerprint import Fingerprint
from rescue.formats.image import (
    ImageReader,
    ImageWriter,
    detect_format,
    format_for,
    open_reader,
    read_manifest,
)
from rescue.formats.manifest import Manifest, write_sidecar

CHUNK = 4 << 20


@dataclass(frozen=True)
class ConvertProgress:
    done: int
    size: int
    elapsed: float

    def as_dict(self) -> dict[str, object]:
        return {"done": self.done, "size": self.size, "elapsed": round(self.elapsed, 3)}


def create_writer(path: str, fmt: str, size: int, level: int) -> ImageWriter:
    """A new, empty image of `fmt` at `path` (replacing nothing: callers check first)."""
    if fmt == "qcow2":
        from rescue.formats.qcow2 import Qcow2Writer

        return Qcow2Writer.create(path, size, level=level)
    if fmt == "zst":
        from rescue.formats.zstseek import ZstSeekWriter

        return ZstSeekWriter(path, size, level=level)
    from rescue.formats.raw import RawWriter

    return RawWriter(path, size)


class Conversion:
    """One `rescue convert`: progress is polled from another thread, cancel via control."""

    def __init__(self, source: str, dest: str, dest_format: str | None = None, level: int = 3,
                 force: bool = False, control: JobControl | None = None,
                 locked: bool = False) -> None:
        """`locked`: the caller has checked `dest` and holds the locks on both (an imaging
        job turning its staging image into the .img.zst)."""
        self.source, self.dest = source, dest
        self.fmt = format_for(dest, dest_format)
        self.level = level
        self.control = control or JobControl()
        if os.path.exists(dest) and not force:
            raise UsageError(f"{dest} already exists; use --force to replace it")
        self.locks = Locks()
        try:
            if not locked:
                safety.require_writable(dest, protected=[source], force=force)
                self.locks.read(source)
                self.locks.write(dest)
            self.reader: ImageReader = open_reader(source)
        except BaseException:
            self.locks.release()
            raise
        self._done = 0
        self._started = time.monotonic()

    def progress(self) -> ConvertProgress:
        return ConvertProgress(self._done, self.reader.size, time.monotonic() - self._started)

    def run(self) -> Manifest:
        reader = self.reader
        try:
            manifest = read_manifest(self.source, reader) or Manifest(source={
                "path": os.path.abspath(self.source), "size": reader.size,
                "image_format": detect_format(self.source)})
            if os.path.exists(self.dest):
                os.unlink(self.dest)
            writer = create_writer(self.dest, self.fmt, reader.size, self.level)
            try:
                manifest.fingerprint = self._copy(reader, writer)
                self._store_manifest(writer, manifest)
            except BaseException:
                getattr(writer, "abandon", writer.close)()
                os.unlink(self.dest)  # a half-written copy is worth nothing; the source stays
                raise
            writer.close()
            return manifest
        finally:
            reader.close()
            self.locks.release()

    def _copy(self, reader: ImageReader, writer: ImageWriter) -> str:
        fingerprint = Fingerprint()
        sequential = hasattr(writer, "write_zeros")
        for offset, length, allocated in reader.extents():
            end = offset + length
            for pos in range(offset, end, CHUNK):
                if self.control.cancelled.is_set():
                    raise UsageError(f"conversion cancelled; {self.dest} removed")
                n = min(CHUNK, end - pos)
                if allocated:
                    data = reader.read(pos, n)
                    writer.write(pos, data)
                    fingerprint.update(data)
                else:
                    if sequential:
                        writer.write_zeros(n)  # type: ignore[attr-defined]
                    fingerprint.zeros(n)
                self._done = pos + n
        return fingerprint.hexdigest()

    def _store_manifest(self, writer: ImageWriter, manifest: Manifest) -> None:
        if hasattr(writer, "set_manifest"):
            writer.set_manifest(manifest.to_bytes())  # type: ignore[attr-defined]
        else:
            write_sidecar(self.dest, manifest)
