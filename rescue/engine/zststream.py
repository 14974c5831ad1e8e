"""An .img.zst written straight from a rescue, and continued after any stop.

A seekable zstd file is written in order, a rescue writes in any order (the metadata first, the
good areas around a bad one, then the bad one's edges). The stream, DEST.partial, takes every
write that lands at its frontier, the first image byte it does not hold yet; bytes this job
never writes (outside its domain) count as zeros there. A write past the frontier goes to a
sparse staging qcow2, DEST.partial.qcow2, and is pulled into the stream once the frontier
reaches it. A healthy disk read in order never creates the staging image.

`sync` closes the frame being filled, so what the map claims is on disk. After a kill the stream
keeps its complete frames up to what the map claims (a frame written after the last checkpoint
is cut off: the rescue writes its bytes again) and goes on from there; the staging image goes
on as any qcow2 does. `finish` encodes the rest of the image from the staging image (what it
lacks, the bad areas, as zeros), appends the manifest and the seek table, gives the file its
final name and only then removes the staging image.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rescue.engine.convert import partial_path, publish
from rescue.errors import DestinationError, FormatError, UsageError
from rescue.formats.base import Capabilities, ImageReader, ImageWriter
from rescue.formats.fingerprint import hash_image
from rescue.formats.image import open_reader, open_writer
from rescue.formats.manifest import Manifest
from rescue.formats.zstpartial import UnfinishedReader, kept_frames
from rescue.formats.zstseek import ZstSeekWriter
from rescue.rangemap import FINISHED, NON_TRIED, RangeMap

PULL_SIZE = 4 << 20  # bytes read from the staging image at a time


def staging_path(dest: str) -> str:
    """Where the writes that land past the stream's frontier wait."""
    return f"{dest}.partial.qcow2"


class ZstStream:
    """The image writer of an imaging job into an .img.zst (see the module docstring).

    `rescued` is the job's map as it starts (what it claims is durable in the stream or the
    staging image); `domain` what this job may write (None: everything). `threads` compress
    frames while the rescue reads.
    """

    capabilities = Capabilities()

    def __init__(self, dest: str, size: int, level: int, rescued: RangeMap,
                 domain: RangeMap | None, threads: int) -> None:
        self.dest, self.size, self.level = dest, size, level
        self.path, self.staging_path = partial_path(dest), staging_path(dest)
        self._domain = domain
        self._finishing = False  # nothing more will be written: what is missing is zeros
        self._closed = False
        self._staging: ImageWriter | None = None
        self._staging_reader: ImageReader | None = None
        self._stream = ZstSeekWriter(self.path, size, level=level, threads=threads,
                                     kept=self._kept_frames(rescued))
        try:
            # what the map claims past the kept frames waits in the staging image
            self._staged = RangeMap(size)
            for start, length, state in rescued.areas():
                end = start + length
                if state == FINISHED and end > self.position:
                    begin = max(start, self.position)
                    self._staged.set(begin, end - begin, FINISHED)
            self._staging = self._open_staging()
            self._advance()
        except BaseException:
            self._close_all()
            raise

    @property
    def position(self) -> int:
        """The frontier: the stream holds the image's bytes before it."""
        return self._stream.position

    def _kept_frames(self, rescued: RangeMap) -> list[tuple[int, int, int]]:
        """The frames of an unfinished stream that hold only what the map claims, or none for
        a new one."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise DestinationError(f"cannot open {self.path}: {error.strerror}") from error
        try:
            return kept_frames(fd, self._claimed_prefix(rescued))
        except FormatError as error:
            raise UsageError(f"{self.path} cannot be continued: {error}") from None
        finally:
            os.close(fd)

    def _claimed_prefix(self, rescued: RangeMap) -> int:
        """Where the first byte the map does not claim lies (bytes outside the domain count
        as claimed): frames past it were written after the last checkpoint."""
        position = 0
        while position < self.size:
            start, length, state = rescued.area_at(position)
            if state != FINISHED:
                outside = self._outside_end(position)
                if outside == position:
                    break
                length = outside - start
            position = start + length
        return min(position, self.size)

    def _outside_end(self, position: int) -> int:
        """The end of the run of bytes outside the domain at `position` (itself if inside)."""
        if self._domain is None:
            return position
        start, length, state = self._domain.area_at(position)
        return position if state == FINISHED else start + length

    def _open_staging(self) -> ImageWriter | None:
        """The staging image of an interrupted job, when the map claims bytes it holds; one
        left by an earlier job that claims none is stale, and removed."""
        exists = os.path.exists(self.staging_path)
        if not self._staged.totals()[FINISHED]:
            if exists:
                os.unlink(self.staging_path)
            return None
        if not exists:
            raise UsageError(f"the map records rescued data past what {self.path} holds, but "
                             f"the staging image {self.staging_path} is missing; move the "
                             "mapfile away to start over")
        return open_writer(self.staging_path, "qcow2", self.size, self.level)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Stream `data` if it lands at the frontier, else stage it."""
        frontier = self.position
        if offset == frontier:
            self._stream.write(offset, data)
            self._advance()
        elif offset > frontier:
            if self._staging is None:
                self._staging = open_writer(self.staging_path, "qcow2", self.size, self.level)
            self._staging.write(offset, data)
            self._staged.set(offset, len(data), FINISHED)
            self._forget_reader()
        else:
            raise DestinationError(f"{self.path}: a write at {offset:#x} lies behind the "
                                   f"frontier {frontier:#x} of the stream")

    def _advance(self) -> None:
        """Move the frontier over what is known already: staged bytes, which are pulled into
        the stream, and bytes never to be written, which are zeros."""
        while (frontier := self.position) < self.size:
            start, length, state = self._staged.area_at(frontier)
            end = start + length
            if state == FINISHED:
                self._pull(frontier, end)
                self._staged.set(frontier, end - frontier, NON_TRIED)
            elif self._finishing:
                self._stream.write_zeros(end - frontier)
            elif (outside := min(end, self._outside_end(frontier))) > frontier:
                self._stream.write_zeros(outside - frontier)
            else:
                return

    def _pull(self, begin: int, end: int) -> None:
        if self._staging_reader is None:
            assert self._staging is not None  # staged bytes are in it
            self._staging.sync()
            self._staging_reader = open_reader(self.staging_path, "qcow2")
        for position in range(begin, end, PULL_SIZE):
            length = min(PULL_SIZE, end - position)
            self._stream.write(position, self._staging_reader.read(position, length))

    def _forget_reader(self) -> None:
        """Close the staging reader: the staging image changed since it was opened."""
        if self._staging_reader is not None:
            self._staging_reader.close()
            self._staging_reader = None

    def sync(self) -> None:
        """Make every write so far durable: the frame being filled is closed early."""
        self._stream.sync()
        if self._staging is not None:
            self._staging.sync()

    def reader(self) -> ImageReader:
        """The image as written so far (what is not written reads as zeros)."""
        self.sync()
        return StreamImage(self.path, self.size,
                           self.staging_path if self._staging is not None else None)

    def finish(self, manifest: Manifest) -> None:
        """Complete the image once the rescue is over: the rest of it from the staging image,
        then `manifest` (its BLAKE3 read back from the stream when it has none), the seek
        table, and the final name."""
        self._finishing = True
        try:
            self._advance()
            if manifest.blake3 is None:
                self._stream.sync()
                with UnfinishedReader(self.path) as reader:
                    manifest.blake3 = hash_image(reader)
            self._stream.set_manifest(manifest.to_bytes())
            self._stream.close()
            publish(self.path, self.dest)
        finally:
            self._close_all()  # a finish that failed is done again by the same command
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staging_path)

    def close(self) -> None:
        """Stop without finishing (unless finished already): what was written stays, to be
        continued by the same command."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._close_all()

    def _close_all(self) -> None:
        self._closed = True
        self._stream.abandon()
        self._forget_reader()
        if self._staging is not None:
            self._staging.close()


class StreamImage:
    """The image of an unfinished stream: its frames, then its staging image (or zeros)."""

    capabilities = Capabilities()

    def __init__(self, path: str, size: int, staging: str | None) -> None:
        self.size = size
        self._stream = UnfinishedReader(path)
        try:
            self._staging = open_reader(staging, "qcow2") if staging else None
        except BaseException:
            self._stream.close()
            raise

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        split = min(max(offset, self._stream.size), end)
        head = self._stream.read(offset, split - offset) if offset < split else b""
        if split == end:
            return head
        tail = self._staging.read(split, end - split) if self._staging else bytes(end - split)
        return head + tail

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        yield from self._stream.extents()
        rest = self.size - self._stream.size
        if self._staging is None:
            if rest:
                yield self._stream.size, rest, False
            return
        for offset, length, allocated in self._staging.extents():
            end = offset + length
            if end > self._stream.size:
                begin = max(offset, self._stream.size)
                yield begin, end - begin, allocated

    def details(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        self._stream.close()
        if self._staging is not None:
            self._staging.close()
