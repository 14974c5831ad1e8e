"""`rescue map MAPFILE`: show any GNU ddrescue mapfile as a live sector map, read-only.

The map is reloaded whenever the file changes, so a rescue (ours or ddrescue's) can be
watched from a second terminal. Textual is imported only when the command runs. With
`--svg OUT` no app starts: the map is saved as a picture for a report.
"""

from __future__ import annotations

import argparse

from rescue.commands.tui import add_look_options, look_from_args
from rescue.errors import ExitCode, UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map", help="show a ddrescue mapfile as a sector map (follows changes)",
        description="Open MAPFILE (written by rescue or GNU ddrescue) read-only as a sector "
                    "map; it refreshes every second while the file changes.")
    parser.add_argument("mapfile", help="GNU ddrescue mapfile")
    add_look_options(parser)
    parser.add_argument("--svg", metavar="OUT",
                        help="save the map, its legend and totals as an SVG picture in OUT "
                             "instead of opening it")
    parser.add_argument("--width", type=int, metavar="CELLS",
                        help="with --svg: cells per row (default 80)")
    parser.add_argument("--height", type=int, metavar="CELLS",
                        help="with --svg: rows of cells at most (default 20)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.svg is None and (args.width or args.height) is not None:
        raise UsageError("--width and --height size the picture --svg OUT saves")
    if args.svg is not None:
        from rescue.commands.picture import save_svg
        from rescue.formats.mapfile import load

        save_svg(load(args.mapfile), args.svg, f"rescue map {args.mapfile}",
                 80 if args.width is None else args.width,
                 20 if args.height is None else args.height, look_from_args(args))
        print(f"map of {args.mapfile} saved as {args.svg}")
        return int(ExitCode.OK)
    from rescue.tui.app import make_app

    make_app(map_path=args.mapfile, look=look_from_args(args)).run()
    return int(ExitCode.OK)
