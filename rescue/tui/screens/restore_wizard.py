"""The restore wizard: image, target(s), the safety verdict on each, typed confirmation, start.

Restoring overwrites whole disks, so nothing starts until the user has typed each target's
kernel name or serial: a highlighted row chosen by a stray enter is not consent. The checks run
again right before the restore starts, since disks may have been mounted in the meantime.

A target of another size gets its partitions laid out anew: the check step shows each such
target's plan, and its sizes field takes what `rescue restore --layout` takes, replanning as it
is typed; the request it builds is the command line's.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static
from textual.widgets.selection_list import Selection

from rescue.devices.describe import Device
from rescue.devices.discover import Disk
from rescue.devices.safety import check_write_target
from rescue.engine import consent
from rescue.engine.restore import RestoreJob, RestoreRequest, TargetCheck
from rescue.errors import RescueError
from rescue.formats.catalog import is_source_disk, summarize
from rescue.stores.mount import ShareMount, as_urls
from rescue.tui.describe import device_line, every_device
from rescue.tui.screens.image_picker import ImagePicker, session_images
from rescue.tui.screens.wizard import WizardScreen, parse_number, verdict_lines
from rescue.tui.widgets.toggles import Checkbox, SelectionList
from rescue.units import human_size

# the few words a target row gives for each reason of the write-safety policy against it
REASON_WORDS = {"running-system": "system disk", "swap": "active swap", "read-only": "read-only",
                "mounted": "mounted", "holder": "in use by RAID/LVM", "busy": "busy",
                "is-source": "holds the image", "same-disk": "shares a disk with a job",
                "job-source": "used by a job", "missing": "no medium",
                "not-writable": "not writable"}


def with_command_line(request: RestoreRequest,
                      shares: Iterable[ShareMount] = ()) -> RestoreRequest:
    """`request` recording the `rescue restore` command that does the same; an image on one
    of the console's `shares` by its URL."""
    return replace(request, command_line=as_urls(shlex.join(request.to_argv()), shares))


def describe_check(check: TargetCheck, force: bool, receives: bool = True) -> Text:
    """The target, what it receives (unless that is not known yet: a deployment learns it
    from the stream), its plan and the policy's verdict."""
    text = Text()
    identity = " ".join(part for part in (check.model, check.serial) if part)
    text.append(f"{check.target} ({check.name}) {human_size(check.size)} {identity}\n".rstrip()
                + "\n", "bold")
    if check.span is not None and receives:
        text.append(f"  receives {human_size(check.span.length)} ({check.span.mode}"
                    f"{', table ' + check.span.table if check.span.table else ''})\n")
    for line in check.plan.lines() if check.plan else ():  # 78 columns: beside a scroll bar
        text.append(f"{line}\n")
    for line, style in verdict_lines(check.verdict):
        text.append(f"  {line}\n", style)
    if check.allowed(force):
        text.append("  may be written\n", "green")
    return text


def target_row(item: Device, blocking: list[str], source: bool) -> Selection[str]:
    """One device of the target list: the devices the policy refuses are shown, with the
    reason, but cannot be marked; the image's own source disk is named as such."""
    notes = [*blocking, *(["SOURCE of this image"] if source else [])]
    line = device_line(item)
    if notes:
        line = f"{line[:40]}  [{', '.join(notes)}]"
    return Selection(Text(line), item.path, disabled=bool(blocking))


class RestoreWizard(WizardScreen):
    """Pushed from the Disks screen with the highlighted device proposed as the target."""

    TITLE_TEXT = "Restore an image"
    STEPS = (("image", "which image"), ("targets", "onto which disks"),
             ("check", "safety checks"), ("confirm", "type to confirm"))
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+o", "pick_image", "List images")]
    DEFAULT_CSS = """
    RestoreWizard .step { overflow-y: auto; }
    RestoreWizard #target-list { height: auto; max-height: 9; }
    RestoreWizard .row Input { width: 1fr; }
    RestoreWizard #pick-image { margin-top: 1; }
    """

    def __init__(self, image: str = "", target: str = "", disks: list[Disk] | None = None
                 ) -> None:
        super().__init__()
        self.image = image
        self.target = target
        self.disks = disks or []
        self.source: dict[str, Any] = {}  # the image's source disk, as its manifest names it
        self.request: RestoreRequest | None = None
        self.job: RestoreJob | None = None  # judges the targets; replans as sizes are typed
        self.checks: tuple[TargetCheck, ...] = ()
        self.layout_problem: str | None = None  # why the typed partition sizes cannot be

    def compose_step(self, step_id: str) -> ComposeResult:
        if step_id == "image":
            made_here = session_images(self.rescue_app)
            yield Label("Image file to restore (.img, .qcow2, .img.zst):")
            yield Input(self.image or (made_here[0] if made_here else ""),
                        placeholder="/mnt/backup/sdb.img", id="image-path")
            yield Button("Choose from a list of images (ctrl+o)", id="pick-image")
        elif step_id == "targets":
            yield Static(id="image-info", markup=False)
            yield Label("Targets (space marks; everything on them will be overwritten):")
            yield SelectionList[str](id="target-list")
            with Horizontal(classes="row"):
                yield Label("More targets:")
                yield Input(id="more-targets", placeholder="/dev/sdc /dev/sdd")
            with Horizontal(classes="row"):
                yield Label("Only partition number:")
                yield Input(id="partition", type="integer", placeholder="all")
        elif step_id == "check":
            with Horizontal(classes="row", id="layout-row"):
                yield Label("Partition sizes:")
                yield Input(id="layout", placeholder="2=60%,3=rest  (empty: in proportion)")
            yield Static(id="checks")
            yield Checkbox("Force: override the reasons marked so", id="force")
        else:
            yield Static(id="confirm-help", markup=False)
            yield Vertical(id="confirm-fields")
            yield Button("Restore now (overwrites the targets)", id="finish", variant="error")

    def target_choices(self) -> list[Selection[str]]:
        """Every device, judged by the write-safety policy as a target for this image."""
        rows = []
        for item in every_device(self.disks):
            verdict = check_write_target(item.path, protected=[self.image])
            blocking = list(dict.fromkeys(REASON_WORDS.get(reason.code, reason.code)
                                          for reason in verdict.reasons))
            serial, model = (item.serial, item.model) if isinstance(item, Disk) else (None, None)
            source = is_source_disk(self.source, item.path, serial, model, item.size)
            rows.append(target_row(item, blocking, source))
        return rows

    def show_targets(self) -> None:
        """The target list for the chosen image, keeping what was marked before."""
        targets = self.query_one("#target-list", SelectionList)
        marked = set(targets.selected) or {self.target}
        targets.clear_options()
        rows = self.target_choices()
        for row in rows:
            targets.add_option(row)
            if row.value in marked and not row.disabled:
                targets.select(row.value)
        markable = [index for index, row in enumerate(rows) if not row.disabled]
        # the cursor starts on a marked row, else the first that may be marked: space works
        targets.highlighted = next((index for index in markable if rows[index].value in marked),
                                   markable[0] if markable else None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pick_image":
            return self.step_id == "image"
        return super().check_action(action, parameters)

    def action_pick_image(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.query_one("#image-path", Input).value = path
                self.action_next()

        self.app.push_screen(ImagePicker("Which image to restore?"), chosen)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "pick-image":
            event.stop()
            self.action_pick_image()
        else:
            super().on_button_pressed(event)

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
            return self.layout_problem or (problems[0] if problems else None)
        return self.check_confirmation()

    def check_image(self) -> str | None:
        path = self.query_one("#image-path", Input).value.strip()
        if not path:
            return "name the image to restore (ctrl+o lists them)"
        summary = summarize(path)
        if not summary.readable:
            return summary.detail
        self.image, self.source = path, summary.source
        made = f"\nmade from {summary.source_line()}" if summary.source else ""
        self.query_one("#image-info", Static).update(
            f"{summary.format} image of {human_size(summary.size or 0)}, {summary.state}: "
            f"{as_urls(path, self.rescue_app.shares)}{made}")
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
        try:
            self.request = with_command_line(RestoreRequest(
                image=self.image, targets=tuple(dict.fromkeys(chosen)), partition=partition,
                layout=self.sizes if partition is None else ()), self.rescue_app.shares)
            self.job = RestoreJob(self.request)
            self.checks = self.job.check()
        except RescueError as error:
            return str(error)
        self.layout_problem = None
        self.query_one("#layout-row").display = (
            partition is None and self.job.table.kind is not None)
        return None

    @property
    def sizes(self) -> tuple[str, ...]:
        """The typed partition sizes, as `--layout` values."""
        typed = self.query_one("#layout", Input).value.strip()
        return (typed,) if typed else ()

    def replan(self) -> None:
        """Judge the targets again with the typed sizes; a value the command line refuses is
        refused in the same words, and the start waits until it is fixed."""
        assert self.job is not None and self.request is not None
        try:
            self.checks = self.job.relay_out(self.sizes)
        except RescueError as error:
            self.layout_problem = str(error)
        else:
            self.layout_problem = None
            self.request = with_command_line(replace(self.request, layout=self.sizes),
                                             self.rescue_app.shares)
        self.set_problem(self.layout_problem or "")
        self.show_checks()

    def check_confirmation(self) -> str | None:
        for check, field in zip(self.checks, self.query("#confirm-fields Input"), strict=True):
            typed = field.value if isinstance(field, Input) else ""
            if not consent.confirms(check, typed):
                return consent.not_confirmed(check)
        return None

    def enter_step(self, step_id: str) -> None:
        if step_id == "targets":
            self.show_targets()
        elif step_id == "check":
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

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "layout" and self.job is not None and self.step_id == "check":
            self.replan()

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
        job = RestoreJob(with_command_line(replace(self.request, force=self.force),
                                           self.rescue_app.shares))
        refused = consent.refusals(job.check(), self.force)
        if refused:
            self.set_problem(refused[0])
            self.app.bell()
            return
        self.app.pop_screen()
        self.rescue_app.start_restore(job)
