"""`rescue report IMAGE`: which files the bad or never-read ranges of a rescue hit."""

from __future__ import annotations

import argparse
import json

from rescue.commands import add_image_argument
from rescue.units import human_size

# What to do when damage lies where the files could not be listed: the warnings above say
# which areas and why (a file system rescue cannot list, or metadata lost in the damage).
UNKNOWN_FILES = (
    "the affected files are not known{beyond}: the warnings above say which areas",
    "could not be listed and why. Where their metadata was not read, run the same",
    "`rescue image` again (with --retries) to read more of it, then report again.",
    "A file system rescue cannot list (it lists ext2/3/4, FAT, exFAT and NTFS) can be",
    "checked with its own tools on the image, its partitions mounted read-only by the",
    "kernel (as root) by:",
    "  rescue mount {image} DIR --kernel",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="list the files that bad or unread sectors hit (exit 1 if any, or if "
                       "they cannot be known)",
        description="Read the file systems inside IMAGE (ext2/3/4, FAT, exFAT, NTFS) and list "
                    "every file whose data or metadata lies in a range its mapfile does not "
                    "mark rescued, with the bytes it lost.")
    add_image_argument(parser)
    parser.add_argument("--map", "-m", dest="map_path", metavar="MAPFILE",
                        help="the rescue's mapfile (default IMAGE.map)")
    parser.add_argument("--json", action="store_true",
                        help="print the sector states and affected files as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rescue.fs.affected import image_damage_report

    report, states = image_damage_report(args.image, args.map_path, args.image_format)
    code = report.exit_code
    if args.json:
        print(json.dumps({"image": args.image, **states, "unread": report.damaged_bytes,
                          "files": [f.as_dict() for f in report.files],
                          "files_known": report.files_known,
                          "warnings": list(report.warnings), "exit_code": int(code)}))
        return int(code)
    print(f"{human_size(states['bad'])} bad, "
          f"{human_size(states['non_trimmed'] + states['non_scraped'])} unfinished, "
          f"{human_size(states['non_tried'])} never tried")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if not report.files_known:
        print("\n".join(UNKNOWN_FILES).format(beyond=" beyond those listed" if report.files
                                                else "", image=args.image))
    elif not report.files:
        print("no file is affected")
    for f in report.files:
        where = f"p{f.partition} " if f.partition is not None else ""
        size = "?" if f.size is None else human_size(f.size)
        lost = "all (metadata lost)" if f.lost is None else human_size(f.lost)
        note = ", metadata hit" if f.metadata_hit else ""
        print(f"{where}{f.path}  size {size}  lost {lost}{note}")
    return int(code)
