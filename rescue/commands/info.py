"""`rescue info IMAGE` and `rescue verify IMAGE`: what an image holds, and is it intact."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rescue.commands import add_image_argument
from rescue.errors import ExitCode
from rescue.units import human_size


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("info", help="show an image's format, sizes and manifest")
    add_image_argument(info)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(run=run_info)
    check = subparsers.add_parser(
        "verify", help="check an image's checksums; report damaged ranges (exit 1 if any)")
    add_image_argument(check)
    check.add_argument("--json", action="store_true",
                       help="print the verdict and damaged ranges as JSON")
    check.set_defaults(run=run_verify)


def run_info(args: argparse.Namespace) -> int:
    from rescue.engine.imageinfo import describe

    info = describe(args.image, args.image_format)
    if args.json:
        print(json.dumps(info, indent=2))
        return int(ExitCode.OK)
    for line in info_lines(info):
        print(line)
    return int(ExitCode.OK)


def info_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"image:       {info['image']} ({info['format']})",
             f"size:        {human_size(info['size'])} ({info['size']} bytes)"]
    ratio = f", {info['ratio']:.1%} of the allocated data" if info["ratio"] else ""
    lines.append(f"allocated:   {human_size(info['allocated'])}, stored in "
                 f"{human_size(info['stored'])}{ratio}")
    chain = info.get("backing_chain") or []
    lines += [f"{'chain:' if i == 0 else '':<13}{'over ' if i else ''}{path}"
              for i, path in enumerate(chain)]
    if info.get("archive"):
        lines += archive_lines(info)
    if info.get("read_by"):
        encrypted = ", encrypted (LUKS)" if info.get("encryption") else ""
        lines.append(f"read by:     {info['read_by']} (QEMU's {info['driver']} driver)"
                     f"{encrypted}")
    manifest = info["manifest"]
    if manifest:
        source = manifest["source"]
        lines.append(f"source:      {source.get('path')} model {source.get('model') or '-'} "
                     f"serial {source.get('serial') or '-'}")
        lines += layout_lines(source)
        lines.append(f"created:     {manifest['created']} by {manifest['tool']}, "
                     f"mode {manifest['mode']}")
        summary = manifest.get("rescue") or {}
        if summary:
            lines.append(f"rescue:      {summary.get('outcome')}: "
                         f"{human_size(summary.get('rescued', 0))} rescued, "
                         f"{human_size(summary.get('bad', 0))} bad in "
                         f"{summary.get('bad_areas', 0)} area(s)")
        if manifest.get("base"):  # two lines: 80 columns
            lines += [f"base:        {manifest['base'].get('file')}",
                      f"base blake3: {manifest['base'].get('blake3') or '-'}"]
        if manifest.get("blake3"):
            lines.append(f"blake3:      {manifest['blake3']}")
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
    from rescue.engine.verify import verify

    verification = verify(args.image, args.image_format)
    if args.json:
        print(json.dumps(verification.as_dict()))
    else:
        print("\n".join(verification.lines()))
    return int(verification.exit_code)


def layout_lines(source: dict[str, Any]) -> list[str]:
    """The source disk's partition table and partitions as recorded at imaging, or the file
    system of a partition imaged alone: which partition holds what, before opening it."""
    if "partition_number" in source:
        return [f"partition:   {source['partition_number']}, {source.get('fstype') or '-'}"
                f"{_label(source)}"]
    if "partitions" not in source:
        return []
    lines = [f"table:       {source.get('partition_table') or 'none found'}"]
    lines += [f"  {part['number']:>3}  {human_size(part['start']):>10} +"
              f"{human_size(part['size']):>10}  {part.get('fstype') or '-'}{_label(part)}"
              for part in source["partitions"]]
    return lines


def archive_lines(info: dict[str, Any]) -> list[str]:
    """What a Clonezilla folder says of the disk it saved, and how each partition was kept."""
    lines = [f"archive:     {info['archive']}, disk {info['disk']}, "
             f"table {info.get('table') or 'none'}"]
    for part in info["partitions"]:
        saved = (f"{part['saved_as']} image, {part['compression']}, {part['pieces']} piece(s)"
                 if part["saved_as"] != "none" else "not saved")
        lines.append(f"  {part['name']:<10} {human_size(part['start']):>10} +"
                     f"{human_size(part['size']):>10}  {part.get('file_system') or '-':<6} "
                     f"{saved}")
    return lines


def _label(entry: dict[str, Any]) -> str:
    return f" \"{entry['label']}\"" if entry.get("label") else ""
