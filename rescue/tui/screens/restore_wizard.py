"""The restore wizard: image, target(s), the safety verdict on each, typed confirmation, start.

Restoring overwrites whole disks, so nothing starts until the user has typed each target's
kernel name or serial: a highlighted row chosen by a stray enter is not consent. The checks run
again right before the restore starts, since disks may have been mounted in the meantime.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from rescue.devices.discover import Disk
from rescue.engine import consent
from rescue.engine.restore import RestoreJob, RestoreRequest, TargetCheck
from rescue.errors import RescueError
from rescue.formats.image import detect_format, open_reader
from rescue.tui.describe import device_line, every_device
from rescue.tui.screens.wizard import WizardScreen, parse_number, verdict_lines
from rescue.tui.widgets.toggles import Checkbox, SelectionList
from rescue.units import human_size


def with_command_line(request: RestoreRequest) -> RestoreRequest:
    """`request` recording the `rescue restore` command that does the same."""
    return replace(request, command_line=shlex.join(request.to_argv()))


def describe_check(check: TargetCheck, force: bool) -> Text:
    text = Text()
    identity = " ".join(part for part in (check.model, check.serial) if part)
    text.append(f"{check.target} ({check.name}) {human_size(check.size)} {identity}\n".rstrip()
                + "\n", "bold")
    if check.span is not None:
        text.append(f"  receives {human_size(check.span.length)} ({check.span.mode}"
                    f"{', table ' + check.span.table if check.span.table else ''})\n")
    for line, style in verdict_lines(check.verdict):
        text.append(f"  {line}\n", style)
    if check.allowed(force):
        text.append("  may be written\n", "green")
    return text


class RestoreWizard(WizardScreen):
    """Pushed from the Disks screen with the highlighted device proposed as the target."""

    TITLE_TEXT = "Restore an image"
    STEPS = (("image", "which image"), ("targets", "onto which disks"),
             ("check", "safety checks"), ("confirm", "type to confirm"))

    def __init__(self, image: str = "", target: str = "", disks: list[Disk] | None = None
                 ) -> None:
        super().__init__()
        self.image = image
        self.target = target
        self.disks = disks or []
        self.request: RestoreRequest | None = None
        self.checks: tuple[TargetCheck, ...] = ()

    def compose_step(self, step_id: str) -> ComposeResult:
        if step_id == "image":
            yield Label("Image file to restore (.img, .qcow2, .img.zst):")
            yield Input(self.image, placeholder="/mnt/backup/sdb.img", id="image-path")
        elif step_id == "targets":
            yield Static(id="image-info", markup=False)
            yield Label("Targets (space marks; everything on them will be overwritten):")
            yield SelectionList[str](*self.target_choices(), id="target-list")
            with Horizontal(classes="row"):
                yield Label("More targets:")
                yield Input(id="more-targets", placeholder="/dev/sdc /dev/sdd")
            with Horizontal(classes="row"):
                yield Label("Only partition number:")
                yield Input(id="partition", type="integer", placeholder="all")
        elif step_id == "check":
            yield Static(id="checks")
            yield Checkbox("Force: override the reasons marked so", id="force")
        else:
            yield Static(id="confirm-help", markup=False)
            yield Vertical(id="confirm-fields")
            yield Button("Restore now (overwrites the targets)", id="finish", variant="error")

    def target_choices(self) -> list[tuple[str, str, bool]]:
        return [(device_line(item), item.path, item.path == self.target)
                for item in every_device(self.disks)]

    # ---- steps -----------------------------------------------------------------------------

    @property
    def force(self) -> bool:
        return self.query_one("#force", Checkbox).value

    def check_step(self, step_id: str) -> str | None:
        if step_id == "image":
            return self.check_image()
        if step_id == "targets":
            return self.check_targets()
        if step_id == "check":
            problems = consent.refusals(self.checks, self.force)
            return problems[0] if problems else None
        return self.check_confirmation()

    def check_image(self) -> str | None:
        path = self.query_one("#image-path", Input).value.strip()
        if not path:
            return "name the image to restore"
        try:
            image_format = detect_format(path)
            reader = open_reader(path, image_format)
        except (RescueError, OSError) as error:
            return str(error)
        size = reader.size
        reader.close()
        self.image = path
        self.query_one("#image-info", Static).update(
            f"{image_format} image of {human_size(size)}: {path}")
        return None

    def check_targets(self) -> str | None:
        chosen = list(self.query_one("#target-list", SelectionList).selected)
        chosen += self.query_one("#more-targets", Input).value.split()
        if not chosen:
            return "mark at least one target (space) or type one"
        partition_text = self.query_one("#partition", Input).value.strip()
        try:
            partition = (int(parse_number(partition_text, "the partition", int, 1))
                         if partition_text else None)
        except ValueError as error:
            return str(error)
        self.request = with_command_line(RestoreRequest(
            image=self.image, targets=tuple(dict.fromkeys(chosen)), partition=partition))
        try:
            self.checks = RestoreJob(self.request).check()
        except RescueError as error:
            return str(error)
        return None

    def check_confirmation(self) -> str | None:
        for check, field in zip(self.checks, self.query("#confirm-fields Input"), strict=True):
            typed = field.value if isinstance(field, Input) else ""
            if not consent.confirms(check, typed):
                return consent.not_confirmed(check)
        return None

    def enter_step(self, step_id: str) -> None:
        if step_id == "check":
            self.show_checks()
        elif step_id == "confirm":
            self.query_one("#confirm-help", Static).update(consent.TYPE_TO_CONFIRM)
            fields = self.query_one("#confirm-fields", Vertical)
            fields.remove_children()
            inputs = [Input(placeholder=consent.placeholder(check), classes="confirm")
                      for check in self.checks]
            fields.mount_all(inputs)
            if inputs:
                self.call_after_refresh(inputs[0].focus)

    def show_checks(self) -> None:
        text = Text()
        for check in self.checks:
            text.append_text(describe_check(check, self.force))
        self.query_one("#checks", Static).update(text)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "force":
            self.show_checks()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a confirmation goes to the next one; in the last, the base class starts
        (Textual calls both handlers unless this one prevents the default)."""
        confirm_fields = list(self.query("#confirm-fields Input"))
        if event.input in confirm_fields[:-1]:
            event.stop()
            event.prevent_default()
            self.focus_next()

    # ---- start -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Judge the targets again and start; the typed names were checked just before."""
        assert self.request is not None
        job = RestoreJob(with_command_line(replace(self.request, force=self.force)))
        refused = consent.refusals(job.check(), self.force)
        if refused:
            self.set_problem(refused[0])
            self.app.bell()
            return
        self.app.pop_screen()
        self.rescue_app.start_restore(job)
