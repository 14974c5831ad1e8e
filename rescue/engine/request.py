"""What an imaging job is asked to do: `rescue image`'s arguments or the image wizard's fields,
checked once for both, and rendered back as the command that does the same."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rescue.engine.rescue import RescueOptions
from rescue.errors import UsageError
from rescue.formats.image import (
    DEFAULT_LEVEL,
    format_for,
    require_encryptable,
    require_level,
    require_threads,
)
from rescue.fs.chosen import FirstPath


@dataclass
class ImageRequest:
    """What to image where and how: built from `rescue image`'s arguments or the image wizard's
    fields, checked here once for both, and rendered back as the command that does the same."""

    source: str
    dest: str
    map_path: str | None = None
    image_format: str | None = None
    level: int = DEFAULT_LEVEL
    domain_path: str | None = None
    mode: str = "full"  # "used": only the blocks the file systems use
    order: str = "auto"  # "metadata-first" reads file-system metadata before anything else
    first: tuple[str, ...] = ()  # paths whose files are read right after the metadata
    force: bool = False
    options: RescueOptions = field(default_factory=RescueOptions)
    command_line: str = ""
    reads_log: str | None = None  # GNU ddrescue's --log-reads, appended to
    events_log: str | None = None  # GNU ddrescue's --log-events, appended to
    threads: int | None = None  # compression threads; None: one per CPU this process may use
    base: str | None = None  # an older qcow2 image of the disk: store only what changed since
    encrypt: bool = False  # a qcow2 encrypted with LUKS; its passphrase is never kept here

    def __post_init__(self) -> None:
        """The options checked themselves (RescueOptions); the level counts where the image's
        format compresses; each --first is a path from a file system's root."""
        require_level(format_for(self.dest, self.image_format), self.level)
        require_encryptable(format_for(self.dest, self.image_format), self.encrypt)
        if self.encrypt and self.base is not None:
            raise UsageError("--encrypt and --base cannot go together: an incremental image is "
                             "written unencrypted; make a full encrypted image instead")
        require_threads(self.threads)
        for path in self.first:
            FirstPath.parse(path)

    def to_argv(self) -> list[str]:
        """The `rescue image` command that starts (or resumes) this job: what differs from
        the defaults, the level only where it counts."""
        argv = ["rescue", "image", self.source, self.dest]
        if self.map_path is not None:
            argv += ["--map", self.map_path]
        if self.image_format is not None:
            argv += ["--format", self.image_format]
        if self.image_format != "raw" and (self.image_format or self.level != DEFAULT_LEVEL):
            argv += ["--level", str(self.level)]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.base is not None:
            argv += ["--base", self.base]
        if self.encrypt:
            argv.append("--encrypt")
        if self.domain_path is not None:
            argv += ["--domain", self.domain_path]
        if self.mode != "full":
            argv += ["--mode", self.mode]
        if self.order != "auto":
            argv += ["--order", self.order]
        for path in self.first:
            argv += ["--first", path]
        argv += _option_argv(self.options)
        if self.reads_log is not None:
            argv += ["--log-reads", self.reads_log]
        if self.events_log is not None:
            argv += ["--log-events", self.events_log]
        if self.force:
            argv.append("--force")
        return argv

    @property
    def mapfile_path(self) -> str:
        return self.map_path or f"{self.dest}.map"

    @classmethod
    def demo(cls, spec: str, folder: str, command_line: str = "") -> ImageRequest:
        """The demo job: `spec` imaged into `folder`, with a retry pass, checkpoints every 2 s."""
        os.makedirs(folder, exist_ok=True)
        return cls(source=spec, dest=os.path.join(folder, "demo.img"), force=True,
                   options=RescueOptions(retries=1, checkpoint_interval=2.0),
                   command_line=command_line)


def _option_argv(options: RescueOptions) -> list[str]:
    """The rescue options that differ from the defaults, as `rescue image` takes them, in the
    order its help lists them."""
    default = RescueOptions()
    valued = (("--cluster-size", options.cluster_size, default.cluster_size),
              ("--skip-size", options.skip_size, default.skip_size),
              ("--max-skip-size", options.max_skip_size, default.max_skip_size),
              ("--retries", options.retries, default.retries),
              ("--no-trim", not options.trim, False), ("--no-scrape", not options.scrape, False),
              ("--reverse", options.reverse, False),
              ("--min-read-rate", options.min_read_rate, default.min_read_rate),
              ("--timeout", options.timeout, default.timeout),
              ("--checkpoint", options.checkpoint_interval, default.checkpoint_interval))
    argv: list[str] = []
    for flag, value, usual in valued:
        if value == usual:
            continue
        if isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv
