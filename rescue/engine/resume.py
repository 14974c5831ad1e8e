"""What running an imaging request would do with what its destination already holds: start
fresh, resume (how far the last run got, and when), start over, or refuse another source's map.

Said before the job opens anything, by the image wizard and by `rescue image`, from the map
alone: the job itself checks again, and also compares rescued bytes with the source.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from rescue.engine.convert import partial_path
from rescue.engine.request import ImageRequest
from rescue.errors import RescueError
from rescue.formats import mapfile
from rescue.formats.image import format_for
from rescue.rangemap import FINISHED
from rescue.units import human_percent

# what the map records of its source; a resume with a source that differs in any is refused
IDENTITY_FIELDS = ("size", "logical_sector_size", "physical_sector_size", "model", "serial")


def identity_mismatch(recorded: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """The first field in which a recorded source identity contradicts the current one, as
    `size 1 recorded, 2 now`; None when nothing known differs."""
    for key in IDENTITY_FIELDS:
        before, current = (recorded or {}).get(key), now.get(key)
        if before is not None and current is not None and before != current:
            return f"{key} {before!r} recorded, {current!r} now"
    return None


@dataclass(frozen=True)
class Outlook:
    """What a run would do: `kind` is "fresh", "resume", "over" (an image without a map,
    overwritten) or "refuse"; `line()` says it."""

    kind: str
    rescued: int = 0
    size: int = 0
    last_run: float | None = None
    reason: str = ""

    def line(self) -> str:
        if self.kind == "resume":
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_run)) \
                if self.last_run is not None else "unknown"
            done = "every byte rescued already" if self.rescued == self.size \
                else f"{human_percent(self.rescued, self.size, of_nothing=0.0)}% rescued"
            return f"will resume: {done}, last run {when}"
        if self.kind == "fresh":
            return f"will start fresh{': ' + self.reason if self.reason else ''}"
        return f"will {'start over' if self.kind == 'over' else 'refuse'}: {self.reason}"


def outlook(request: ImageRequest, identity: dict[str, Any] | None = None) -> Outlook:
    """What imaging as `request` asks would do; `identity` (the source's, as the job records
    it) tells a map of another source apart."""
    map_path, image_path = request.mapfile_path, image_path_of(request)
    if not os.path.exists(map_path):
        if os.path.isfile(image_path) and os.path.getsize(image_path):
            if not request.force:
                return Outlook("refuse", reason=f"{image_path} exists without a map (force "
                                                "overwrites it)")
            return Outlook("over", reason=f"{image_path} exists without a map: overwritten")
        return Outlook("fresh")
    try:
        loaded = mapfile.load(map_path, (identity or {}).get("size"))
        last_run = os.path.getmtime(map_path)
    except (RescueError, OSError) as error:
        return Outlook("refuse", reason=str(error))
    mismatch = identity_mismatch(loaded.source, identity or {})
    if mismatch is not None:
        return Outlook("refuse", reason=f"{request.source} is not the source of {map_path} "
                                        f"({mismatch}): image it into a new file")
    rescued, size = loaded.rmap.totals()[FINISHED], loaded.rmap.size
    if not rescued:
        return Outlook("fresh", reason=f"{map_path} records nothing rescued yet")
    return Outlook("resume", rescued=rescued, size=size, last_run=last_run)


def image_path_of(request: ImageRequest) -> str:
    """Where the job writes its image: an .img.zst is written as DEST.partial until it is
    complete."""
    streamed = format_for(request.dest, request.image_format) == "zst"
    return partial_path(request.dest) if streamed else request.dest
