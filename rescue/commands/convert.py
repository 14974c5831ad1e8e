"""`rescue convert IN OUT`: between raw, qcow2 and .img.zst, sparse-aware, with progress.

The conversion engine is imported when the command runs: building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rescue.commands import add_encrypt_argument, add_image_argument, add_threads_argument
from rescue.commands.status import ProgressReporter, run_presented
from rescue.errors import ExitCode
from rescue.formats.image import DEFAULT_LEVEL, FORMATS
from rescue.units import human_rate, human_size

if TYPE_CHECKING:
    from rescue.engine.convert import ConvertProgress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="convert an image between raw, qcow2, .img.zst")
    add_image_argument(parser, "source", "--source-format",
                       "image to read (format detected from its content)")
    parser.add_argument("dest", help="image to write (format from its extension)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: extension)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL,
                        help=f"compression level (default {DEFAULT_LEVEL})")
    add_threads_argument(parser, "compression")
    add_encrypt_argument(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing DEST")
    parser.add_argument("--json", action="store_true", help="JSON progress lines and summary")
    parser.set_defaults(run=run)


def progress_line(p: ConvertProgress) -> list[str]:
    pct = 100 * p.done / p.size if p.size else 100
    return [f"converted {human_size(p.done)} of {human_size(p.size)} ({pct:.0f}%), "
            f"{human_rate(p.done / max(p.elapsed, 1e-3))}"]


def run(args: argparse.Namespace) -> int:
    """A conversion either completes or raises (Interrupted on a signal, exit 130)."""
    from rescue.engine.convert import Conversion

    job = Conversion(args.source, args.dest, args.format, args.level, args.force,
                     source_format=args.image_format, threads=args.threads,
                     encrypt=args.encrypt)

    reporter = ProgressReporter(job.progress, args.json, progress_line,
                                stream=None if args.json else sys.stderr, redraw=False)
    manifest = run_presented(job.run, job.control, reporter)
    summary = {"source": args.source, "source_format": job.source_format, "dest": args.dest,
               "format": job.fmt,
               "blake3": manifest.blake3}
    print(json.dumps({"type": "summary", **summary}) if args.json else
          f"{args.dest}: {job.fmt}, blake3 {manifest.blake3}")
    return int(ExitCode.OK)
