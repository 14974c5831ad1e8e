"""Copy an image into another format, sparse-aware, streaming in order.

Unallocated ranges are never read or compressed: raw and qcow2 leave them as holes, and the
seekable zstd writer stores them as one reused all-zero frame. The manifest travels along,
completed with the BLAKE3 of the logical image, hashed on another thread as the copy streams
in order. The digest the source's manifest recorded (BLAKE3, or an older kind) is checked on
the way: a damaged image is not converted into one whose manifest vouches for it.

A file destination is written as DEST.partial and renamed to DEST only once complete and
synced, so DEST never names a half copy: after a kill, DEST is absent (or still the file
--force was replacing) and the same command starts over.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from rescue.devices import safety
from rescue.devices.locks import Locks
from rescue.engine.jobs import JobControl
from rescue.errors import DamagedImageError, DestinationError, Interrupted, UsageError
from rescue.formats.base import ImageReader, ImageWriter, can_abandon, writes_in_order
from rescue.formats.durable import replace_durably
from rescue.formats.fingerprint import BackgroundHasher, Blake3
from rescue.formats.image import (
    DEFAULT_LEVEL,
    detect_format,
    format_for,
    open_reader,
    open_writer,
    read_manifest,
    require_encryptable,
    require_level,
    require_threads,
    store_manifest,
)
from rescue.formats.integrity import DIGESTS, recorded_digest
from rescue.formats.manifest import Manifest

CHUNK = 4 << 20
ZEROS = bytes(CHUNK)


@dataclass(frozen=True)
class ConvertProgress:
    done: int
    size: int
    elapsed: float

    def as_dict(self) -> dict[str, object]:
        return {"done": self.done, "size": self.size, "elapsed": round(self.elapsed, 3)}


def partial_path(dest: str) -> str:
    """Where a conversion to the file `dest` is written until it is complete."""
    return f"{dest}.partial"


def publish(partial: str, dest: str) -> None:
    """Give the complete, synced conversion its final name."""
    try:
        replace_durably(partial, dest)
    except OSError as exc:
        raise DestinationError(f"cannot rename {partial} to {dest}: {exc.strerror}") from None


def _is_device(path: str) -> bool:
    """A block device is written in place: it cannot be renamed into."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


class Conversion:
    """One `rescue convert`: progress is polled from another thread, cancel via control."""

    def __init__(self, source: str, dest: str, dest_format: str | None = None,
                 level: int = DEFAULT_LEVEL, force: bool = False,
                 control: JobControl | None = None,
                 source_format: str | None = None, locked: bool = False,
                 threads: int | None = None, encrypt: bool = False) -> None:
        """`locked`: the caller has checked `dest` and holds the locks on both (an imaging
        job turning its staging image into the .img.zst). `threads`: the writer's
        compression threads (default: one per CPU this process may use). `encrypt`: a
        qcow2 encrypted with LUKS by QEMU."""
        self.source, self.dest = source, dest
        self.fmt = format_for(dest, dest_format)
        require_level(self.fmt, level)
        require_encryptable(self.fmt, encrypt)
        self.encrypt = encrypt
        require_threads(threads)
        self.threads = threads
        self.in_place = _is_device(dest)  # a disk is written in place, a file under .partial
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
            self.source_format = detect_format(source, source_format)
            self.reader: ImageReader = open_reader(source, self.source_format)
            if not (locked or self.in_place):  # its size known now: FAT32 holds under 4 GiB
                self._require_file_fits(force)
        except BaseException:
            self.locks.release()
            raise
        self._done = 0
        self._started = time.monotonic()

    def _require_file_fits(self, force: bool) -> None:
        try:
            safety.require_file_fits(self.dest, self.reader.size,
                                     compressed=self.fmt != "raw", force=force)
        except BaseException:
            self.reader.close()
            raise

    def progress(self) -> ConvertProgress:
        return ConvertProgress(self._done, self.reader.size, time.monotonic() - self._started)

    def run(self) -> Manifest:
        reader = self.reader
        try:
            manifest = read_manifest(self.source, reader) or Manifest(source={
                "path": os.path.abspath(self.source), "size": reader.size,
                "image_format": self.source_format})
            target = self.dest if self.in_place else partial_path(self.dest)
            if target != self.dest and os.path.lexists(target):
                os.unlink(target)  # left by a run that was killed: a conversion starts over
            writer = open_writer(target, self.fmt, reader.size, self.level, self.threads,
                                 self.encrypt)
            try:
                manifest.blake3 = self._copy(reader, writer, recorded_digest(manifest))
                manifest.fingerprint = manifest.sha256 = None  # a new image records BLAKE3
                manifest.base = None  # the chain is flattened: the new image stands alone
                store_manifest(writer, self.dest, manifest)
                writer.close()
            except BaseException:
                if can_abandon(writer):
                    writer.abandon()
                else:
                    writer.close()
                if target != self.dest:
                    os.unlink(target)  # a half-written copy is worth nothing; the source stays
                raise
            if target != self.dest:
                publish(target, self.dest)
            return manifest
        finally:
            reader.close()
            self.locks.release()

    def _copy(self, reader: ImageReader, writer: ImageWriter,
              recorded: tuple[str, str] | None) -> str:
        """Copy every byte in order; returns the copy's BLAKE3, once the digest the source
        recorded (`recorded`: its name and value) is found to match."""
        hashers = [BackgroundHasher(Blake3())]
        if recorded and recorded[0] != "BLAKE3":  # an older kind: hashed alongside, once
            hashers.append(BackgroundHasher(DIGESTS[recorded[0]]()))
        try:
            self._stream(reader, writer, hashers)
            digests = [hasher.hexdigest() for hasher in hashers]
        finally:
            for hasher in hashers:
                hasher.close()
        if recorded and digests[-1] != recorded[1]:
            raise DamagedImageError(f"{self.source}: the image's {recorded[0]} differs from "
                                    f"its manifest's; {self.dest} not written")
        return digests[0]

    def _stream(self, reader: ImageReader, writer: ImageWriter,
                hashers: list[BackgroundHasher]) -> None:
        for offset, length, allocated in reader.extents():
            end = offset + length
            for pos in range(offset, end, CHUNK):
                if self.control.cancelled.is_set():
                    raise Interrupted(f"conversion cancelled; {self.dest} not written")
                n = min(CHUNK, end - pos)
                if allocated:
                    data = reader.read(pos, n)
                    writer.write(pos, data)
                    for hasher in hashers:
                        hasher.update(data)
                else:
                    if writes_in_order(writer):
                        writer.write_zeros(n)
                    elif self.in_place:  # a disk's old bytes are not the image's zeros
                        writer.write(pos, memoryview(ZEROS)[:n])
                    for hasher in hashers:
                        hasher.zeros(n)
                self._done = pos + n
