"""The image manifest: where an image came from and how its rescue went, kept with the image.

Stored as UTF-8 JSON inside qcow2 and .img.zst images (each format module keeps an opaque
blob), so a copied image keeps it; a raw image, which has no room for it, keeps it beside
itself as IMAGE.manifest.json. Field names never change meaning; new fields may be added.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rescue import __version__
from rescue.errors import FormatError

VERSION = 1
SUPPORTED_VERSIONS = (1,)
SIDECAR_SUFFIX = ".manifest.json"
MAX_SIZE = 16 << 20  # far above any real manifest; a larger length in a header is damage


@dataclass
class Manifest:
    source: dict[str, Any]  # path, model, serial, size, sector sizes, partition table summary
    mode: str = "full"  # full: every sector; used: only the file systems' used blocks
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tool: str = f"rescue {__version__}"
    rescue: dict[str, Any] = field(default_factory=dict)  # totals per state, areas, outcome
    blake3: str | None = None  # BLAKE3 of the whole logical image once complete (fingerprint.py)
    fingerprint: str | None = None  # older images: SHA-256 over their 1 MiB chunks' SHA-256s
    sha256: str | None = None  # oldest images: plain SHA-256 of the image
    base: dict[str, Any] | None = None  # an incremental image's base: its file and blake3
    version: int = VERSION

    def to_bytes(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if v is not None or k not in _OPTIONAL}
        return json.dumps(fields, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "image") -> Manifest:
        try:
            raw = json.loads(data.decode())
            version = raw.get("version")
            if version not in SUPPORTED_VERSIONS:
                raise FormatError(f"{where}: manifest version {version} is not supported")
            known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
            if not _well_typed(known):
                raise TypeError("a field holds a value of the wrong type")
            return cls(**known)
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
            raise FormatError(f"{where}: the manifest is damaged") from None


# not written when absent: digests only older images hold, the base of an incremental image
_OPTIONAL = ("fingerprint", "sha256", "base")
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "source": (dict,), "mode": (str,), "created": (str,), "tool": (str,), "rescue": (dict,),
    "blake3": (str, type(None)), "fingerprint": (str, type(None)), "sha256": (str, type(None)),
    "base": (dict, type(None)), "version": (int,)}
_SUMMARY_COUNTS = ("rescued", "bad", "bad_areas", "non_tried", "non_trimmed", "non_scraped")
_SECTOR_SIZES = ("logical_sector_size", "physical_sector_size")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _well_typed(fields: dict[str, Any]) -> bool:
    """Whether every field, and every number the commands compute with, has its type: a
    damaged or hand-edited manifest may be valid JSON with a list where a number belongs."""
    if any(not isinstance(fields[k], types) for k, types in _FIELD_TYPES.items() if k in fields):
        return False
    summary, source = fields.get("rescue", {}), fields.get("source", {})
    return (all(_count(summary[k]) for k in _SUMMARY_COUNTS if k in summary)
            and (_count(source["size"]) if "size" in source else True)
            and all(_count(source[k]) and source[k] & (source[k] - 1) == 0 and source[k] >= 512
                    for k in _SECTOR_SIZES if k in source))


def rescue_summary(areas: list[tuple[int, int, str]], outcome: str) -> dict[str, Any]:
    totals = {state: 0 for state in "?*/-+"}
    bad_areas = 0
    for _, length, state in areas:
        totals[state] += length
        bad_areas += state == "-"
    return {"outcome": outcome, "rescued": totals["+"], "bad": totals["-"],
            "bad_areas": bad_areas, "non_tried": totals["?"], "non_trimmed": totals["*"],
            "non_scraped": totals["/"]}


def read_sidecar(image_path: str) -> Manifest | None:
    path = image_path + SIDECAR_SUFFIX
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return Manifest.from_bytes(f.read(), path)


def write_sidecar(image_path: str, manifest: Manifest) -> None:
    path = image_path + SIDECAR_SUFFIX
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(manifest.to_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
