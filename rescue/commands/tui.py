"""`rescue tui` (and a bare `rescue`): the full-screen app, opening on the Disks screen.

Textual is imported only when the app starts, so every other command stays light.
"""

from __future__ import annotations

import argparse
import sys

from rescue.errors import UsageError

LOOK_OPTIONS = ("--ascii", "--mono")  # a bare `rescue` takes them too
CMDLINE = "/proc/cmdline"
RECEIVE_MODE = "rescue.mode=receive"  # the stick's boot-menu entry "receive a deployment"


def booted_to_receive(cmdline: str = CMDLINE) -> bool:
    """Whether the kernel was started with `rescue.mode=receive`: the stick's console then
    opens on receiving a deployment. No such file (not Linux) means no."""
    try:
        with open(cmdline, encoding="utf-8", errors="replace") as handle:
            return RECEIVE_MODE in handle.read().split()
    except OSError:
        return False


def add_look_options(parser: argparse.ArgumentParser) -> None:
    """--ascii and --mono, for terminals that detection gets wrong (shared with `rescue demo`
    and `rescue map`)."""
    parser.add_argument(LOOK_OPTIONS[0], action="store_true",
                        help="draw with ASCII characters only (the default for TERM=vt100, "
                             "vt220, linux, dumb)")
    parser.add_argument(LOOK_OPTIONS[1], action="store_true",
                        help="no colours: states shown by characters and reverse video (the "
                             "default for TERM=vt100, vt220, dumb and with NO_COLOR set)")


def look_from_args(args: argparse.Namespace):  # -> MapLook, imported lazily with textual
    """The terminal's detected look, with --ascii and --mono forcing theirs."""
    from rescue.tui.widgets.sector_map import MapLook

    detected = MapLook.from_environment()
    return MapLook(ascii=args.ascii or detected.ascii,
                   monochrome=args.mono or detected.monochrome)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tui", help="the full-screen app: disks, imaging, restoring (what a bare `rescue` "
                    "opens)",
        description="Open the full-screen app on the Disks screen: image a disk, restore an "
                    "image, follow jobs on live sector maps. Works keyboard-only at 80x24, "
                    "over SSH and on serial consoles.")
    add_look_options(parser)
    parser.add_argument("--receive", action="store_true",
                        help="open on receiving a deployment: pick the disk it writes, type "
                             "its name, wait for `rescue deploy send` (what the stick's boot "
                             "entry 'receive a deployment' opens)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Also what a bare `rescue` runs."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the full-screen app needs a terminal; see `rescue --help` for the "
                         "commands")
    app = home_app(args)
    app.run()
    return app.exit_code()


def home_app(args: argparse.Namespace, cmdline: str = CMDLINE):  # -> RescueApp, lazily
    """The app `args` ask for; a stick booted to receive opens on receiving, whatever the
    options."""
    from rescue.tui.app import make_home_app

    receive = args.receive or booted_to_receive(cmdline)
    return make_home_app(look_from_args(args), receive=receive)
