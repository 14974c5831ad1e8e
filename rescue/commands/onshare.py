"""`rescue image` onto a share: the map is kept on this machine as well as beside the image,
and a share that drops is waited for, mounted again and the job resumed from the map."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rescue.errors import DestinationError, RescueError
from rescue.stores.mount import ShareMount
from rescue.stores.state import MapMirror, local_map_path, newer_to_local
from rescue.stores.url import StoreUrl


def run_on_share(args: argparse.Namespace, url: StoreUrl, share: ShareMount,
                 run: Callable[[argparse.Namespace], int]) -> int:
    """`run(args)` until it ends with the share in place; exit 3 when a lost share is not
    back within --reconnect-timeout. Each new run resumes from the map, as a rerun would."""
    beside = args.map_path or f"{args.dest}.map"
    if not beside.startswith(share.path + "/"):  # the user's own map, not on the share
        return _resuming(args, url, share, run, beside)
    local = local_map_path(url)  # the map on the share is kept here as well
    newer_to_local(beside, local)
    args.map_path = local
    with MapMirror(local, beside, args.checkpoint) as mirror:
        try:
            return _resuming(args, url, share, run, local)
        finally:
            problem = None if share.lost() else mirror.copy()
            if problem:
                print(f"warning: {problem}", file=sys.stderr)


def _resuming(args: argparse.Namespace, url: StoreUrl, share: ShareMount,
              run: Callable[[argparse.Namespace], int], kept: str) -> int:
    """`run(args)` again after each loss of the share, once it is back."""
    while True:
        try:
            return run(args)
        except (RescueError, OSError) as error:
            if not share.lost():
                if isinstance(error, OSError):  # closing a file the share failed to write
                    raise DestinationError(f"{url}: {error.strerror}") from error
                raise
            reason = error.strerror if isinstance(error, OSError) else str(error)
            _say(args, f"share lost, reconnecting: {url.parent} ({reason})")
            if not share.reconnect(args.reconnect_timeout):
                raise DestinationError(
                    f"{url.parent}: share lost and not back within {args.reconnect_timeout:g} "
                    f"s; the map is kept at {kept}: run the same command again to resume"
                ) from None
            _say(args, f"share back: resuming {url}")


def _say(args: argparse.Namespace, line: str) -> None:
    """A status line: on stderr, or as a JSON event with --json."""
    if args.json:
        print(json.dumps({"type": "share", "message": line}), flush=True)
    else:
        print(line, file=sys.stderr, flush=True)
