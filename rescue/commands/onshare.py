"""`rescue image` onto a share: the job runs in `rescue.stores.onshare`'s loop (the map kept
here too, a dropped share waited for and the job resumed), its status lines said here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rescue.stores.mount import ShareMount
from rescue.stores.onshare import kept_map, resume_on_share
from rescue.stores.url import StoreUrl


def run_on_share(args: argparse.Namespace, url: StoreUrl, share: ShareMount,
                 run: Callable[[argparse.Namespace], int]) -> int:
    """`run(args)` until it ends with the share in place; exit 3 when a lost share is not
    back within --reconnect-timeout. Each new run resumes from the map, as a rerun would."""
    beside = args.map_path or f"{args.dest}.map"
    kept = kept_map(url, share, beside)
    args.map_path = kept
    return resume_on_share(url, share, beside, kept, lambda: run(args),
                           lambda line: _say(args, line), args.checkpoint,
                           args.reconnect_timeout)


def _say(args: argparse.Namespace, line: str) -> None:
    """A status line: on stderr, or as a JSON event with --json (a warning always on stderr)."""
    if args.json and not line.startswith("warning: "):
        print(json.dumps({"type": "share", "message": line}), flush=True)
    else:
        print(line, file=sys.stderr, flush=True)
