"""`rescue map MAPFILE`: show any GNU ddrescue mapfile as a live sector map, read-only.

The map is reloaded whenever the file changes, so a rescue (ours or ddrescue's) can be
watched from a second terminal. Textual is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from rescue.commands.tui import add_look_options, look_from_args
from rescue.errors import ExitCode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map", help="show a ddrescue mapfile as a sector map (follows changes)",
        description="Open MAPFILE (written by rescue or GNU ddrescue) read-only as a sector "
                    "map; it refreshes every second while the file changes.")
    parser.add_argument("mapfile", help="GNU ddrescue mapfile")
    add_look_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rescue.tui.app import make_app

    make_app(map_path=args.mapfile, look=look_from_args(args)).run()
    return int(ExitCode.OK)
