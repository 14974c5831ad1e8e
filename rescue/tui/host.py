"""What screens ask of the app they run in: its jobs, and starting or opening one.

A Protocol, so screens depend on these few methods and not on the app module that imports them.
"""

from __future__ import annotations

from typing import Protocol, cast

from textual.screen import Screen

from rescue.engine.imaging import ImageJob
from rescue.engine.restore import RestoreJob
from rescue.stores.mount import ShareMount
from rescue.tui.jobs import BackgroundJob, OnShare, RunningJob, RunningRestore


class JobHost(Protocol):
    jobs: list[BackgroundJob]
    folders: dict[str, str]  # the last folder chosen for each purpose in this session
    shares: list[ShareMount]  # shares opened to read an image, unmounted when the app quits

    def start_job(self, job: ImageJob, verify: bool = False,
                  share: OnShare | None = None) -> RunningJob: ...

    def start_restore(self, job: RestoreJob) -> RunningRestore: ...

    def open_job(self, running: BackgroundJob) -> None: ...

    def open_image(self, path: str) -> None: ...


def host_of(screen: Screen) -> JobHost:
    """The app `screen` runs in (always the rescue app)."""
    return cast(JobHost, screen.app)
