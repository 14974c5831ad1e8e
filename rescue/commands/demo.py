"""`rescue demo`: image a simulated failing disk into a temporary folder; no root needed."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile

from rescue.commands.tui import add_look_options, look_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="image a simulated failing disk (bad, slow and flaky areas)",
        description="Runs a full rescue of a simulated 256 MiB failing disk into a temporary "
                    "folder: copying, trimming, scraping and a retry pass, live.")
    parser.add_argument("--spec",
                        help="simulated disk (see rescue.sim.faulty); default: the demo disk")
    parser.add_argument("--dir", help="keep the image and map in this folder")
    parser.add_argument("--json", action="store_true", help="JSON progress lines, no TUI")
    parser.add_argument("--headless", action="store_true",
                        help="status lines instead of the full-screen map (the default when "
                             "not on a terminal)")
    add_look_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rescue.sim.faulty import DEMO_SPEC  # its simulator is loaded only when a demo runs

    spec = args.spec or DEMO_SPEC
    folder = args.dir or tempfile.mkdtemp(prefix="rescue-demo-")
    if not (args.json or args.headless) and sys.stdout.isatty() and sys.stdin.isatty():
        from rescue.tui.app import make_demo_app

        app = make_demo_app(spec, folder, look_from_args(args), shlex.join(sys.argv))
        app.run()
        code = app.exit_code()
        print(f"demo: image and map in {folder}", file=sys.stderr)
        return code
    from rescue.commands.image import run_job
    from rescue.engine.imaging import ImageJob, ImageRequest

    request = ImageRequest.demo(spec, folder, shlex.join(sys.argv))
    print(f"demo: imaging {spec} into {request.dest}", file=sys.stderr)
    return run_job(ImageJob(request), args.json)
