"""`rescue image SOURCE DEST`: rescue a disk into an image, resumable from its mapfile.

The imaging engine (device discovery, file-system readers) is imported when a job runs:
building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

from rescue.commands import (
    add_encrypt_argument,
    add_passphrase_argument,
    add_threads_argument,
    size_argument,
)
from rescue.commands.onshare import run_on_share
from rescue.commands.shares import share_of
from rescue.commands.status import ProgressReporter, run_presented
from rescue.engine.choices import MODES, ORDERS
from rescue.formats.image import DEFAULT_LEVEL, FORMATS
from rescue.stores.onshare import RECONNECT_TIMEOUT
from rescue.units import human_duration, human_percent, human_rate, human_size

if TYPE_CHECKING:
    from rescue.commands.status import News
    from rescue.engine.imaging import ImageJob
    from rescue.engine.jobs import Progress
    from rescue.engine.rescue import RescueOptions
    from rescue.fs.chosen import FileState


def first_line(state: FileState) -> str:
    """`first: PATH complete`, or what of it is lost: bytes at OFFSET+LENGTH in the file."""
    return f"first: {state.file.name} {state.summary()}"


class FirstNews:
    """The chosen files settled since the last update, and the paths that could not be looked
    up: each told once."""

    def __init__(self) -> None:
        self._notes = 0
        self._settled = 0

    def __call__(self, p: Progress) -> News:
        first = p.first
        if first is None:
            return []
        news: News = [(f"first: {note}", {"type": "first_note", "note": note})
                      for note in first.notes[self._notes:]]
        news += [(first_line(state), {"type": "first", **state.as_dict()})
                  for state in first.settled[self._settled:]]
        self._notes, self._settled = len(first.notes), len(first.settled)
        return news


def status_lines(p: Progress) -> list[str]:
    """The live status block, ddrescue's fields, 80 columns wide at most."""
    state = " (paused)" if p.paused else ""
    return [*([p.first.headline] if p.first is not None else []),
        f"rescued: {human_size(p.rescued):>10} ({human_percent(p.rescued, p.domain_size):>5}%)"
        f"   bad: {human_size(p.bad):>10}"
        f"   read errors: {p.read_errors}",
        f"non-tried: {human_size(p.non_tried):>10}   non-trimmed: {human_size(p.non_trimmed):>10}"
        f"   non-scraped: {human_size(p.non_scraped):>10}",
        f"rate: {human_rate(p.current_rate):>12} now {human_rate(p.average_rate):>12} average"
        f"   pos: {human_size(p.position)}",
        f"{p.phase} pass {p.pass_no}{state}   elapsed: {human_duration(p.elapsed)}"
        f"   last good: {human_duration(p.since_last_good)}   ETA: {p.eta_text}",
    ]


def status_line(p: Progress) -> list[str]:
    """The status block on one line, for logs (the chosen files' headline aside): the
    clocks and the ETA as the live block shows them."""
    lines = status_lines(p)[1:] if p.first is not None else status_lines(p)
    return [" | ".join(lines)]


def add_rescue_options(parser: argparse.ArgumentParser) -> None:
    """The options of the rescue algorithm (GNU ddrescue's)."""
    group = parser.add_argument_group("rescue algorithm (GNU ddrescue's)")
    group.add_argument("--cluster-size", type=size_argument, default=64 * 1024, metavar="BYTES",
                       help="copy-phase read size after errors (default 64k)")
    group.add_argument("--skip-size", type=size_argument, default=None, metavar="BYTES",
                       help="first skip past a slow area, and after a read error with --reverse "
                            "or --no-trim; doubles each time (default: the source's size / "
                            "32768, at least 64k)")
    group.add_argument("--max-skip-size", type=size_argument, default=None, metavar="BYTES",
                       help="largest skip (default 1%% of the source, at most 1G)")
    group.add_argument("--retries", "-r", type=int, default=0, metavar="N",
                       help="retry passes over bad sectors, alternating direction")
    group.add_argument("--no-trim", action="store_true", help="skip the trimming phase")
    group.add_argument("--no-scrape", action="store_true", help="skip the scraping phase")
    group.add_argument("--reverse", "-R", action="store_true", help="copy backwards")
    group.add_argument("--min-read-rate", type=size_argument, default=None, metavar="BYTES",
                       help="skip areas read slower than this in the first passes (0 = auto)")
    group.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="stop (map saved) when nothing was read for this long (1 or more)")
    group.add_argument("--checkpoint", type=float, default=10.0, metavar="SECONDS",
                       help="sync the image and save the map this often (default 10)")


def rescue_options(args: argparse.Namespace) -> RescueOptions:
    """The options as given; RescueOptions checks them."""
    from rescue.engine.rescue import RescueOptions

    return RescueOptions(
        cluster_size=args.cluster_size, skip_size=args.skip_size,
        max_skip_size=args.max_skip_size, retries=args.retries, trim=not args.no_trim,
        scrape=not args.no_scrape, reverse=args.reverse, min_read_rate=args.min_read_rate,
        timeout=args.timeout, checkpoint_interval=args.checkpoint)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "image", help="rescue a disk (or partition, or file) into an image",
        description="Image SOURCE into DEST with GNU ddrescue's algorithm. Running the same "
                    "command again resumes from the mapfile (DEST.map).")
    parser.add_argument("source", help="device or file to read (never written); "
                                       "sim:SPEC for a simulated failing disk")
    parser.add_argument("dest", help="image file (.img raw sparse, .qcow2) or block device")
    parser.add_argument("--map", "-m", dest="map_path", metavar="MAPFILE",
                        help="ddrescue mapfile (default DEST.map)")
    parser.add_argument("--format", choices=FORMATS, help="image format (default: by extension)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL,
                        help=f"compression level (default {DEFAULT_LEVEL})")
    add_threads_argument(parser, "compression (.qcow2, .img.zst)")
    parser.add_argument("--base", metavar="OLD.qcow2",
                        help="incremental image: DEST (.qcow2) becomes an overlay over this "
                             "older image of the same disk and stores only the clusters that "
                             "changed since")
    add_encrypt_argument(parser)
    add_passphrase_argument(parser)
    parser.add_argument("--domain", metavar="MAPFILE",
                        help="read only what this mapfile marks finished ('+')")
    parser.add_argument("--mode", choices=MODES, default="full",
                        help="full: every sector; used: only the blocks the file systems use "
                             "(ext2/3/4, FAT, exFAT, NTFS natively, others via partclone), "
                             "unused blocks stay holes (default full)")
    parser.add_argument("--order", choices=ORDERS, default="auto",
                        help="metadata-first: partition tables and file-system metadata "
                             "before file data, so the image mounts even if the disk dies "
                             "halfway; auto: metadata first when the disk is failing")
    parser.add_argument("--first", action="append", default=[], metavar="PATH",
                        help="read the files under PATH (a folder or file of a file system "
                             "on SOURCE; N:PATH for partition N only) right after the "
                             "metadata, before anything else; repeatable; ext2/3/4, FAT, "
                             "exFAT and NTFS")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing DEST; override overridable safety reasons")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per update and a final summary")
    parser.add_argument("--log-reads", metavar="FILE",
                        help="append every read (position, size, copied, failed) to FILE, "
                             "in GNU ddrescue's --log-reads format")
    parser.add_argument("--log-events", metavar="FILE",
                        help="append each pass begun and how the run ended to FILE, in GNU "
                             "ddrescue's --log-events format")
    parser.add_argument("--reconnect-timeout", type=float, default=RECONNECT_TIMEOUT,
                        metavar="SECONDS",
                        help="when DEST is on a share that drops, wait this long for it to "
                             "come back and resume; exit 3 if it does not (default 300)")
    add_rescue_options(parser)
    parser.set_defaults(run=run)


def run_job(job: ImageJob, json_lines: bool) -> int:
    """Run the job in a worker thread and present it here until it ends."""
    reporter = ProgressReporter(job.progress, json_lines, status_lines, status_line,
                                news=FirstNews())
    outcome = run_presented(job.run, job.control, reporter)
    progress = job.progress()
    code = outcome.exit_code
    first = progress.first
    if json_lines:
        files = {} if first is None else {
            "first_files": [state.as_dict() for state in first.settled]}
        print(json.dumps({"type": "summary", "outcome": outcome.value, "exit_code": int(code),
                          "image": job.request.dest, "format": job.format,
                          "mapfile": job.request.mapfile_path, **progress.as_dict(),
                          **files}))
    else:
        if first is not None:  # where the last stage's retries leave the damaged ones
            print("\n".join([*(first_line(state) for state in first.settled
                                if not state.complete), first.headline]))
        print(f"{outcome.value}: {human_size(progress.rescued)} rescued, "
              f"{human_size(progress.bad)} bad; map: {job.request.mapfile_path}",
              file=sys.stderr if code else sys.stdout)
    return int(code)


def run(args: argparse.Namespace) -> int:
    """Image into DEST; on a share, with the map kept here too and a lost share waited for."""
    on_share = share_of(args, "dest")
    if on_share is None:
        return run_image(args)
    return run_on_share(args, *on_share, run_image)


def run_image(args: argparse.Namespace) -> int:
    from rescue.engine.imaging import ImageJob, ImageRequest
    from rescue.engine.resume import outlook

    request = ImageRequest(
        source=args.source, dest=args.dest, map_path=args.map_path, image_format=args.format,
        level=args.level, domain_path=args.domain, mode=args.mode, order=args.order,
        first=tuple(args.first), force=args.force, options=rescue_options(args),
        command_line=shlex.join(sys.argv), reads_log=args.log_reads, events_log=args.log_events,
        threads=args.threads, base=args.base, encrypt=args.encrypt)
    ahead = outlook(request)  # before the job opens (and may create) the image
    job = ImageJob(request)
    if not args.json:  # each line of --json's output is an object
        print(ahead.line(), flush=True)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if job.plan is not None and args.mode == "used":
        print(f"imaging {human_size(job.plan.used_bytes)} used of "
              f"{human_size(job.plan.size)}", file=sys.stderr)
    return run_job(job, args.json)
