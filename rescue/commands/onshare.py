"""`rescue image` onto a share: the map is kept on this machine as well as beside the image,
and a share that drops is waited for, mounted again and the job resumed from the map."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rescue.errors import DestinationError, RescueError
from rescue.stores.mount import ShareMount
from rescue.stores.state import copy_beside, local_map_path, newer_to_local
from rescue.stores.url import StoreUrl


def run_on_share(args: argparse.Namespace, url: StoreUrl, share: ShareMount,
                 run: Callable[[argparse.Namespace], int]) -> int:
    """`run(args)` until it ends with the share in place; exit 3 when a lost share is not
    back within --reconnect-timeout. Each new run resumes from the map, as a rerun would."""
    beside = args.map_path or f"{args.dest}.map"
    local = beside
    if beside.startswith(share.path + "/"):  # a map on the share: kept here as well
        local = local_map_path(url)
        newer_to_local(beside, local)
        args.map_path = local
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
                    f"s; the map is kept at {local}: run the same command again to resume"
                ) from None
            _say(args, f"share back: resuming {url}")
        finally:
            problem = None if local == beside or share.lost() else copy_beside(local, beside)
            if problem:
                print(f"warning: {problem}", file=sys.stderr)


def _say(args: argparse.Namespace, line: str) -> None:
    """A status line: on stderr, or as a JSON event with --json."""
    if args.json:
        print(json.dumps({"type": "share", "message": line}), flush=True)
    else:
        print(line, file=sys.stderr, flush=True)
