"""The image wizard: source, destination, format and rescue options, a summary, start.

What it builds is exactly what `rescue image` builds from its arguments (an ImageRequest, opened
as an ImageJob with every check), and the summary shows that command, so a run started here can
be resumed from a shell and the other way round.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static
from textual.widgets.option_list import Option

from rescue.devices.discover import Disk
from rescue.devices.safety import Verdict, check_write_target
from rescue.engine.choices import MODES, ORDERS
from rescue.engine.imaging import (
    ImageJob,
    ImageRequest,
    identity_of,
    open_source,
    protected_sources,
    source_warnings,
)
from rescue.engine.rescue import RescueOptions
from rescue.engine.resume import Outlook, outlook
from rescue.errors import RescueError, UsageError
from rescue.formats.image import DEFAULT_LEVEL, EXTENSION_OF, LEVELS, format_for
from rescue.sim.faulty import PREFIX as SIM_PREFIX
from rescue.stores.onshare import RECONNECT_TIMEOUT
from rescue.stores.url import StoreUrl
from rescue.tui.describe import device_line, every_device
from rescue.tui.jobs import OnShare, open_on_share
from rescue.tui.screens.folder_picker import FolderPicker, describe_folder
from rescue.tui.screens.wizard import WizardScreen, parse_number, verdict_lines
from rescue.tui.widgets.share_form import ShareForm, smb_password
from rescue.tui.widgets.toggles import Checkbox, OptionList
from rescue.units import human_size

FORMAT_CHOICES = (("raw, sparse (.img)", "raw"), ("qcow2, compressed (.qcow2)", "qcow2"),
                  ("zstd seekable (.img.zst)", "zst"))
MODE_CHOICES = tuple(zip(("every sector (full)", "only what file systems use (used)"), MODES,
                         strict=True))
WHERE_CHOICES = (("a file on this machine", "local"), ("a network share (ssh, smb, nfs)", "share"))
ORDER_CHOICES = tuple(zip(("auto (metadata first if it fails)",
                           "metadata first, then the rest", "sequential, start to end"), ORDERS,
                          strict=True))
OUTLOOK_STYLES = {"resume": "bold", "over": "yellow", "refuse": "bold red"}


def with_format_extension(path: str, image_format: str) -> str:
    """`path` with its image extension swapped for `image_format`'s (others kept as they are)."""
    for extension in sorted(EXTENSION_OF.values(), key=len, reverse=True):
        if path.lower().endswith(extension):
            return path[:-len(extension)] + EXTENSION_OF[image_format]
    return path


def default_destination(source: str, folder: str) -> str:
    name = "simulated" if source.startswith(SIM_PREFIX) else os.path.basename(source) or "disk"
    return os.path.join(folder, f"{name}.img")


@dataclass
class ImageChoices:
    """What the user chose so far; `request()` turns it into the engine's request."""

    source: str = ""
    source_size: int = 0
    source_warnings: tuple[str, ...] = ()  # e.g. mounted read-write: may change as it is read
    dest: str = ""  # a local path, or the URL of `share`
    share: StoreUrl | None = None  # the image on a network share
    reconnect_timeout: int = int(RECONNECT_TIMEOUT)  # seconds a lost share is waited for
    # what the job records of the source, to tell a map of another source apart
    identity: dict[str, Any] = field(default_factory=dict)
    image_format: str = "raw"
    level: int = DEFAULT_LEVEL
    threads: int | None = None  # compression threads; None: one per CPU ("auto")
    mode: str = "full"
    order: str = "auto"
    retries: int = 0
    reverse: bool = False
    timeout: float | None = None
    first: tuple[str, ...] = ()  # paths whose files are read right after the metadata
    force: bool = False
    verify: bool = False  # `rescue verify` the image once imaging ends

    def verdict(self) -> Verdict:
        """Nothing of this machine stands against an image on a share: its room is told by
        the share step's connection test."""
        if self.share is not None:
            return Verdict(self.dest, ())
        compressed = self.image_format != "raw" or format_for(self.dest) != "raw"
        return check_write_target(self.dest, needed_size=self.source_size,
                                  protected=protected_sources(self.source),
                                  compressed=compressed)

    def request(self) -> ImageRequest:
        """The engine's request, which checks the choices; its command line is the `rescue
        image` command that starts (or resumes) the same job."""
        request = ImageRequest(source=self.source, dest=self.dest,
                               image_format=self.image_format, level=self.level,
                               threads=self.threads, mode=self.mode, order=self.order,
                               first=self.first, force=self.force,
                               options=RescueOptions(retries=self.retries,
                                                     reverse=self.reverse,
                                                     timeout=self.timeout))
        argv = request.to_argv()
        if self.share is not None and self.reconnect_timeout != RECONNECT_TIMEOUT:
            argv += ["--reconnect-timeout", str(self.reconnect_timeout)]
        request.command_line = shlex.join(argv)
        return request

    def outlook(self) -> Outlook:
        """Whether the job resumes what the destination holds, starts fresh or over, or is
        refused; the format by the name until one is chosen."""
        return outlook(ImageRequest(source=self.source, dest=self.dest, force=self.force),
                       self.identity)

    def verify_line(self) -> str:
        return shlex.join(["rescue", "verify", self.dest])


class ImageWizard(WizardScreen):
    """Pushed from the Disks screen with the highlighted device as the proposed source."""

    CSS = """
    ImageWizard #option-fields { height: 1fr; }
    ImageWizard .field { height: 1; margin-top: 1; }
    ImageWizard .field Label { margin: 0 1 0 0; width: 40; }
    ImageWizard .field Label.after { width: auto; margin: 0 1 0 2; }
    ImageWizard .field Select { width: 1fr; }
    ImageWizard .field Input { width: 10; }
    ImageWizard #option-fields Checkbox { margin-top: 1; }
    ImageWizard .step Label.wide, ImageWizard .step > Label { width: 100%; }
    """
    TITLE_TEXT = "Image a disk"
    STEPS = (("source", "what to read"), ("dest", "where the image goes"),
             ("options", "format and rescue options"), ("summary", "check and start"))

    def __init__(self, source: str = "", disks: list[Disk] | None = None,
                 folder: str | None = None) -> None:
        super().__init__()
        self.choices = ImageChoices(source=source)
        self.disks = disks or []
        self.folder = folder or os.getcwd()

    def compose_step(self, step_id: str) -> ComposeResult:
        if step_id == "source":
            yield Label("Device, partition or file to read (never written); sim:SPEC for a "
                        "simulated disk. One job reads one source: the whole disk, or one "
                        "of its partitions.", classes="wide")
            yield Input(self.choices.source, placeholder="/dev/sdb", id="source-path")
            yield Label("or pick one (enter):")
            yield OptionList(*self.source_options(), id="known")
        elif step_id == "dest":
            with Vertical(id="dest-local"):
                yield Label("Image file:")
                with Horizontal(classes="row"):
                    yield Input(id="dest-path")
                    yield Button("Browse...", id="browse")
                yield Static(id="dest-info", markup=False)
            with Horizontal(classes="field"):
                yield Label("Write the image to:")
                yield Select(WHERE_CHOICES, value="local", allow_blank=False, id="dest-where",
                             compact=True)
            yield ShareForm(id="dest-share", writes=True)
        elif step_id == "options":
            yield from self.compose_options()
        else:
            yield Static(id="summary")
            yield Checkbox("Force: overwrite an existing image, override reasons marked so",
                           id="force")
            yield Button("Start imaging", id="finish", variant="primary")

    def compose_options(self) -> ComposeResult:
        """One line per field, so the step fits 80x24; it scrolls if the terminal is smaller."""
        with VerticalScroll(id="option-fields"):
            with Horizontal(classes="field"):
                yield Label("Format:")
                yield Select(FORMAT_CHOICES, value="raw", allow_blank=False, id="format",
                             compact=True)
            with Horizontal(classes="field", id="compression"):
                yield Label(f"Compression level ({LEVELS.start}-{LEVELS.stop - 1}):")
                yield Input(str(DEFAULT_LEVEL), id="level", type="integer", compact=True)
                yield Label("threads:", classes="after")
                yield Input(id="threads", type="integer", placeholder="auto", compact=True)
            with Horizontal(classes="field"):
                yield Label("Read:")
                yield Select(MODE_CHOICES, value="full", allow_blank=False, id="mode",
                             compact=True)
            with Horizontal(classes="field"):
                yield Label("Order:")
                yield Select(ORDER_CHOICES, value="auto", allow_blank=False, id="order",
                             compact=True)
            with Horizontal(classes="field"):
                yield Label("Retry passes over bad sectors:")
                yield Input("0", id="retries", type="integer", compact=True)
            with Horizontal(classes="field"):
                yield Label("Stop after seconds without a good read:")
                yield Input(id="timeout", type="number", placeholder="never", compact=True)
            yield Checkbox("Copy backwards (reverse)", id="reverse", compact=True)
            yield Checkbox("Verify the image when imaging ends (rescue verify)", id="verify",
                           compact=True)
            yield Label("Folders to read first, after the metadata (N:PATH for partition N; "
                        "quote a name with spaces):", classes="wide")
            yield Input(id="first", placeholder="/home/ann/thesis 2:/Users/ann/Documents",
                        compact=True)

    def source_options(self) -> list[Option]:
        return [Option(Text(device_line(item)), id=item.path)
                for item in every_device(self.disks)]

    # ---- steps -----------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.query_one("#source-path", Input).value = event.option.id
            self.action_next()

    def enter_step(self, step_id: str) -> None:
        choices = self.choices
        if step_id == "dest":
            dest = self.query_one("#dest-path", Input)
            if not dest.value:
                dest.value = default_destination(choices.source, self.folder)
            self.share_form.needed = choices.source_size
            self.show_where()
            self.show_dest_info()
            if self.on_share:  # after the step's first field, hidden now, took the focus
                self.call_after_refresh(self.share_form.query_one("#share-address").focus)
        elif step_id == "options":
            self.query_one("#format", Select).value = format_for(choices.dest)
            self.show_compression()
        elif step_id == "summary":
            self.show_summary()

    def check_step(self, step_id: str) -> str | None:
        try:
            if step_id == "source":
                return self.check_source()
            if step_id == "dest":
                return self.check_dest()
            if step_id == "options":
                return self.check_options()
        except ValueError as error:
            return str(error)
        self.choices.force = self.query_one("#force", Checkbox).value
        blocking = self.choices.verdict().blocking(self.choices.force)
        if blocking:
            return f"cannot start: {blocking[0].message}"
        return None

    def check_source(self) -> str | None:
        path = self.query_one("#source-path", Input).value.strip()
        if not path:
            return "name a device, a file or a sim: disk"
        try:
            source = open_source(path)
        except (RescueError, OSError) as error:
            return str(error)
        try:
            size, warnings = source.size, source_warnings(source)
            self.choices.identity = identity_of(source)
        finally:
            source.close()
        if path != self.choices.source:
            self.query_one("#dest-path", Input).value = ""  # proposed anew for the new source
        self.choices.source, self.choices.source_size = path, size
        self.choices.source_warnings = warnings
        return None

    @property
    def share_form(self) -> ShareForm:
        return self.query_one("#dest-share", ShareForm)

    @property
    def on_share(self) -> bool:
        return self.query_one("#dest-where", Select).value == "share"

    def check_dest(self) -> str | None:
        if self.on_share:
            return self.check_share()
        self.choices.share = None
        dest = os.path.abspath(os.path.expanduser(self.query_one("#dest-path", Input).value))
        if os.path.isdir(dest):
            return f"{dest} is a folder: name the image file inside it"
        self.choices.dest = dest
        hard = [reason for reason in self.choices.verdict().reasons if not reason.overridable]
        return hard[0].message if hard else None

    def check_share(self) -> str | None:
        """The image the share fields name; whether the share answers is the connection
        test's to say, or the job's when it starts."""
        try:
            url = self.share_form.url()
        except (UsageError, ValueError) as error:
            return str(error)
        if not url.name or url.path.endswith("/"):
            return "name the image file at the end of the path on the share"
        try:
            self.choices.reconnect_timeout = self.share_form.reconnect_timeout()
        except ValueError as error:
            return str(error)
        self.choices.share, self.choices.dest = url, str(url)
        return None

    def check_options(self) -> str | None:
        choices = self.choices
        choices.image_format = str(self.query_one("#format", Select).value)
        try:
            format_for(choices.dest, choices.image_format)  # a format the name contradicts
        except RescueError as error:
            return str(error)
        choices.level = int(parse_number(self.query_one("#level", Input).value, "the level",
                                         int))
        threads = self.query_one("#threads", Input).value.strip()
        choices.threads = int(parse_number(threads, "the threads", int)) if threads else None
        choices.mode = str(self.query_one("#mode", Select).value)
        choices.order = str(self.query_one("#order", Select).value)
        choices.verify = self.query_one("#verify", Checkbox).value
        choices.retries = int(parse_number(self.query_one("#retries", Input).value,
                                           "the retries", int, 0))
        timeout = self.query_one("#timeout", Input).value.strip()
        choices.timeout = float(parse_number(timeout, "the timeout", float)) if timeout \
            else None
        choices.reverse = self.query_one("#reverse", Checkbox).value
        try:
            choices.first = tuple(shlex.split(self.query_one("#first", Input).value))
        except ValueError as error:
            return f"folders to read first: {error}"
        try:
            choices.request()
        except RescueError as error:
            return str(error)
        return None

    # ---- live information ------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "dest-path":
            self.show_dest_info()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "dest-where":
            self.show_where()
        if event.select.id == "format" and isinstance(event.value, str):
            self.choices.dest = with_format_extension(self.choices.dest, event.value)
            if self.choices.share is None:
                self.query_one("#dest-path", Input).value = self.choices.dest
            else:
                self.check_share_renamed(event.value)
            self.show_compression()

    def check_share_renamed(self, image_format: str) -> None:
        """The file on the share takes the chosen format's extension too."""
        share = self.choices.share
        assert share is not None
        path = with_format_extension(share.path, image_format)
        self.share_form.set_path(path)
        self.choices.share = StoreUrl(share.scheme, share.host, path, share.user, share.port)
        self.choices.dest = str(self.choices.share)

    def show_where(self) -> None:
        """The local file's fields, or the share's."""
        self.query_one("#dest-local").display = not self.on_share
        self.share_form.display = self.on_share
        if self.on_share and not self.share_form.query_one("#share-path", Input).value:
            name = os.path.basename(self.query_one("#dest-path", Input).value)
            self.share_form.set_path(name)

    def show_compression(self) -> None:
        """The level and threads only where the format compresses."""
        chosen = self.query_one("#format", Select).value
        self.query_one("#compression", Horizontal).display = chosen != "raw"

    def show_dest_info(self) -> None:
        dest = os.path.abspath(os.path.expanduser(self.query_one("#dest-path", Input).value))
        folder = dest if os.path.isdir(dest) else os.path.dirname(dest)
        ahead = replace(self.choices, dest=dest).outlook()
        text = Text(f"{describe_folder(folder)}\nthe source holds "
                    f"{human_size(self.choices.source_size)}; a sparse or compressed image "
                    "usually needs less\n")
        text.append(ahead.line(), OUTLOOK_STYLES.get(ahead.kind, ""))
        self.query_one("#dest-info", Static).update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Browse...; the finish button is the base class's (Textual calls both handlers)."""
        if event.button.id == "browse":
            event.stop()
            event.prevent_default()
            dest = self.query_one("#dest-path", Input).value
            self.app.push_screen(FolderPicker(os.path.dirname(os.path.abspath(dest))),
                                 self.folder_picked)

    def folder_picked(self, folder: str | None) -> None:
        if folder:
            dest = self.query_one("#dest-path", Input)
            name = os.path.basename(dest.value) or os.path.basename(
                default_destination(self.choices.source, folder))
            dest.value = os.path.join(folder, name)
            dest.focus()

    def show_summary(self) -> None:
        choices = self.choices
        text = Text()
        text.append(f"read   {choices.source} ({human_size(choices.source_size)})\n")
        for warning in choices.source_warnings:
            text.append(f"! {warning}\n", "yellow")
        text.append(f"write  {choices.dest}\n")
        if choices.share is None:
            text.append(f"       map {choices.dest}.map\n")
            ahead = choices.outlook()
            text.append(ahead.line() + "\n", OUTLOOK_STYLES.get(ahead.kind, ""))
        else:
            text.append("       map beside it (.map), kept on this machine too\n"
                        "mounted when the job starts; a map there is resumed, a lost share "
                        f"waited for up to {choices.reconnect_timeout} s\n")
        options = [f"format {choices.image_format}"]
        if choices.image_format != "raw":
            options.append(f"level {choices.level}, "
                           f"{choices.threads or 'auto'} threads")
        options += [f"mode {choices.mode}", f"order {choices.order}"]
        options.append(f"{choices.retries} retry passes")
        if choices.reverse:
            options.append("reverse")
        options.append(f"timeout {choices.timeout:g} s" if choices.timeout else "no timeout")
        text.append(", ".join(options) + "\n")
        if choices.first:
            text.append(f"first  {shlex.join(choices.first)}, after the metadata\n")
        for line, style in verdict_lines(choices.verdict()):
            text.append(line + "\n", style)
        text.append(f"same as: {choices.request().command_line}", "dim")
        if choices.verify:
            text.append(f"\nthen:    {choices.verify_line()}", "dim")
        self.query_one("#summary", Static).update(text)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "force":
            self.choices.force = event.value
            self.show_summary()

    # ---- start -----------------------------------------------------------------------------

    def finish(self) -> None:
        request, share = self.choices.request(), self.choices.share
        if share is None:
            self.start(ImageJob(request), None)
            return
        self.set_problem(f"mounting {share.parent}...")
        password = self.share_form.password
        self.run_worker(lambda: self.open_share(request, share, password), name="mount share",
                        thread=True, group="share-open", exclusive=True, exit_on_error=False)

    def open_share(self, request: ImageRequest, share: StoreUrl, password: str) -> None:
        """In a thread (a server that does not answer must not hold the screen): mount the
        share and open the job, or say why not on the last step."""
        try:
            with smb_password(password):
                job, on_share = open_on_share(request, share, self.choices.reconnect_timeout)
        except (RescueError, OSError) as error:
            line = str(error) if isinstance(error, RescueError) else \
                f"{share}: {error.strerror}"
            self.app.call_from_thread(self.refused, line)
            return
        self.app.call_from_thread(self.start, job, on_share)

    def refused(self, line: str) -> None:
        self.set_problem(line)
        self.app.bell()

    def start(self, job: ImageJob, on_share: OnShare | None) -> None:
        self.app.pop_screen()
        self.rescue_app.start_job(job, verify=self.choices.verify, share=on_share)
