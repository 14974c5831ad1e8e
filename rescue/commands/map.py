"""`rescue map MAPFILE`: show any GNU ddrescue mapfile as a live sector map, read-only.

The map is reloaded whenever the file changes, so a rescue (ours or ddrescue's) can be
watched from a second terminal. Textual is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from rescue.errors import ExitCode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map", help="show a ddrescue mapfile as a sector map (follows changes)",
        description="Open MAPFILE (written by rescue or GNU ddrescue) read-only as a sector "
                    "map; it refreshes every second while the file changes.")
    parser.add_argument("mapfile", help="GNU ddrescue mapfile")
    parser.add_argument("--ascii", action="store_true",
                        help="ASCII characters instead of block characters")
    parser.add_argument("--mono", action="store_true", help="no colours")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rescue.tui.app import make_app
    from rescue.tui.widgets.sector_map import MapLook

    detected = MapLook.from_environment()
    look = MapLook(ascii=args.ascii or detected.ascii,
                   monochrome=args.mono or detected.monochrome)
    make_app(map_path=args.mapfile, look=look).run()
    return int(ExitCode.OK)
