"""`rescue info`: what an image holds, gathered once for every presenter."""

from __future__ import annotations

import json
import os
from typing import Any

from rescue.formats import mapfile
from rescue.formats.image import detect_format, open_reader, read_manifest


def describe(path: str, image_format: str | None = None) -> dict[str, Any]:
    """Format, sizes, manifest and, when the image has one beside it, its map's totals."""
    fmt = detect_format(path, image_format)
    reader = open_reader(path, fmt)
    try:
        allocated = sum(length for _, length, used in reader.extents() if used)
        manifest = read_manifest(path, reader)
        stored = _stored(path)
        info: dict[str, Any] = {
            "image": path, "format": fmt, "size": reader.size, "allocated": allocated,
            "stored": stored, "ratio": round(stored / allocated, 4) if allocated else None,
            "manifest": json.loads(manifest.to_bytes()) if manifest else None,
            **reader.details(),
        }
    finally:
        reader.close()
    map_path = f"{path}.map"
    if os.path.exists(map_path):
        totals = mapfile.load(map_path, reader.size).rmap.totals()
        info["mapfile"] = {"path": map_path, "rescued": totals["+"], "bad": totals["-"],
                           "non_tried": totals["?"], "non_trimmed": totals["*"],
                           "non_scraped": totals["/"]}
    return info


def _stored(path: str) -> int:
    """Bytes the image takes on its disk; a Clonezilla archive's are its folder's files."""
    if not os.path.isdir(path):
        return os.stat(path).st_blocks * 512
    with os.scandir(path) as entries:
        return sum(entry.stat().st_blocks * 512 for entry in entries if entry.is_file())
