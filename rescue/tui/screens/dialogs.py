"""Small modal screens: the key help and the question asked before quitting a running job."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
rescue — keys

  arrows       move the cursor over the sector map
  home / end   first / last cell
  enter        zoom into the cell under the cursor
  backspace    zoom back out (escape too, while zoomed)
  p            pause or resume the job
  c            cancel the job (its map is saved; run it again to resume)
  j / escape   list of jobs (jobs keep running in the background)
  F1 or ?      this help
  q            quit (running jobs are cancelled and their maps saved)

Each cell shows the worst state inside it:
  bad  >  non-scraped  >  non-trimmed  >  non-tried  >  finished
so a single bad sector always shows. The line under the map gives the
cursor cell's byte range and exactly how many bytes of each state it holds.

Press escape to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
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
