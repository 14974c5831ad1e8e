"""Jobs as the app keeps them: the engine's job, its worker, its outcome and its log.

The work itself runs in a Textual thread worker owned by the app, so it keeps running when its
screen is closed; screens only read the job's progress. Imaging and restoring differ only in
what they run, how they summarise themselves and what exit code their outcome means.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from textual.worker import Worker

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.jobs import JobControl, Progress
from rescue.engine.rescue import Outcome
from rescue.engine.restore import RestoreJob, RestoreProgress, RestoreResult
from rescue.engine.verify import verify
from rescue.errors import ExitCode, RescueError
from rescue.fs.affected import image_damage_report
from rescue.rangemap import BAD, FINISHED, MapSnapshot
from rescue.sim.spec import PREFIX as SIM_PREFIX
from rescue.stores.mount import ShareMount
from rescue.stores.onshare import RECONNECT_TIMEOUT, kept_map, resume_on_share
from rescue.stores.url import StoreUrl
from rescue.units import human_size

Result = TypeVar("Result")
Shown = TypeVar("Shown")  # the progress a job's screen draws

AFFECTED_SHOWN = 8  # the log lists this many; `rescue report` lists them all


def one_line(error: BaseException) -> str:
    """The one line a user sees for a failed job; unexpected errors name their type."""
    if isinstance(error, RescueError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class BackgroundJob(Generic[Result, Shown]):
    """One job in the app, running or done; pause and cancel go through its JobControl.

    What its screen reads: `poll()` for the progress now, `state`, `log`, and `summary()` for
    the jobs list; an imaging job adds its map (`snapshot()`, `map_version()`)."""

    def __init__(self, title: str, control: JobControl) -> None:
        self.title = title
        self.control = control
        self.worker: Worker[Result] | None = None
        self.outcome: Result | None = None
        self.error: BaseException | None = None
        self.cancelling = False
        self.log: list[str] = []  # phase changes and user actions: a few dozen lines
        self._last_phase = ""
        self._shown = threading.Event()  # the work waits for its screen to be up

    # ---- what subclasses provide -----------------------------------------------------------

    def run(self) -> Result:
        """The work, in the worker's thread."""
        raise NotImplementedError

    def outcome_word(self, outcome: Result) -> str:
        raise NotImplementedError

    def outcome_exit(self, outcome: Result) -> ExitCode:
        raise NotImplementedError

    def summary(self) -> str:
        """What the jobs list shows after the title and state."""
        raise NotImplementedError

    def phase(self) -> str:
        """The current phase, logged whenever it changes."""
        raise NotImplementedError

    def poll(self) -> Shown:
        """The job's progress now, for its screen; phase changes go to the log."""
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------

    def run_once_shown(self) -> Result:
        """The worker's function: `run()`, once the app has drawn the job's screen. Building a
        screen holds the interpreter for a moment, which the job, in the same process, would
        otherwise lose."""
        self._shown.wait()
        return self.run()

    def shown(self) -> None:
        """The job's screen is up: its clock (held until now, so that its elapsed time and
        rates count only its work) starts, unless it was paused meanwhile, and so does it."""
        if not self.control.paused:
            self.control.clock.release()
        self._shown.set()

    @property
    def done(self) -> bool:
        return self.outcome is not None or self.error is not None

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if self.outcome is not None:
            return self.outcome_word(self.outcome)
        if self.cancelling:
            return "cancelling"
        return "paused" if self.control.paused else "running"

    def exit_code(self) -> ExitCode:
        if isinstance(self.error, RescueError):
            return self.error.exit_code
        if self.error is not None:
            return ExitCode.USAGE
        if self.outcome is None:
            return ExitCode.INTERRUPTED
        return self.outcome_exit(self.outcome)

    def note(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def note_phase(self) -> None:
        phase = self.phase()
        if phase != self._last_phase and not self.done:
            self._last_phase = phase
            self.note(phase)

    def toggle_pause(self) -> None:
        if self.control.paused:
            self.control.resume()
            self.note("resumed")
        else:
            self.control.pause()
            self.note("paused")

    def cancel(self) -> None:
        """Ask the job to stop; it saves its map and ends as interrupted (a job not started
        yet starts to do so)."""
        self._shown.set()
        if not self.done and not self.cancelling:
            self.cancelling = True
            self.control.cancel()
            self.note("cancelling: saving the map")

    def finished(self, outcome: Result) -> None:
        self.outcome = outcome
        self.note(self.finished_note(outcome))

    def finished_note(self, outcome: Result) -> str:
        return self.outcome_word(outcome)

    def failed(self, error: BaseException) -> None:
        self.error = error
        self.note(f"error: {one_line(error)}")


@dataclass
class OnShare:
    """The share an imaging job writes its image to, mounted for the job's length."""

    url: StoreUrl  # the image, as the user named it
    mount: ShareMount
    beside: str  # the map beside the image, on the share
    kept: str  # the map the job writes, on this machine
    reconnect_timeout: float = RECONNECT_TIMEOUT  # seconds a lost share is waited for


def open_on_share(request: ImageRequest, url: StoreUrl,
                  reconnect_timeout: float = RECONNECT_TIMEOUT) -> tuple[ImageJob, OnShare]:
    """Mount the share holding `url` and open the job writing there (its map kept here too);
    the share is let go again if the job cannot be opened."""
    mount = ShareMount(url.parent, interactive=False)  # the console owns the terminal
    try:
        local = mount.local(url)
        beside = request.map_path or f"{local}.map"
        kept = kept_map(url, mount, beside)
        job = ImageJob(replace(request, dest=local, map_path=kept))
    except BaseException:
        mount.close()
        raise
    return job, OnShare(url, mount, beside, kept, reconnect_timeout)


class RunningJob(BackgroundJob[Outcome, Progress]):
    """An imaging job: the engine's ImageJob; on a share, run as `rescue image URL` runs it."""

    def __init__(self, job: ImageJob, title: str, share: OnShare | None = None) -> None:
        super().__init__(title, job.control)
        self.job = job
        self.share = share
        self.verify = False  # `rescue verify` the image once the rescue has run to its end
        self._first_noted = 0  # chosen files (--first) whose outcome the log has
        self._attempts = 0

    def run(self) -> Outcome:
        try:
            outcome = self.rescue()
            if outcome is Outcome.UNREADABLE:
                self.note_affected_files()
            if self.verify and outcome.finished:
                self.note_verification()
            return outcome
        finally:
            if self.share is not None:
                self.share.mount.close()

    def rescue(self) -> Outcome:
        """The job; on a share, resumed each time the share comes back after a loss."""
        share = self.share
        if share is None:
            return self.job.run()
        return resume_on_share(share.url, share.mount, share.beside, share.kept,
                               self._attempt, self.note,
                               self.job.request.options.checkpoint_interval,
                               share.reconnect_timeout)

    def _attempt(self) -> Outcome:
        """One run of the job; after the first, a new one resuming from the map."""
        if self._attempts:
            self.job = ImageJob(self.job.request, self.control)
        self._attempts += 1
        return self.job.run()

    def note_verification(self) -> None:
        """What `rescue verify` says of the finished image, in the job's log."""
        self.note("verifying the image")
        dest = self.job.request.dest
        try:  # named as the job's title names it: the log's lines are one screen wide
            checked = verify(dest, self.job.format)
            lines = replace(checked, image=os.path.basename(dest)).lines()
        except RescueError as exc:
            lines = [f"not possible ({one_line(exc)})"]
        for line in lines:
            self.note(f"verify: {line}")

    def note_affected_files(self) -> None:
        """Which files the unreadable sectors hit, as `rescue report` lists them."""
        request = self.job.request
        if request.source.startswith(SIM_PREFIX):
            self.note("affected files: none to name: the simulated disk holds no file system, "
                      "so its damage is bytes, not files; the map shows them")
            return
        hint = (f"the map shows which bytes were lost; `rescue mount {request.dest} DIR` "
                "shows what can be read")
        try:
            report, _ = image_damage_report(request.dest, request.mapfile_path, self.job.format)
        except RescueError as exc:
            self.note(f"affected files: cannot be named ({one_line(exc)}); {hint}")
            return
        if not report.files and report.warnings:
            self.note(f"affected files: cannot be named ({report.warnings[0]}); {hint}")
            return
        self.note(f"affected files: {len(report.files)}")
        for item in report.files[:AFFECTED_SHOWN]:
            lost = "all" if item.lost is None else human_size(item.lost)
            where = f"{item.partition}:" if item.partition is not None else ""
            self.note(f"  {where}{item.path} (lost {lost})")
        if len(report.files) > AFFECTED_SHOWN:
            self.note(f"  ... {len(report.files) - AFFECTED_SHOWN} more: rescue report "
                      f"{request.dest}")

    def outcome_word(self, outcome: Outcome) -> str:
        return outcome.value

    def outcome_exit(self, outcome: Outcome) -> ExitCode:
        return outcome.exit_code

    def finished_note(self, outcome: Outcome) -> str:
        return f"{outcome.value}; map saved to {self.job.request.mapfile_path}"

    def phase(self) -> str:
        progress = self.job.progress()
        return f"{progress.phase}, pass {progress.pass_no}"

    def poll(self) -> Progress:
        self.note_phase()
        progress = self.job.progress()
        self.note_first_files(progress)
        return progress

    def note_first_files(self, progress: Progress) -> None:
        """The files the job reads first that settled damaged since the last poll."""
        first = progress.first
        if first is None:
            return
        for state in first.settled[self._first_noted:]:
            if not state.complete:
                self.note(f"first: {state.file.name} {state.summary()}")
        self._first_noted = len(first.settled)

    def map_version(self) -> int:
        """Changes whenever the map does: a new snapshot is worth taking only then."""
        return self.job.rescue.rmap.version

    def snapshot(self) -> MapSnapshot:
        return self.job.snapshot()

    def summary(self) -> str:
        totals = self.job.rescue.totals()
        return f"rescued {human_size(totals[FINISHED])}  bad {human_size(totals[BAD])}"


class RunningRestore(BackgroundJob[RestoreResult, RestoreProgress]):
    """A restore onto one or more targets: the engine's RestoreJob."""

    def __init__(self, job: RestoreJob, title: str) -> None:
        super().__init__(title, job.control)
        self.job = job

    def run(self) -> RestoreResult:
        return self.job.run()

    def outcome_word(self, outcome: RestoreResult) -> str:
        return outcome.outcome

    def outcome_exit(self, outcome: RestoreResult) -> ExitCode:
        return outcome.outcome.exit_code

    def finished_note(self, outcome: RestoreResult) -> str:
        phases = ", ".join(f"{target.target} {target.phase}" for target in outcome.targets)
        damage = "" if outcome.image.intact else f"; {outcome.image.brief()}"
        return f"{outcome.outcome}: {phases}{damage}"

    def phase(self) -> str:
        return self.job.progress().phase

    def poll(self) -> RestoreProgress:
        self.note_phase()
        return self.job.progress()

    def summary(self) -> str:
        targets = self.job.progress().targets
        written = sum(target.written for target in targets)
        size = sum(target.size for target in targets)
        return f"written {human_size(written)} of {human_size(size)}"
