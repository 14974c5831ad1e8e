"""Chains of qcow2 images: an incremental image is an overlay whose backing file is the older
image, so only the clusters that changed are stored again (qcow2.txt "backing file").

The newest overlay is opened as one disk: each cluster it leaves unallocated reads from its
backing file, which may itself be an overlay, and so on. A backing file is named relative to
the overlay's folder (as QEMU resolves it), a loop or a missing file is refused naming the
file, and an overlay that recorded its base's fingerprint refuses a base that changed since.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from rescue.errors import FormatError, UsageError
from rescue.formats.qcow2 import MAGIC, Backing, Qcow2Reader, Qcow2Writer, merged_runs

MAX_DEPTH = 256  # overlays in one chain: far above any real use, below the open-file limit
MAX_RECORDED_NAME = 256  # the base's name must fit the header's one sector beside the rest


class BrokenChain(FormatError):
    """A backing chain that cannot be read as it is: a file missing, a loop, too long, or a
    base rewritten since. QEMU could not read it either, so it is never handed to QEMU."""


class BaseChanged(BrokenChain):
    """A backing file rewritten since an overlay was made over it."""


class Qcow2ChainReader(Qcow2Reader):
    """A qcow2 image read through its backing chain: the disk the newest overlay describes."""

    reads_backing_chain = True

    def __init__(self, path: str, _seen: tuple[str, ...] = ()) -> None:
        super().__init__(path)
        self.backing_reader: Qcow2ChainReader | None = None
        name = self._header.backing_file
        if not name:
            return
        try:
            self.backing_reader = self._open_backing(name, (*_seen, os.path.realpath(path)))
            self.backing = self.backing_reader
            self._check_base_unchanged()
        except BaseException:
            self.close()
            raise

    def _open_backing(self, name: str, seen: tuple[str, ...]) -> Qcow2ChainReader:
        backing_format = self._header.backing_format
        if backing_format not in ("", "qcow2"):
            raise FormatError(f"{self.path}: its backing file {name} is a {backing_format} "
                              "image; only qcow2 backing files are read")
        path = os.path.join(os.path.dirname(self.path), name)
        if os.path.realpath(path) in seen:
            raise BrokenChain(f"{self.path}: its backing file {name} leads back to an image "
                              "of the chain (a loop)")
        if len(seen) >= MAX_DEPTH:
            raise BrokenChain(f"{self.path}: its backing chain is longer than {MAX_DEPTH}")
        if not os.path.exists(path):
            raise BrokenChain(f"{self.path}: its backing file {path} is missing")
        return Qcow2ChainReader(path, seen)

    def _check_base_unchanged(self) -> None:
        """The base's fingerprint this overlay recorded when it was made must still be the
        base's own: a base rewritten since no longer holds what the overlay left out."""
        assert self.backing_reader is not None
        base = _manifest_field(self, "base")
        recorded = base.get("blake3") if isinstance(base, dict) else None
        current = _manifest_field(self.backing_reader, "blake3")
        if recorded and current and recorded != current:
            raise BaseChanged(f"{self.backing_reader.path} changed since {self.path} was made "
                              "over it (its fingerprint differs); the chain no longer reads "
                              "the imaged disk")

    def chain(self) -> list[str]:
        """The files of the chain, newest first."""
        files, layer = [self.path], self.backing_reader
        while layer is not None:
            files.append(layer.path)
            layer = layer.backing_reader
        return files

    def details(self) -> dict[str, object]:
        found = super().details()
        return {**found, "backing_chain": self.chain()} if self.backing_reader else found

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """Allocated where this overlay holds data, or where it leaves the cluster to a
        backing file that holds data there."""
        if self.backing_reader is None:
            return super().extents()
        return merged_runs(self._pieces(list(self.backing_reader.extents())), self.size)

    def _pieces(self, below: list[tuple[int, int, bool]]) -> Iterator[tuple[int, int, bool]]:
        """Each cluster's state, from the backing file's extents where it shows through."""
        starts = [start for start, _, _ in below]
        for offset, length, entry in self._cluster_states():
            if self._unallocated(entry):
                yield from _clip(below, starts, offset, offset + length)
            else:
                yield offset, length, self._is_data(entry)

    def check_structure(self) -> tuple[list[tuple[int, int]], list[str]]:
        """Every file of the chain checked: a damaged backing file damages the chain."""
        ranges, problems = super().check_structure()
        if self.backing_reader is not None:
            below, below_problems = self.backing_reader.check_structure()
            ranges = sorted(ranges + [(start, min(length, self.size - start))
                                      for start, length in below if start < self.size])
            problems += [f"{self.backing_reader.path}: {problem}" for problem in below_problems]
        return ranges, problems

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.backing_reader is not None:
                self.backing_reader.close()


def _clip(extents: list[tuple[int, int, bool]], starts: list[int], begin: int,
          end: int) -> list[tuple[int, int, bool]]:
    """The runs of `extents` (sorted, contiguous) inside [begin, end); past their end, a
    hole (a smaller backing file reads as zeros there)."""
    pieces = []
    index = max(0, bisect.bisect_right(starts, begin) - 1)
    position = begin
    while position < end and index < len(extents):
        start, length, allocated = extents[index]
        stop = min(end, start + length)
        if stop > position:
            pieces.append((position, stop - position, allocated))
            position = stop
        index += 1
    if position < end:
        pieces.append((position, end - position, False))
    return pieces


def _manifest_field(reader: Qcow2Reader, name: str) -> object:
    """One field of an image's manifest, or None (also when it is damaged: verify says so)."""
    try:
        data = reader.manifest()
        return json.loads(data).get(name) if data else None
    except (FormatError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Base:
    """The older image an incremental image is made over."""

    path: str
    name: str  # as the overlay's header records it: relative when beside it
    blake3: str | None  # its manifest's fingerprint, recorded in the overlay's manifest

    def backing(self) -> Backing:
        return Backing(self.name, lambda: Qcow2ChainReader(self.path))

    def as_manifest(self) -> dict[str, object]:
        return {"file": self.name, "blake3": self.blake3}


def check_base(path: str, overlay: str, size: int) -> Base:
    """The base for an overlay at `overlay` of a `size`-byte disk, or a UsageError that says
    why it cannot be one."""
    if not os.path.isfile(path):
        raise UsageError(f"the base image {path} does not exist or is not a file")
    if os.path.exists(overlay) and os.path.samefile(path, overlay):
        raise UsageError(f"the base image {path} cannot be the new image itself")
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise UsageError(f"the base image {path} is not a qcow2 image")
    try:
        with Qcow2ChainReader(path) as reader:
            if reader.size != size:
                raise UsageError(f"the base image {path} holds a {reader.size}-byte disk, the "
                                 f"source has {size} bytes; a base must be an image of the same "
                                 "disk")
            blake3 = _manifest_field(reader, "blake3")
    except FormatError as error:
        raise UsageError(f"the base image cannot be read: {error}") from None
    if os.path.isfile(overlay) and os.path.getsize(overlay):
        _check_continued_chain(overlay)
    name = _recorded_name(path, overlay)
    return Base(path, name, blake3 if isinstance(blake3, str) else None)


def _check_continued_chain(overlay: str) -> None:
    """An overlay being continued still reads over its base: not one rewritten since an
    earlier run of it ended (its manifest recorded the base's fingerprint then)."""
    with open(overlay, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return  # not an image: opening it for writing says so
    try:
        Qcow2ChainReader(overlay).close()
    except BaseChanged as error:
        raise UsageError(str(error)) from None
    except FormatError:
        pass  # opening it for writing says what else is wrong with it


def _recorded_name(path: str, overlay: str) -> str:
    """The base's name beside the overlay, else its absolute path (as `qemu-img create -b`
    takes it)."""
    folder = os.path.dirname(os.path.abspath(overlay))
    absolute = os.path.abspath(path)
    name = os.path.basename(absolute) if os.path.dirname(absolute) == folder else absolute
    if len(os.fsencode(name)) > MAX_RECORDED_NAME:
        raise UsageError(f"the base image's path is longer than {MAX_RECORDED_NAME} bytes; "
                         "put the new image beside it")
    return name


def open_overlay_writer(path: str, size: int, base: Base, level: int,
                        threads: int) -> Qcow2Writer:
    """A qcow2 writer of an overlay over `base`: new, or continued where a run stopped."""
    return Qcow2Writer(path, size, level=level, threads=threads, backing=base.backing())
