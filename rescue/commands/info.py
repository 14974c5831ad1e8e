"""`rescue info IMAGE` and `rescue verify IMAGE`: what an image holds, and is it intact."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rescue.commands import add_image_argument
from rescue.errors import ExitCode
from rescue.formats import mapfile
from rescue.formats.image import detect_format, open_reader, read_manifest
from rescue.formats.integrity import verify_image
from rescue.units import human_size


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("info", help="show an image's format, sizes and manifest")
    add_image_argument(info)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=run_info)
    verify = subparsers.add_parser(
        "verify", help="check an image's checksums; report damaged ranges (exit 1 if any)")
    add_image_argument(verify)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)


def describe(path: str, image_format: str | None = None) -> dict[str, Any]:
    fmt = detect_format(path, image_format)
    reader = open_reader(path, fmt)
    try:
        allocated = sum(length for _, length, used in reader.extents() if used)
        manifest = read_manifest(path, reader)
        stored = os.stat(path).st_blocks * 512
        info: dict[str, Any] = {
            "image": path, "format": fmt, "size": reader.size, "allocated": allocated,
            "stored": stored, "ratio": round(stored / allocated, 4) if allocated else None,
            "manifest": json.loads(manifest.to_bytes()) if manifest else None,
        }
        for attr in ("cluster_size", "compression"):
            if hasattr(reader, attr):
                info[attr] = getattr(reader, attr)
    finally:
        reader.close()
    map_path = f"{path}.map"
    if os.path.exists(map_path):
        totals = mapfile.load(map_path, reader.size).rmap.totals()
        info["mapfile"] = {"path": map_path, "rescued": totals["+"], "bad": totals["-"],
                           "non_tried": totals["?"], "non_trimmed": totals["*"],
                           "non_scraped": totals["/"]}
    return info


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.image, args.image_format)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for line in info_lines(info):
        print(line)
    return 0


def info_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"image:       {info['image']} ({info['format']})",
             f"size:        {human_size(info['size'])} ({info['size']} bytes)"]
    ratio = f", {info['ratio']:.1%} of the allocated data" if info["ratio"] else ""
    lines.append(f"allocated:   {human_size(info['allocated'])}, stored in "
                 f"{human_size(info['stored'])}{ratio}")
    manifest = info["manifest"]
    if manifest:
        source = manifest["source"]
        lines.append(f"source:      {source.get('path')} model {source.get('model') or '-'} "
                     f"serial {source.get('serial') or '-'}")
        lines.append(f"created:     {manifest['created']} by {manifest['tool']}, "
                     f"mode {manifest['mode']}")
        summary = manifest.get("rescue") or {}
        if summary:
            lines.append(f"rescue:      {summary.get('outcome')}: "
                         f"{human_size(summary.get('rescued', 0))} rescued, "
                         f"{human_size(summary.get('bad', 0))} bad in "
                         f"{summary.get('bad_areas', 0)} area(s)")
        if manifest.get("fingerprint"):
            lines.append(f"fingerprint: {manifest['fingerprint']}")
        if manifest.get("sha256"):
            lines.append(f"sha256:      {manifest['sha256']}")
    if "mapfile" in info:
        m = info["mapfile"]
        lines.append(f"mapfile:     {m['path']}: {human_size(m['rescued'])} rescued, "
                     f"{human_size(m['bad'])} bad")
    return lines


def run_verify(args: argparse.Namespace) -> int:
    """Check everything the image carries, through the same gate restore uses."""
    reader = open_reader(args.image, args.image_format)
    try:
        verdict = verify_image(args.image, reader)
    finally:
        reader.close()
    if args.json:
        print(json.dumps({"image": args.image, "damaged": [list(r) for r in verdict.damaged],
                          "problems": verdict.problems, "checked": verdict.checked,
                          "fingerprint_ok": verdict.fingerprint_ok}))
    elif not verdict.intact:
        print("\n".join(verdict.lines()))
    else:
        said = f"intact ({verdict.summary()})" if verdict.proven else verdict.summary()
        print(f"{args.image}: {said}")
    return int(ExitCode.OK if verdict.intact else ExitCode.UNREADABLE)
