"""`rescue demo`: image a simulated failing disk into a temporary folder; no root needed."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from rescue.commands.image import run_job
from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.rescue import RescueOptions
from rescue.io.faulty import DEMO_SPEC


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="image a simulated failing disk (bad, slow and flaky areas)",
        description="Runs a full rescue of a simulated 256 MiB failing disk into a temporary "
                    "folder: copying, trimming, scraping and a retry pass, live.")
    parser.add_argument("--spec", default=DEMO_SPEC,
                        help="simulated disk (see rescue.io.faulty); default: the demo disk")
    parser.add_argument("--dir", help="keep the image and map in this folder")
    parser.add_argument("--json", action="store_true", help="JSON progress lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = args.dir or tempfile.mkdtemp(prefix="rescue-demo-")
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, "demo.img")
    print(f"demo: imaging {args.spec} into {dest}", file=sys.stderr)
    request = ImageRequest(source=args.spec, dest=dest, force=True,
                           options=RescueOptions(retries=1, checkpoint_interval=2.0),
                           command_line=shlex.join(sys.argv))
    return run_job(ImageJob(request), args.json)
