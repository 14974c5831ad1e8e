"""The map viewer: any GNU ddrescue mapfile, read-only, reloaded whenever the file changes.

Watching a running ddrescue from a second terminal is the point, so the file is polled (mtime
and size, once a second) and reloaded in a thread; a map caught half-written is detected by the
file changing during the read and read again on the next poll.
"""

from __future__ import annotations

import os
import time
from functools import partial

from rescue.engine.jobs import Phase
from rescue.errors import FormatError
from rescue.formats import mapfile
from rescue.tui.screens.map_screen import MapScreen
from rescue.tui.widgets.counters import totals_text
from rescue.tui.widgets.sector_map import MapLook

POLL_SECONDS = 1.0

FileStamp = tuple[int, int] | None


def file_stamp(path: str) -> FileStamp:
    """(mtime in ns, size), or None while the file is missing (ddrescue may be replacing it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def saved_at(stamp: FileStamp) -> str:
    """When the shown map was written: what tells a watcher whether ddrescue still saves it."""
    return "?" if stamp is None else time.strftime("%H:%M:%S", time.localtime(stamp[0] / 1e9))


class MapViewerScreen(MapScreen):
    """Shows one mapfile and follows its changes."""

    def __init__(self, path: str, loaded: mapfile.Mapfile, look: MapLook | None = None,
                 poll_seconds: float | None = None) -> None:
        super().__init__(look)
        self.path = path
        self.loaded = loaded
        self.poll_seconds = poll_seconds or POLL_SECONDS
        self.stamp = file_stamp(path)
        self.problem = ""

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()
        self.set_interval(self.poll_seconds, self.check_file)

    def check_file(self) -> None:
        stamp = file_stamp(self.path)
        if stamp is not None and stamp != self.stamp:
            # an app worker, so the app's one failure handler covers it
            self.app.run_worker(partial(self.reload, stamp), name="reload map", thread=True,
                                group="map-reload", exclusive=True, exit_on_error=False)

    def reload(self, stamp: FileStamp) -> None:
        """Runs in a thread: a million-area map takes a while to parse."""
        try:
            loaded = mapfile.load(self.path)
        except FormatError as exc:
            if file_stamp(self.path) == stamp:  # complete but bad: say so until it changes
                self.app.call_from_thread(self._reload_failed, stamp, str(exc))
            return
        if file_stamp(self.path) == stamp:  # otherwise it changed while read: next poll
            self.app.call_from_thread(self._reloaded, stamp, loaded)

    def _reloaded(self, stamp: FileStamp, loaded: mapfile.Mapfile) -> None:
        self.stamp, self.loaded, self.problem = stamp, loaded, ""
        self._draw()

    def _reload_failed(self, stamp: FileStamp, message: str) -> None:
        self.stamp, self.problem = stamp, message
        self._draw()

    def _draw(self) -> None:
        current = self.loaded
        rmap = current.rmap
        phase = mapfile.PHASES.get(current.current_status, current.current_status)
        self.set_title(f"{self.path} (read-only, saved {saved_at(self.stamp)})")
        status = (f"cannot reload: {self.problem}" if self.problem else
                  f"{phase} pass {current.current_pass} at {current.current_pos:#x}")
        self.set_counters(f"{totals_text(rmap.totals(), rmap.size)}\n{status}")
        finished = current.current_status == Phase.FINISHED.status
        position = None if finished else current.current_pos
        self.sector_map.show(rmap.snapshot(), position)
