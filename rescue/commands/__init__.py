"""CLI subcommands, one module each.

Each module has `add_parser(subparsers)` to register itself and `run(args)` returning an exit
code; rescue/cli.py only dispatches.
"""

from __future__ import annotations

import argparse

from rescue.errors import UsageError
from rescue.formats.image import FORMATS, default_threads
from rescue.units import parse_size


def size_argument(text: str) -> int:
    """parse_size as an argparse type: a bad size is a usage error argparse reports, exit 2,
    as it does for every option value it cannot read."""
    try:
        return parse_size(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_image_argument(parser: argparse.ArgumentParser, name: str = "image",
                       option: str = "--format", help: str = "image file or device") -> None:
    """The image a command reads, and the option that names its format when the name and
    content do not: a raw image is only taken by a raw name (.img .raw .dd .bin .iso)."""
    parser.add_argument(name, help=help)
    parser.add_argument(option, dest="image_format", choices=FORMATS,
                        help=f"read {name.upper()} as this format instead of detecting it "
                             "(raw: a raw image whose name does not end in .img)")


def add_threads_argument(parser: argparse.ArgumentParser, work: str) -> None:
    """--threads N: how many worker threads do the job's `work` (compressing, decoding)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"worker threads for {work} (default: one per CPU this process "
                             f"may use, here {default_threads()})")
