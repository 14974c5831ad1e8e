"""An imaging job whose image lies on a share: the map kept on this machine as well as beside
the image, and a share that drops waited for, mounted again and the job resumed from the map.

The CLI (`rescue image URL`) and the console run the same loop; each says its status lines in
its own way (`say`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rescue.errors import DestinationError, RescueError
from rescue.stores.mount import ShareMount
from rescue.stores.state import MapMirror, local_map_path, newer_to_local
from rescue.stores.url import StoreUrl

Result = TypeVar("Result")
RECONNECT_TIMEOUT = 300.0  # seconds a lost share is waited for, unless told otherwise


def kept_map(url: StoreUrl, share: ShareMount, beside: str) -> str:
    """The map the job writes: for a map on the share, a copy on this machine started from the
    newer of the two; a map the user put elsewhere, as it is."""
    if not _on(share, beside):
        return beside
    local = local_map_path(url)
    newer_to_local(beside, local)
    return local


def resume_on_share(url: StoreUrl, share: ShareMount, beside: str, kept: str,
                 attempt: Callable[[], Result], say: Callable[[str], None],
                 checkpoint: float, reconnect_timeout: float) -> Result:
    """`attempt()` until it ends with the share in place, the map `kept` copied to `beside`
    as the job saves it; each new attempt resumes from the map, as a rerun would. A lost
    share not back within `reconnect_timeout` seconds is a DestinationError."""
    if kept == beside:
        return _resuming(url, share, attempt, say, reconnect_timeout, kept)
    with MapMirror(kept, beside, checkpoint) as mirror:
        try:
            return _resuming(url, share, attempt, say, reconnect_timeout, kept)
        finally:
            problem = None if share.lost() else mirror.copy()
            if problem:
                say(f"warning: {problem}")


def _on(share: ShareMount, path: str) -> bool:
    return path.startswith(share.path + "/")


def _resuming(url: StoreUrl, share: ShareMount, attempt: Callable[[], Result],
              say: Callable[[str], None], reconnect_timeout: float, kept: str) -> Result:
    """`attempt()` again after each loss of the share, once it is back."""
    while True:
        try:
            return attempt()
        except (RescueError, OSError) as error:
            if not share.lost():
                if isinstance(error, OSError):  # closing a file the share failed to write
                    raise DestinationError(f"{url}: {error.strerror}") from error
                raise
            reason = error.strerror if isinstance(error, OSError) else str(error)
            say(f"share lost, reconnecting: {url.parent} ({reason})")
            if not share.reconnect(reconnect_timeout):
                raise DestinationError(
                    f"{url.parent}: share lost and not back within {reconnect_timeout:g} "
                    f"s; the map is kept at {kept}: run the same command again to resume"
                ) from None
            say(f"share back: resuming {url}")
