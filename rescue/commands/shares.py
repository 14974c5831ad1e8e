"""Share URLs wherever a command takes an image: each one's folder is mounted for the
command's length and the command sees a local path."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from typing import Any, TextIO, cast

from rescue.errors import RescueError, UsageError
from rescue.stores.mount import ShareMount, as_urls, mounted
from rescue.stores.url import StoreUrl, is_store_url, parse

# a mount of an image outlives the command: its share would have to as well
KEPT_MOUNTS = ("mount",)


def run_on_shares(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """`run(args)` with every share URL among `args` mounted and replaced by its local path;
    `args.shares` maps each replaced argument to its URL and mount."""
    given = {key: value for key, value in vars(args).items()
             if isinstance(value, str) and is_store_url(value)}
    args.shares = {}
    if not given:
        return run(args)
    if args.command in KEPT_MOUNTS:
        raise UsageError(f"{args.command}: an image on a share cannot stay mounted after the "
                         "command; copy it here first (rescue convert URL FILE)")
    urls = {key: parse(value) for key, value in given.items()}  # all checked before mounting
    with ExitStack() as stack:
        stack.enter_context(_interrupted_by(signal.SIGTERM, signal.SIGHUP))
        for key, url in urls.items():
            share = stack.enter_context(mounted(url))
            setattr(args, key, share.local(url))
            args.shares[key] = (url, share)
        named = [share for _, share in args.shares.values()]
        stack.enter_context(redirect_stdout(cast(TextIO, _NamedByUrl(sys.stdout, named))))
        stack.enter_context(redirect_stderr(cast(TextIO, _NamedByUrl(sys.stderr, named))))
        try:
            return run(args)
        except RescueError as error:  # named as the user named it, not by the mount point
            error.args = (as_urls(str(error), named),)
            raise


@contextmanager
def _interrupted_by(*signals: signal.Signals) -> Iterator[None]:
    """These signals interrupt the command as ^C does, so its shares are unmounted on the way
    out (a job's own handlers take over while it runs): by default they end Python at once,
    leaving the mounts behind."""
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _NamedByUrl:
    """A stream on which each share's mount point is written as the share's URL: the user
    reads `image: ssh://nas/srv/sdb.qcow2`, not a private mount point."""

    def __init__(self, stream: TextIO, shares: list[ShareMount]) -> None:
        self._stream = stream
        self._shares = shares

    def write(self, text: str) -> int:
        self._stream.write(as_urls(text, self._shares))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding ...
        return getattr(self._stream, name)


def share_of(args: argparse.Namespace, key: str) -> tuple[StoreUrl, ShareMount] | None:
    """The URL and mount behind the argument `key`, if it was a share URL."""
    shares: dict[str, tuple[StoreUrl, ShareMount]] = getattr(args, "shares", {})
    return shares.get(key)
