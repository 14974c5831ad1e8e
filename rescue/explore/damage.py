"""Which bytes of a file were never rescued: the image's mapfile against the file's data runs.

A file's content lives in runs of the image (`Run`); the ddrescue mapfile beside the image
says which image ranges were read ('+') and which are bad or were never read. A file whose
runs meet the latter has lost those bytes: they read as zeros from the image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from rescue.formats import mapfile
from rescue.rangemap import RangeMap

UNREADABLE = "-?*/"  # bad, non-tried, non-trimmed, non-scraped: the image holds no data there


@dataclass(frozen=True)
class Run:
    """`length` bytes of a file at `file_offset`, stored at `image_offset` of the image."""

    file_offset: int
    image_offset: int
    length: int


def unreadable_map(image_path: str, size: int) -> RangeMap | None:
    """The mapfile beside the image (IMAGE.map), or None when there is none: then every byte
    the image holds counts as read."""
    path = f"{image_path}.map"
    if not os.path.exists(path):
        return None
    rmap = mapfile.load(path, size).rmap
    return rmap if any(rmap.totals()[state] for state in UNREADABLE) else None


def lost_ranges(runs: Iterable[Run], rmap: RangeMap | None) -> tuple[tuple[int, int], ...]:
    """(start, end) byte ranges of the file that lie in unreadable areas, merged and sorted."""
    if rmap is None:
        return ()
    lost: list[tuple[int, int]] = []
    for run in runs:
        end = run.image_offset + run.length
        pos = run.image_offset
        while pos < end:
            area = rmap.find(UNREADABLE, pos)
            if area is None or area[0] >= end:
                break
            begin, stop = area[0], min(end, area[0] + area[1])
            shift = run.file_offset - run.image_offset
            lost.append((begin + shift, stop + shift))
            pos = stop
    return merge(lost)


def merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)
