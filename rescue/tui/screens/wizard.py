"""What the image and restore wizards share: numbered steps, each checked before the next,
fields read as numbers, and the write-safety verdict shown as lines.

A step is a container in a ContentSwitcher; enter in a field or ctrl+n goes forward once the
step's `check_step` finds nothing wrong, ctrl+b goes back, escape leaves without doing anything.
The last step holds the button that does the work (`finish`).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, ContentSwitcher, Footer, Input, Static

from rescue.devices.safety import Verdict
from rescue.errors import RescueError
from rescue.tui.host import JobHost, host_of


def parse_number(text: str, name: str, kind: type[int] | type[float],
                 lowest: float | None = None) -> int | float:
    """A field's number, or a ValueError naming the field (what `check_step` shows);
    `lowest` only for what no request checks itself."""
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number") from None
    if lowest is not None and value < lowest:
        raise ValueError(f"{name} must be at least {lowest:g}")
    return value


def verdict_lines(verdict: Verdict) -> list[tuple[str, str]]:
    """(text, style) of each reason and warning of the write-safety policy, for a summary."""
    lines = [(f"✗ {reason.message}" + (" (force overrides)" if reason.overridable else ""),
              "bold red") for reason in verdict.reasons]
    lines += [(f"! {warning.message}", "yellow") for warning in verdict.warnings]
    return lines


class WizardScreen(Screen[None]):
    """Subclasses set TITLE_TEXT and STEPS, and implement the step hooks."""

    TITLE_TEXT: ClassVar[str] = ""
    STEPS: ClassVar[tuple[tuple[str, str], ...]] = ()  # (container id, heading)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next", "Next"),
        Binding("ctrl+b", "back", "Back"),
        Binding("escape", "leave", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.step = 0

    # ---- hooks -----------------------------------------------------------------------------

    def compose_step(self, step_id: str) -> ComposeResult:
        """The fields of one step."""
        yield from ()

    def check_step(self, step_id: str) -> str | None:
        """What stops the user from leaving this step forward, or None."""
        return None

    def enter_step(self, step_id: str) -> None:
        """Called each time a step shows (fill in what depends on earlier steps)."""

    def finish(self) -> None:
        """Do the work; raise RescueError to stay on the last step with its message shown."""

    # ---- machinery -------------------------------------------------------------------------

    @property
    def rescue_app(self) -> JobHost:
        return host_of(self)

    @property
    def step_id(self) -> str:
        return self.STEPS[self.step][0]

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        with ContentSwitcher(initial=f"step-{self.STEPS[0][0]}", id="steps"):
            for step_id, _ in self.STEPS:
                with Container(id=f"step-{step_id}", classes="step"):
                    yield from self.compose_step(step_id)
        yield Static(id="problem", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.show_step(0)

    def show_step(self, index: int) -> None:
        self.step = index
        step_id, heading = self.STEPS[index]
        self.query_one("#steps", ContentSwitcher).current = f"step-{step_id}"
        self.query_one("#title", Static).update(
            f"{self.TITLE_TEXT} — step {index + 1} of {len(self.STEPS)}: {heading}")
        self.set_problem("")
        self.enter_step(step_id)
        fields = [widget for widget in self.query_one(f"#step-{step_id}").query(Widget)
                  if widget.focusable]
        # the last step's button first: enter must start, never toggle a checkbox on the way
        first = next((widget for widget in fields if widget.id == "finish"), None) or (
            fields[0] if fields else None)
        if first is not None:
            first.focus()
        self.refresh_bindings()

    def set_problem(self, text: str) -> None:
        self.query_one("#problem", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next":
            return self.step < len(self.STEPS) - 1
        if action == "back":
            return self.step > 0
        return True

    def action_next(self) -> None:
        if self.step >= len(self.STEPS) - 1:
            return
        problem = self.check_step(self.step_id)
        if problem:
            self.set_problem(problem)
            self.app.bell()
        else:
            self.show_step(self.step + 1)

    def action_back(self) -> None:
        if self.step > 0:
            self.show_step(self.step - 1)

    def action_leave(self) -> None:
        self.app.pop_screen()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.step < len(self.STEPS) - 1:
            self.action_next()
        else:
            self.action_finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "finish":
            self.action_finish()

    def action_finish(self) -> None:
        problem = self.check_step(self.step_id)
        if problem:
            self.set_problem(problem)
            self.app.bell()
            return
        try:
            self.finish()
        except RescueError as error:
            self.set_problem(str(error))
            self.app.bell()
