"""Small modal screens: the key help and the question asked before quitting a running job."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
rescue — keys (every screen works from the keyboard alone)

Everywhere
  d            Disks: every disk and partition (the home screen)
  j            Jobs: every job of this session (they run in the background)
  s            remote access: addresses; SSH on or off (live system)
  F1 or ?      this help
  q            quit (running jobs are cancelled, their maps saved)

Disks
  up / down    choose a disk or partition
  i            image it (opens the image wizard)
  r            restore an image onto it (opens the restore wizard, which
               asks you to type the target's name or serial)
  e            receive a multicast deployment onto it (`rescue deploy send
               IMAGE` on another machine); asks for its name or serial too
  o            open an image: browse its partitions and files, extract
  v or enter   inspect it: model, serial, health, partitions, mounts
  g            discover again (hotplug is followed anyway)

Wizards
  tab          next field        enter    next step (start, at the end)
  ctrl+n       next step         ctrl+b   previous step
  escape       leave without doing anything
  Browse...    pick a folder: space opens one, enter chooses it,
               backspace goes up
  ctrl+o       pick an image from a list (restore wizard): this session's
               first, then the folder's, each with its source and state

Jobs list: enter opens a job.    Job screen and map viewer:
  arrows       move the cursor over the sector map
  home / end   first / last cell
  enter        zoom into the cell under the cursor
  backspace    zoom back out (escape too, while zoomed)
  p            pause or resume the job (a restore too)
  c            cancel the job (its map is saved; run it again to resume)
  b            browse the finished image's partitions and files
  l            the job's log on the whole screen, and back to the map
  escape       back to the jobs list

Each cell shows the worst state inside it:
  bad  >  non-scraped  >  non-trimmed  >  non-tried  >  finished
so a single bad sector always shows. The line under the map gives the
cursor cell's byte range and exactly how many bytes of each state it holds.

Press escape to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def on_mount(self) -> None:
        self.query_one("#dialog").focus()  # arrows and page keys scroll on a short terminal

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(HELP, markup=False)


class QuitScreen(ModalScreen[bool]):
    """Asks whether to cancel the running jobs and quit; dismisses with the answer."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "Cancel jobs and quit"),
                Binding("n,escape", "answer(False)", "Keep running")]

    def __init__(self, running: int) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        jobs = "1 job is" if self.running == 1 else f"{self.running} jobs are"
        with Vertical(id="dialog"):
            yield Static(f"{jobs} still running.\n\nCancel and quit? Maps are saved, and "
                         "running the same command again resumes.\n\n  y  cancel and quit"
                         "\n  n  keep running", markup=False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

