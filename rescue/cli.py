"""The `rescue` command: argparse subcommands, each in rescue/commands/.

Every RescueError becomes one line on stderr and its exit code; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rescue import __version__
from rescue.errors import ExitCode, RescueError

COMMANDS = ("image", "demo", "map", "disks", "info", "convert", "restore", "explore", "report",
            "tui")

EPILOG = """exit codes:
  0  everything rescued / done          1  finished, but some sectors are unreadable
  2  usage error or bad input            3  destination I/O error (e.g. full)
  4  the source vanished                 5  refused by the write-safety policy
  6  stopped by --timeout (resumable)    130 interrupted (map saved, resumable)"""


class _CommandParser(argparse.ArgumentParser):
    """A command's parser that takes options anywhere among its positionals: plain argparse
    stops filling optional positionals at the first option (`rescue ls IMG -R /` failed)."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:  # the intermixed parse calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rescue", description="Image failing disks, map bad sectors, restore and explore.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rescue {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=_CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"rescue.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"rescue {__version__}")  # as the parser would, without building it
        return int(ExitCode.OK)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `rescue` opens the full-screen app, as `rescue tui`
            args = parser.parse_args(["tui"])
        return int(args.run(args))
    except RescueError as exc:
        print(f"rescue: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("rescue: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # the reader went away (`rescue ls ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
