"""CLI subcommands, one module each.

Each module has `add_parser(subparsers)` to register itself and `run(args)` returning an exit
code; rescue/cli.py only dispatches.
"""

from __future__ import annotations

import argparse

from rescue.errors import UsageError
from rescue.formats.image import READ_FORMATS, default_threads
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
    parser.add_argument(option, dest="image_format", choices=READ_FORMATS,
                        help=f"read {name.upper()} as this format instead of detecting it "
                             "(raw: a raw image whose name does not end in .img)")
    add_passphrase_argument(parser)


def add_encrypt_argument(parser: argparse.ArgumentParser) -> None:
    """--encrypt: the image written is a qcow2 encrypted with QEMU's LUKS."""
    parser.add_argument("--encrypt", action="store_true",
                        help="encrypt the qcow2 image with LUKS (QEMU's own encryption; "
                             "not compressed); the passphrase is asked twice, or read "
                             "from --passphrase-file or RESCUE_PASSPHRASE")


def add_passphrase_argument(parser: argparse.ArgumentParser) -> None:
    """--passphrase-file FILE: the passphrase of an encrypted qcow2, read or made; else
    RESCUE_PASSPHRASE, else a prompt on a terminal."""
    parser.add_argument("--passphrase-file", metavar="FILE",
                        help="read an encrypted image's passphrase from the first line of FILE "
                             "(else RESCUE_PASSPHRASE, else a prompt)")


def take_passphrase(args: argparse.Namespace) -> None:
    """Hand the passphrase a command was given to the image opener, or how to ask for it: a
    new encrypted image's is asked twice, without echo. It is kept in memory only."""
    import getpass
    import sys

    from rescue.formats import qemuexport

    if "passphrase_file" not in vars(args):
        return  # the console draws on the terminal: it never prompts there
    if args.passphrase_file:
        qemuexport.use_passphrase(qemuexport.read_passphrase_file(args.passphrase_file))
        return
    if not sys.stdin.isatty():
        return

    def ask(path: str) -> bytes:
        return getpass.getpass(f"passphrase for {path}: ").encode()

    def ask_twice(path: str) -> bytes:
        first = ask(path)
        if not first:
            raise UsageError("an empty passphrase protects nothing")
        if getpass.getpass("the same passphrase again: ").encode() != first:
            raise UsageError("the two passphrases differ; nothing was written")
        return first

    qemuexport.ask_passphrase_with(ask_twice if getattr(args, "encrypt", False) else ask)


def add_threads_argument(parser: argparse.ArgumentParser, work: str) -> None:
    """--threads N: how many worker threads do the job's `work` (compressing, decoding)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"worker threads for {work} (default: one per CPU this process "
                             f"may use, here {default_threads()})")
