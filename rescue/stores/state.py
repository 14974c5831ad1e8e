"""The local copy of an image's mapfile: a share that drops mid-write must not take the record
of what was rescued with it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading

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
    unique = hashlib.sha256(str(image).encode()).hexdigest()[:8]  # a/b and a_b both read a_b
    return os.path.join(folder, f"{name}-{unique}.map")


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


class MapMirror:
    """Copies the local map beside the image each time the job saved it anew, checked every
    `interval` seconds while the job runs: a rescue stick keeps its own state in RAM, and a
    stick that restarts must find a map beside the image to resume from."""

    def __init__(self, local: str, remote: str, interval: float) -> None:
        self.local, self.remote, self.interval = local, remote, interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._copied: int | None = None  # the mtime of the local map last copied
        self._thread = threading.Thread(target=self._run, name="rescue-map-mirror",
                                        daemon=True)

    def __enter__(self) -> MapMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def copy(self) -> str | None:
        """Copy the map if it changed since the last copy; what went wrong, if it could not."""
        with self._lock:
            try:
                saved = os.stat(self.local).st_mtime_ns
            except FileNotFoundError:
                return None
            if saved == self._copied:
                return None
            problem = copy_beside(self.local, self.remote)
            if problem is None:
                self._copied = saved
            return problem

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.copy()  # a share that is away is told by the job, not here
