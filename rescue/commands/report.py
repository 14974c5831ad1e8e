"""`rescue report IMAGE`: which files the bad or never-read ranges of a rescue hit."""

from __future__ import annotations

import argparse
import json
import os

from rescue.engine.rangemap import BAD, NON_SCRAPED, NON_TRIED, NON_TRIMMED
from rescue.errors import ExitCode, UsageError
from rescue.formats import mapfile
from rescue.formats.image import open_reader, read_manifest
from rescue.fs.affected import DamageReport, affected_files
from rescue.units import human_size


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="list the files that bad or unread sectors hit (exit 1 if any)",
        description="Read the file systems inside IMAGE (ext2/3/4, FAT, exFAT, NTFS) and list "
                    "every file whose data or metadata lies in a range its mapfile does not "
                    "mark rescued, with the bytes it lost.")
    parser.add_argument("image")
    parser.add_argument("--map", "-m", dest="map_path", metavar="MAPFILE",
                        help="the rescue's mapfile (default IMAGE.map)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def build_report(image: str, map_path: str | None = None) -> tuple[DamageReport, dict[str, int]]:
    """The report for `image`, and the byte totals of each unfinished state in its map."""
    map_path = map_path or f"{image}.map"
    if not os.path.exists(map_path):
        raise UsageError(f"no mapfile {map_path}; name it with --map")
    reader = open_reader(image)
    try:
        rmap = mapfile.load(map_path, reader.size).rmap
        manifest = read_manifest(image, reader)
        sector = int(manifest.source.get("logical_sector_size") or 512) if manifest else 512
        report = affected_files(reader, rmap, sector)
    finally:
        reader.close()
    totals = rmap.totals()
    states = {"bad": totals[BAD], "non_trimmed": totals[NON_TRIMMED],
              "non_scraped": totals[NON_SCRAPED], "non_tried": totals[NON_TRIED]}
    return report, states


def run(args: argparse.Namespace) -> int:
    report, states = build_report(args.image, args.map_path)
    code = ExitCode.UNREADABLE if report.files else ExitCode.OK
    if args.json:
        print(json.dumps({"image": args.image, **states, "unread": report.damaged_bytes,
                          "files": [f.as_dict() for f in report.files],
                          "warnings": list(report.warnings), "exit_code": int(code)}))
        return int(code)
    print(f"{human_size(states['bad'])} bad, "
          f"{human_size(states['non_trimmed'] + states['non_scraped'])} unfinished, "
          f"{human_size(states['non_tried'])} never tried")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if not report.files:
        print("no file is affected")
    for f in report.files:
        where = f"p{f.partition} " if f.partition is not None else ""
        size = "?" if f.size is None else human_size(f.size)
        lost = "all (metadata lost)" if f.lost is None else human_size(f.lost)
        note = ", metadata hit" if f.metadata_hit else ""
        print(f"{where}{f.path}  size {size}  lost {lost}{note}")
    return int(code)
