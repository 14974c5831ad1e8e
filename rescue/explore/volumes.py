"""The volumes of an image: its partitions, or the whole image when it holds a bare file system.

`PARTITION:PATH` arguments name a volume by partition number; without a number, the one
volume that holds a file system is meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rescue.devices.probe import probe
from rescue.errors import FormatError, UsageError
from rescue.formats.base import ImageReader
from rescue.fs.partitions import SliceReader, read_partition_table
from rescue.io.reader import Unreadable

WHOLE_IMAGE = 0  # the volume number of a file system that fills the image (no table)
_TARGET = re.compile(r"(\d+):(.*)", re.DOTALL)


@dataclass(frozen=True)
class Volume:
    number: int  # partition number, or WHOLE_IMAGE
    start: int  # bytes from the start of the image
    size: int
    fstype: str | None  # blkid's TYPE name from our signature probe
    label: str | None
    description: str  # partition type and name, for listings

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    table: str | None  # "dos", "gpt" or None
    volumes: tuple[Volume, ...]
    warnings: tuple[str, ...]


def _probe_slice(reader: ImageReader, start: int, size: int) -> tuple[str | None, str | None]:
    try:
        found = probe(SliceReader(reader, start, size)).filesystem
    except (Unreadable, ValueError, IndexError):  # a damaged superblock is "unknown"
        return None, None
    return (found.fstype, found.label) if found else (None, None)


def read_layout(reader: ImageReader) -> Layout:
    """Partitions with the file system each holds; a table-less image is one volume."""
    fstype, label = _probe_slice(reader, 0, reader.size)
    table = read_partition_table(reader)
    if table.kind is None or (fstype is not None and not table.partitions):
        whole = Volume(WHOLE_IMAGE, 0, reader.size, fstype, label, "whole image")
        return Layout(None, (whole,), table.warnings)
    volumes = []
    for entry in table.file_systems:
        fstype, label = _probe_slice(reader, entry.start, entry.size)
        description = f"{table.kind} {entry.type_id}" + (f" {entry.name!r}" if entry.name else "")
        volumes.append(Volume(entry.number, entry.start, entry.size, fstype, label, description))
    return Layout(table.kind, tuple(volumes), table.warnings)


def parse_target(spec: str) -> tuple[int | None, str]:
    """`3:/etc/fstab` → (3, "/etc/fstab"); `/etc` → (None, "/etc"); `2:` → (2, "/")."""
    match = _TARGET.fullmatch(spec)
    number, path = (int(match.group(1)), match.group(2)) if match else (None, spec)
    return number, "/" + path.strip("/")


def choose(layout: Layout, number: int | None) -> Volume:
    """The volume named by number, or the only one holding a file system we recognise."""
    if number is not None:
        for volume in layout.volumes:
            if volume.number == number:
                return volume
        raise UsageError(f"no partition {number} in this image (see `rescue ls IMAGE`)")
    if len(layout.volumes) == 1:
        return layout.volumes[0]
    known = [volume for volume in layout.volumes if volume.fstype]
    if len(known) == 1:
        return known[0]
    if not layout.volumes:
        raise FormatError("the image's partition table lists no partitions")
    numbers = ", ".join(str(volume.number) for volume in layout.volumes)
    raise UsageError(f"the image has several partitions ({numbers}): name one as N:PATH")


def volume_dir(volume: Volume) -> str:
    """The folder a volume is mounted on under `rescue mount`'s directory."""
    return "fs" if volume.number == WHOLE_IMAGE else f"p{volume.number}"
