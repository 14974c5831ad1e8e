"""The images in a folder, each with what its manifest says: for choosing one from a list.

A rescuer picks an image by where it came from, when, and whether its rescue finished, not by
its file name. Listing a folder looks only at names (a folder of a million files is not read
file by file), and each image is summarised on its own, so a broken file becomes one row that
says why it cannot be read rather than an error that stops the list.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from rescue.errors import RescueError
from rescue.formats import mapfile
from rescue.formats.base import ImageReader
from rescue.formats.clonezilla import sniff_folder
from rescue.formats.image import detect_format, is_image_name, open_reader, read_manifest
from rescue.formats.manifest import Manifest
from rescue.rangemap import FINISHED
from rescue.units import human_size

MAX_LISTED = 200  # images listed from one folder; the rest are counted, not read

COMPLETE = "complete"  # every sector rescued
DAMAGED = "damaged"  # finished, some sectors unreadable (zeros in the image)
PARTIAL = "partial"  # interrupted, timed out, or still being written
UNKNOWN = "unknown"  # no manifest or map says how it was made
UNREADABLE = "unreadable"  # not an image rescue can open: `detail` says why

_STATE_OF_OUTCOME = {"rescued": COMPLETE, "unreadable": DAMAGED, "interrupted": PARTIAL,
                     "timeout": PARTIAL}


@dataclass(frozen=True)
class ImageSummary:
    """One image as a list shows it. `source` is the identity its manifest or map recorded
    (path, model, serial, size), empty when neither did."""

    path: str
    state: str
    detail: str = ""
    format: str | None = None
    size: int | None = None
    created: str = ""
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def readable(self) -> bool:
        return self.state != UNREADABLE

    def source_line(self) -> str:
        return describe_source(self.source)


@dataclass(frozen=True)
class Listing:
    """The image files of a folder, newest first; `more` were left out past the limit."""

    folder: str
    paths: tuple[str, ...]
    more: int = 0
    problem: str = ""  # why the folder could not be listed


def list_images(folder: str, limit: int = MAX_LISTED) -> Listing:
    """The files in `folder` named as images (.img, .qcow2, .img.zst, .vmdk, ...) and the
    Clonezilla archives among its subfolders, newest first. Only names and dates are read here
    (and whether a subfolder holds Clonezilla's marker files); `summarize` opens each."""
    found: list[tuple[float, str]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not ((is_image_name(entry.name) and _is_file(entry)) or _is_archive(entry)):
                    continue
                try:
                    found.append((entry.stat().st_mtime, entry.path))
                except OSError:
                    continue  # removed while the folder was read
    except OSError as error:
        return Listing(folder, (), problem=f"cannot list {folder}: {error.strerror}")
    found.sort(reverse=True)
    return Listing(folder, tuple(path for _, path in found[:limit]), max(0, len(found) - limit))


def _is_file(entry: os.DirEntry[str]) -> bool:
    """A regular file (a FIFO named disk.img would block whoever opens it)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_archive(entry: os.DirEntry[str]) -> bool:
    """A subfolder Clonezilla or Rescuezilla wrote."""
    try:
        return entry.is_dir() and sniff_folder(entry.path)
    except OSError:
        return False


def summarize(path: str) -> ImageSummary:
    """What the image at `path` is, never raising: a file that cannot be read as an image is
    summarised as unreadable with the reason."""
    try:
        mode = os.stat(path).st_mode
        archive = stat.S_ISDIR(mode) and sniff_folder(path)
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode) or archive):  # a FIFO would block
            return ImageSummary(path, UNREADABLE, f"{path} is not a regular file, a block "
                                "device or a Clonezilla archive")
        image_format = detect_format(path)
        reader = open_reader(path, image_format)
        try:
            return _summary(path, image_format, reader)
        finally:
            reader.close()
    except (RescueError, OSError) as error:
        return ImageSummary(path, UNREADABLE, str(error) or type(error).__name__)
    except Exception as error:  # hostile bytes in one file must not end the list
        return ImageSummary(path, UNREADABLE, f"{type(error).__name__}: {error}")


def _summary(path: str, image_format: str, reader: ImageReader) -> ImageSummary:
    size = reader.size
    try:
        manifest = read_manifest(path, reader)
        manifest_problem = ""
    except RescueError as error:
        manifest, manifest_problem = None, str(error)
    if manifest is not None:
        state, detail = _from_manifest(manifest, size)
        return ImageSummary(path, state, detail, image_format, size,
                            _date(manifest.created) or _mtime(path), manifest.source)
    details = reader.details()
    if details.get("archive"):
        return ImageSummary(path, UNKNOWN, _archive_detail(details), image_format, size,
                            _mtime(path))
    state, detail, source = _from_map(path, size)
    if manifest_problem:
        detail = manifest_problem
    return ImageSummary(path, state, detail, image_format, size, _mtime(path), source)


def _archive_detail(details: dict[str, Any]) -> str:
    """A Clonezilla archive in a few words: each saved partition and its file system."""
    parts = details.get("partitions")
    saved = [f"{p['name']} {p['file_system'] or p['saved_as']}" for p in parts
             if p["saved_as"] != "none"] if isinstance(parts, list) else []
    return f"{details['archive']}: {', '.join(saved)}"


def _from_manifest(manifest: Manifest, size: int) -> tuple[str, str]:
    outcome = manifest.rescue.get("outcome", "")
    state = _STATE_OF_OUTCOME.get(outcome, UNKNOWN)
    if state == DAMAGED:
        return state, f"{human_size(manifest.rescue.get('bad', 0))} unreadable"
    if state == PARTIAL:
        return state, f"{outcome}, {_share(manifest.rescue.get('rescued', 0), size)} rescued"
    return state, ""


def _from_map(path: str, size: int) -> tuple[str, str, dict[str, Any]]:
    """An image without a manifest: the map beside it tells how far its rescue got (a job
    writes the manifest only when it ends)."""
    map_path = f"{path}.map"
    if not os.path.exists(map_path):
        return UNKNOWN, "no manifest", {}
    try:
        loaded = mapfile.load(map_path, size)
    except (RescueError, OSError) as error:
        return UNKNOWN, f"no manifest; map unreadable ({error})", {}
    rescued = loaded.rmap.totals()[FINISHED]
    return PARTIAL, f"no manifest yet, {_share(rescued, size)} rescued", dict(loaded.source or {})


def _share(part: int, whole: int) -> str:
    return f"{100 * part // whole}%" if whole else "0%"


def _date(created: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return ""


def _mtime(path: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(os.stat(path).st_mtime))
    except OSError:
        return ""


def describe_source(source: dict[str, Any]) -> str:
    """The recorded source disk in a few words: model, serial, size, and the path it had."""
    words = [str(source[key]) for key in ("model", "serial") if source.get(key)]
    if isinstance(source.get("size"), int):
        words.append(human_size(source["size"]))
    if source.get("path"):
        words.append(f"({source['path']})")
    return " ".join(words)


def is_source_disk(source: dict[str, Any], path: str, serial: str | None, model: str | None,
                   size: int) -> bool:
    """Whether the disk `path` (with its serial, model, size) is the one the image was made
    from: by serial when both have one, else by the same path and size (loop devices and some
    USB bridges have no serial)."""
    recorded_serial = source.get("serial")
    if recorded_serial and serial:
        return bool(recorded_serial == serial and (not model or not source.get("model")
                                                   or source.get("model") == model))
    return bool(source.get("path") == path and source.get("size") == size)
