"""The `rescue` command: argparse subcommands, each in rescue/commands/.

Every RescueError becomes one line on stderr and its exit code; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from rescue import __version__
from rescue.errors import ExitCode, RescueError

COMMANDS = ("image", "demo", "map", "disks", "info", "convert", "restore", "deploy", "explore",
            "report", "tui", "sim")

EPILOG = """exit codes:
  0  everything rescued / done          1  finished, but some sectors are unreadable
  2  usage error or bad input            3  destination I/O error (e.g. full)
  4  the source vanished                 5  refused by the write-safety policy
  6  stopped by --timeout (resumable)    130 interrupted (map saved, resumable)"""


class _Parser(argparse.ArgumentParser):
    """A parser whose every error is one `rescue:` line saying where to look, exit 2: argparse's
    usage block buries the one line that names the problem."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("rescue").strip()
        where = f"{command}: " if command else ""
        self.exit(int(ExitCode.USAGE),
                  f"rescue: {where}{message}{self.hint(message)} (see {self.prog} --help)\n")

    def hint(self, message: str) -> str:
        """The closest command or option to an unknown one, as `; did you mean ...?`."""
        if message.startswith("unrecognized arguments: "):
            import difflib  # only a mistyped command line needs it

            known = [option for action in self._actions for option in action.option_strings]
            unknown = message.removeprefix("unrecognized arguments: ").split()[0]
            close = difflib.get_close_matches(unknown.split("=")[0], known, n=1)
            return f"; did you mean {close[0]}?" if close else ""
        return ""


class _CommandParser(_Parser):
    """A command's parser that takes options anywhere among its positionals: plain argparse
    stops filling optional positionals at the first option (`rescue ls IMG -R /` failed)."""

    _parsing = False
    _given: list[str] | None = None  # the command's arguments, while they are parsed

    def parse_known_args(self, args=None, namespace=None):
        # the intermixed parse calls back here for its two passes; a command with actions of
        # its own (`deploy send`) leaves the intermixing to their parsers, which argparse needs
        if self._parsing or any(isinstance(action, argparse._SubParsersAction)
                                for action in self._actions):
            return super().parse_known_args(args, namespace)
        self._parsing, self._given = True, None if args is None else list(args)
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing, self._given = False, None

    def error(self, message: str) -> NoReturn:
        """A mistyped option is the problem to name, not the arguments argparse then missed
        (`rescue image --bogus` said that SOURCE and DEST are required)."""
        if message.startswith("the following arguments are required") and self._given:
            unknown = self._unknown_options(self._given)
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}"
        super().error(message)

    def _unknown_options(self, given: list[str]) -> list[str]:
        """The options among `given` this command does not take, found by a parse that
        requires nothing."""
        required = [action for action in self._actions if action.required]
        self._given = None  # an error of this parse is reported as it is
        for action in required:
            action.required = False
        try:
            _, extras = argparse.ArgumentParser.parse_known_args(self, given)
        finally:
            for action in required:
                action.required = True
        return [arg for arg in extras if arg.startswith("-")]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rescue", description="Image failing disks, map bad sectors, restore and explore.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rescue {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=_CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"rescue.commands.{name}").add_parser(subparsers)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; an unknown command, or an option its command does not take, is
    reported by the parser that can say what was meant."""
    args = sys.argv[1:] if argv is None else argv
    subparsers = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    first = next((arg for arg in args if not arg.startswith("-")), None)
    if first is not None and first not in subparsers.choices and args[0] == first:
        import difflib

        close = difflib.get_close_matches(first, list(subparsers.choices), n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        parser.exit(int(ExitCode.USAGE), f"rescue: unknown command '{first}'{guess} "
                                         "(see rescue --help)\n")
    namespace, extras = parser.parse_known_args(args)
    from rescue.commands.tui import LOOK_OPTIONS  # imported already by build_parser

    if namespace.command is None and set(extras) <= set(LOOK_OPTIONS):
        return _parse(parser, ["tui", *args])  # a bare `rescue [--ascii] [--mono]`
    if extras:
        command = subparsers.choices.get(namespace.command, parser)
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    return namespace


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"rescue {__version__}")  # as the parser would, without building it
        return int(ExitCode.OK)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
        from rescue.commands import take_passphrase
        from rescue.commands.shares import run_on_shares

        take_passphrase(args)
        return int(run_on_shares(args, args.run))
    except RescueError as exc:
        print(f"rescue: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("rescue: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # the reader went away (`rescue ls ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
