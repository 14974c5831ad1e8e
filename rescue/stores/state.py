"""The local copy of an image's mapfile: a share that drops mid-write must not take the record
of what was rescued with it."""

from __future__ import annotations

import os
import re
import shutil

from rescue.stores.url import StoreUrl


def state_dir() -> str:
    """$XDG_STATE_HOME/rescue, else ~/.local/state/rescue, else /var/lib/rescue."""
    base = os.environ.get("XDG_STATE_HOME")
    if not base:
        home = os.path.expanduser("~")
        base = os.path.join(home, ".local", "state") if home != "~" else "/var/lib"
    return os.path.join(base, "rescue")


def local_map_path(image: StoreUrl) -> str:
    """Where the mapfile of the image at `image` is kept on this machine; one per URL."""
    folder = os.path.join(state_dir(), "maps")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{image.scheme}_{image.host}_{image.port or ''}"
                                              f"{image.path}")
    return os.path.join(folder, f"{name}.map")


def newer_to_local(remote: str, local: str) -> None:
    """Start from the newer of the two copies: the share's when another machine went on
    with the job, ours when the share lost what it had not yet written."""
    try:
        remote_time = os.path.getmtime(remote)
    except OSError:
        return
    if not os.path.exists(local) or remote_time > os.path.getmtime(local):
        shutil.copy2(remote, local)


def copy_beside(local: str, remote: str) -> str | None:
    """Put the local map beside the image; what went wrong, if it could not."""
    if not os.path.exists(local):
        return None
    try:
        shutil.copy2(local, remote + ".tmp")
        os.replace(remote + ".tmp", remote)
    except OSError as error:
        return f"the map could not be copied beside the image ({error.strerror}); it is " \
               f"kept at {local}"
    return None
