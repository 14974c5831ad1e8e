"""The rescue Textual app: the Disks home screen, wizards, jobs with live sector maps, the
mapfile viewer, help, safe quit.

Two modes keep two screen stacks: "disks" (the Disks screen and what is opened from it) and
"jobs" (the jobs list and the job screens); a job started from a wizard moves to "jobs".

Every imaging job runs `ImageJob.run()` in a thread worker owned by the app; cancelling goes
through the job's JobControl, so a cancelled job saves its map exactly as the CLI's does. One
handler, `on_worker_state_changed`, records every job's outcome and shows every worker failure
as one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar, cast

from textual.app import App
from textual.binding import Binding, BindingType
from textual.filter import LineFilter, NoColor
from textual.screen import Screen
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.jobs import JobControl
from rescue.engine.restore import RestoreJob
from rescue.errors import ExitCode
from rescue.formats import mapfile
from rescue.sim.spec import PREFIX as SIM_PREFIX
from rescue.stores.mount import ShareMount, as_urls
from rescue.tui.glyphs import ASCII_CLASS, KEY_WORDS, MONO_CLASS, AsciiFilter
from rescue.tui.jobs import BackgroundJob, OnShare, RunningJob, RunningRestore, one_line
from rescue.tui.screens.dialogs import HelpScreen, QuitScreen
from rescue.tui.screens.disks import DisksScreen, ReceiveHome
from rescue.tui.screens.job import JobScreen, JobScreenBase
from rescue.tui.screens.jobs import JobsScreen
from rescue.tui.screens.map_viewer import MapViewerScreen
from rescue.tui.screens.restore import RestoreScreen
from rescue.tui.screens.ssh import SshScreen
from rescue.tui.widgets.sector_map import MapLook

JOB_POLL_SECONDS = 0.5  # phase changes reach the log even while no job screen shows
NOTE_SECONDS = 4  # a finished job's notification: the jobs list keeps its outcome anyway


class RescueApp(App[int]):
    CSS_PATH = "rescue.tcss"
    TITLE = "rescue"
    ENABLE_COMMAND_PALETTE = False  # its footer entry costs columns an 80x24 screen lacks
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {"jobs": JobsScreen}
    DEFAULT_MODE = "jobs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("f1,question_mark", "help", "Help"),
        Binding("d", "show_disks", "Disks"),
        Binding("j", "show_jobs", "Jobs"),
        Binding("s", "remote", "SSH", show=False),
    ]

    def __init__(self, job: ImageJob | None = None, map_path: str | None = None,
                 loaded: mapfile.Mapfile | None = None, look: MapLook | None = None,
                 home: str = "jobs", simulated: tuple[str, ...] = ()) -> None:
        """`simulated`: the demo's disks (sim: specs), listed on the Disks screen instead of
        the machine's own, which are then neither listed nor opened."""
        super().__init__()
        self.add_mode("disks", partial(DisksScreen, simulated))
        self.add_mode("receive", ReceiveHome)
        self.look = look or MapLook.from_environment()
        self.set_class(self.look.ascii, ASCII_CLASS)
        self.set_class(self.look.monochrome, MONO_CLASS)
        self._look_filters: list[LineFilter] = (
            ([NoColor()] if self.look.monochrome else [])
            + ([AsciiFilter()] if self.look.ascii else []))
        self.jobs: list[BackgroundJob] = []
        self.folders: dict[str, str] = {}  # pickers start where the last one of theirs ended
        self.shares: list[ShareMount] = []  # opened to read an image on them
        self.home = home
        self._first_job = job
        self._map = (map_path, loaded)

    def on_mount(self) -> None:
        self.set_interval(JOB_POLL_SECONDS, self._poll_jobs)
        if self.home != self.current_mode:
            self.switch_mode(self.home)
        if self._first_job is not None:
            self.start_job(self._first_job)
        map_path, loaded = self._map
        if map_path is not None:
            self.open_map(map_path, loaded)

    # ---- look ------------------------------------------------------------------------------

    def get_line_filters(self) -> Sequence[LineFilter]:
        """Textual's filters, then no colour and ASCII only as the look says."""
        return [*super().get_line_filters(), *self._look_filters]

    def get_key_display(self, binding: Binding) -> str:
        """Keys as words on an ASCII terminal: Textual shows enter and backspace as symbols."""
        shown = super().get_key_display(binding)
        if self.look.ascii and not shown.isascii():
            return KEY_WORDS.get(binding.parse_key()[1], shown)
        return shown

    # ---- jobs ------------------------------------------------------------------------------

    def start_job(self, job: ImageJob, verify: bool = False,
                  share: OnShare | None = None) -> RunningJob:
        """Run an opened imaging job in a thread worker and show its screen; `verify` checks
        the image once the rescue has run to its end; `share`, mounted, is let go after."""
        request = job.request
        running = RunningJob(job, f"{request.source} → {os.path.basename(request.dest)}",
                             share)
        running.verify = verify
        self._start(running, f"started; map {request.mapfile_path}")
        if share is not None:
            running.note(f"image on {share.url}; its map is kept here and copied beside it")
        if request.source.startswith(SIM_PREFIX):  # no file system there: nothing to warn of
            running.note("the simulated disk holds no file system: every sector is imaged")
            return running
        for warning in job.warnings:  # e.g. a partition imaged whole, or a backup superblock
            running.note(f"warning: {warning}")
        return running

    def start_restore(self, job: RestoreJob) -> RunningRestore:
        """Run a checked restore in a thread worker and show its screen."""
        request = job.request
        running = RunningRestore(job, f"{os.path.basename(request.image)} → "
                                      f"{', '.join(request.targets)}")
        image = as_urls(request.image, self.shares)  # an image on a share by its URL
        self._start(running, f"started: {image} onto {', '.join(request.targets)}")
        return running

    def _start(self, running: BackgroundJob, first_note: str) -> None:
        """Show the job's screen, then let its work begin: the worker waits until the app
        has drawn the screen and the screen has nothing left to lay out, the job's clock
        held meanwhile."""
        running.control.clock.hold()
        running.worker = self.run_worker(running.run_once_shown, name=running.title,
                                         group="jobs", thread=True, exit_on_error=False)
        self.jobs.append(running)
        running.note(first_note)
        self.open_job(running)
        self.call_after_refresh(self.screen.call_after_refresh, running.shown)

    def open_job(self, running: BackgroundJob) -> None:
        self.action_show_jobs()
        if isinstance(running, RunningRestore):
            self.push_screen(RestoreScreen(running))
        else:
            self.push_screen(JobScreen(cast(RunningJob, running), self.look))

    def open_map(self, path: str, loaded: mapfile.Mapfile | None = None) -> None:
        """Show a mapfile read-only; `loaded` saves reading it twice."""
        self.push_screen(MapViewerScreen(path, loaded or mapfile.load(path), self.look))

    def open_image(self, path: str) -> None:
        """Browse the partitions and files of an image (The Sleuth Kit is loaded only now)."""
        from rescue.tui.screens.browser import ImageBrowser

        self.push_screen(ImageBrowser(path))

    def _poll_jobs(self) -> None:
        for running in self.jobs:
            if not running.done:
                running.note_phase()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker results and failures arrive."""
        running = next((j for j in self.jobs if j.worker is event.worker), None)
        if event.state == WorkerState.SUCCESS and running is not None:
            running.finished(event.worker.result)
            if not self._shows(running):
                self.notify(f"{running.title}: {running.state}", timeout=NOTE_SECONDS)
        elif event.state == WorkerState.ERROR and event.worker.error is not None:
            if running is not None:
                running.failed(event.worker.error)
            if running is None or not self._shows(running):
                self.notify(one_line(event.worker.error), title=event.worker.name,
                            severity="error", timeout=15)

    def _shows(self, running: BackgroundJob) -> bool:
        """Whether `running`'s own screen shows: its title and log then tell how it ended,
        and a notification would only cover them."""
        return isinstance(self.screen, JobScreenBase) and self.screen.running is running

    def exit_code(self) -> int:
        """What the app exits with (`rescue demo` on a terminal, `rescue tui`): the first job's
        outcome, as `rescue image` does; OK when no job was started."""
        return int(self.jobs[0].exit_code()) if self.jobs else int(ExitCode.OK)

    # ---- actions ---------------------------------------------------------------------------

    def action_show_jobs(self) -> None:
        self._show_home_of("jobs")

    def _show_home_of(self, mode: str) -> None:
        """The screen at the bottom of `mode`'s stack, whatever was opened from it."""
        self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keep the footer short at 80 columns: no key for the screen already shown."""
        if action == "show_disks":
            return type(self.screen) is not DisksScreen  # from ReceiveHome too
        if action == "show_jobs":  # job screens bind escape to it too: hide it only here
            return not isinstance(self.screen, JobsScreen)
        return True

    def action_show_disks(self) -> None:
        self._show_home_of("disks")

    def action_remote(self) -> None:
        if not isinstance(self.screen, SshScreen):
            self.push_screen(SshScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Quit at once when nothing runs; otherwise ask, then cancel and wait for the maps."""
        active = [running for running in self.jobs if not running.done]
        if not active:
            self.exit(self.exit_code())
        elif not isinstance(self.screen, QuitScreen):
            self.push_screen(QuitScreen(len(active)), self._quit_answered)

    def _quit_answered(self, answer: bool | None) -> None:
        if answer:
            self.run_worker(self.cancel_jobs_and_exit(), group="quit")

    async def cancel_jobs_and_exit(self) -> None:
        for running in self.jobs:
            running.cancel()
        await self.wait_for_jobs()
        self.exit(self.exit_code())

    async def wait_for_jobs(self) -> None:
        """Until every job's thread has returned (a cancelled job returns once its map is
        saved); failures are already reported by the state handler."""
        for running in self.jobs:
            if running.worker is not None:
                with contextlib.suppress(WorkerFailed, WorkerCancelled):
                    await running.worker.wait()

    def on_unmount(self) -> None:
        """Leaving by any other way still stops every job, each saving its map; the shares
        opened to read images are let go."""
        for running in self.jobs:
            running.cancel()
        while self.shares:
            self.shares.pop().close()


def make_app(request: ImageRequest | None = None, map_path: str | None = None,
             look: MapLook | None = None) -> RescueApp:
    """An app showing a new imaging job for `request` and/or the mapfile at `map_path`.
    Opening the job or reading the map happens here, so bad input raises a RescueError
    before the screen is taken over."""
    job = ImageJob(request, held_control()) if request is not None else None
    try:
        loaded = mapfile.load(map_path) if map_path is not None else None
    except BaseException:
        if job is not None:
            job.close()
        raise
    return RescueApp(job, map_path, loaded, look)


def held_control() -> JobControl:
    """A job's control whose clock waits for the job's work to start (`RescueApp._start`),
    not for the app: the app's start-up is not the job's time."""
    control = JobControl()
    control.clock.hold()
    return control


def make_home_app(look: MapLook | None = None, receive: bool = False) -> RescueApp:
    """The app a bare `rescue` opens: the Disks screen first, or with `receive` the disks to
    receive a deployment onto (a stick booted for that)."""
    return RescueApp(look=look, home="receive" if receive else "disks")


def make_demo_app(spec: str, folder: str, look: MapLook | None = None,
                  command_line: str = "") -> RescueApp:
    """The app `rescue demo` shows: the simulated disk `spec` imaged into `folder`; its Disks
    screen lists that disk alone."""
    return RescueApp(ImageJob(ImageRequest.demo(spec, folder, command_line), held_control()),
                     look=look, simulated=(spec,))
