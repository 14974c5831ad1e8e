"""`rescue restore IMAGE TARGET [TARGET ...]`: write an image onto disks, checked and verified.

Every target passes the write-safety policy first. Unless --yes is given, the user confirms
each target by typing its name or serial on a terminal; without a terminal the restore is
refused. Running the same command again after an interruption continues from the targets'
mapfiles.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING, TextIO

from rescue.commands import add_image_argument, add_threads_argument
from rescue.commands.status import ProgressReporter, run_presented
from rescue.engine.choices import READ_BACKS, default_map_dir
from rescue.errors import RefusedError
from rescue.units import human_duration, human_percent, human_rate, human_size

if TYPE_CHECKING:
    from rescue.engine.restore import (
        RestoreJob,
        RestoreProgress,
        RestoreResult,
        TargetCheck,
        TargetProgress,
    )
    from rescue.formats.integrity import Verdict

MODES = {"whole": "the whole image", "partition": "one partition",
         "fit": "the partitions, with a table made to fit",
         "resize": "the partitions laid out anew"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore", help="write an image onto one or more disks, then verify them",
        description="Restore IMAGE (raw, .qcow2 or .img.zst) onto every TARGET at once, reading "
                    "the image once. Each target is checked by the write-safety policy and "
                    "read back (while it is written, unless it is a spinning disk). Run the "
                    "same command again to continue an interrupted restore.")
    add_image_argument(parser, help="image file to restore (never written)")
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="disk or partition")
    parser.add_argument("--partition", "-p", type=int, metavar="N",
                        help="restore only partition N of a whole-disk image")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not read the targets back after writing")
    parser.add_argument("--read-back", choices=READ_BACKS, default="auto",
                        help="when each target is read back: during the writing, following "
                             "what is synced, or after it (auto: during, unless the disk "
                             "spins or the restore continues an earlier one)")
    parser.add_argument("--skip-holes", action="store_true",
                        help="let the target zero the image's holes itself (BLKZEROOUT) "
                             "instead of writing zeros; the result is the same")
    parser.add_argument("--check-image", action="store_true",
                        help="decode the whole image before writing anything (one more read)")
    parser.add_argument("--layout", action="append", default=[], metavar="N=SIZE",
                        help="partition sizes on a disk of another size: N=60%% (of the disk), "
                             "N=20G, N=rest; comma-separated or repeated (default: the data "
                             "partitions share the disk in proportion)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what each target would receive (the partition plan on a "
                             "disk of another size) and write nothing")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask for confirmation (for scripts)")
    parser.add_argument("--force", action="store_true",
                        help="override the safety reasons that may be overridden")
    parser.add_argument("--map-dir", metavar="DIR",
                        help=f"where the resume mapfiles live (default {default_map_dir()})")
    add_threads_argument(parser, "decoding the image")
    parser.add_argument("--checkpoint", type=float, default=5.0, metavar="SECONDS",
                        help="sync the targets and save their maps this often (default 5)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per update and a final summary")
    parser.set_defaults(run=run)


def describe(check: TargetCheck) -> str:
    identity = ", ".join(part for part in (check.model, f"serial {check.serial}"
                                           if check.serial else None) if part)
    span = check.span
    what = f"{MODES[span.mode]}, {human_size(span.length)}" if span else "nothing"
    return (f"  {check.target} ({check.name}, {human_size(check.size)}"
            f"{', ' + identity if identity else ''}): {what}")


def plan_lines(check: TargetCheck) -> list[str]:
    """The target's line, then its partition plan when it gets one."""
    return [describe(check), *(f"  {line}" for line in check.plan.lines())] if check.plan \
        else [describe(check)]


def dry_run(checks: tuple[TargetCheck, ...], refused: list[str], json_lines: bool) -> int:
    """What each target would receive; refusals as they would be, and nothing written."""
    if json_lines:
        print(json.dumps({"type": "plan", "targets": [c.as_dict() for c in checks]}))
    else:
        for check in checks:
            print("\n".join(plan_lines(check)))
    if refused:
        raise RefusedError(" | ".join(refused))
    if not json_lines:
        print("dry run: nothing was written")
    return 0


def confirm(checks: tuple[TargetCheck, ...], stream: TextIO = sys.stderr) -> None:
    """Ask for each target's name or serial on the terminal; refuse without one."""
    from rescue.engine import consent

    if not sys.stdin.isatty():
        raise RefusedError(consent.NO_TERMINAL)
    print(consent.OVERWRITTEN, file=stream)
    for check in checks:
        print("\n".join(plan_lines(check)), file=stream)
    for check in checks:
        stream.write(consent.prompt(check))
        stream.flush()
        if not consent.confirms(check, sys.stdin.readline()):
            raise RefusedError(consent.not_matched(check))


def target_line(t: TargetProgress) -> str:
    done = t.verified if t.phase == "verifying" else t.written
    error = f"  {t.error}" if t.error else ""
    return (f"{t.target}: {t.phase:<12} {human_size(done):>10} of {human_size(t.size):<10} "
            f"({human_percent(done, t.size):>5}%)  {human_rate(t.current_rate):>12}  "
            f"remaining {human_duration(t.eta)}{error}")


def target_lines(progress: RestoreProgress) -> list[str]:
    return [target_line(t) for t in progress.targets]


def report(job: RestoreJob, result: RestoreResult, json_lines: bool) -> int:
    code = result.outcome.exit_code
    image = result.image
    if json_lines:
        print(json.dumps({"type": "summary", "outcome": result.outcome, "exit_code": int(code),
                          "image": job.request.image, "format": job.image_format,
                          "partition": job.request.partition,
                          "checked": image.checked, "damaged": [list(r) for r in image.damaged],
                          "problems": image.problems,
                          "targets": [t.as_dict() for t in result.targets]}))
        return int(code)
    for line in image.lines():
        print(line)
    if not image.intact:
        print("rescue: the image is damaged; the targets hold the rest of it (damaged ranges as "
              "zeros or as decoded)", file=sys.stderr)
    for t in result.targets:
        if t.error:  # its written-ranges map is kept
            print(f"rescue: {t.error}; once it is fixed, run the same command to continue",
                  file=sys.stderr)
        elif t.mismatches:
            ranges = ", ".join(f"{o:#x}+{n:#x}" for o, n in t.mismatches[:5])
            more = f" and {len(t.mismatches) - 5} more" if len(t.mismatches) > 5 else ""
            print(f"rescue: {t.target}: verify found {len(t.mismatches)} differing ranges "
                  f"({ranges}{more}); run again to rewrite them", file=sys.stderr)
        elif t.phase == "interrupted":
            print(f"rescue: {t.target}: interrupted at {human_size(t.written)}; run the same "
                  "command to continue", file=sys.stderr)
        else:
            print(f"{t.target}: {target_summary(t, image)}")
            if files := t.files_line():
                print(f"{t.target}: {files}")
    return int(code)


def target_summary(target: TargetProgress, image: Verdict) -> str:
    """What a finished target holds and what vouches for it; "verified" only when the image's
    own checks found it intact and proved its content."""
    read_back = "; read back as written" if target.verified == target.size and target.size \
        else ""
    if not image.intact:
        return f"restored {human_size(target.size)} from a damaged image{read_back}"
    return f"restored {human_size(target.size)} (image: {image.summary()}{read_back})"


def run(args: argparse.Namespace) -> int:
    """The restore engine is imported here: building the parser stays light."""
    from rescue.engine import consent
    from rescue.engine.jobs import JobControl
    from rescue.engine.restore import RestoreJob, RestoreRequest

    request = RestoreRequest(
        image=args.image, targets=tuple(args.targets), partition=args.partition,
        image_format=args.image_format, verify=args.verify, skip_holes=args.skip_holes,
        force=args.force, map_dir=args.map_dir, check_image=args.check_image,
        checkpoint=args.checkpoint, command_line=shlex.join(sys.argv), threads=args.threads,
        layout=tuple(args.layout), read_back=args.read_back)
    control = JobControl()
    job = RestoreJob(request, control)
    checks = job.check()
    refused = consent.refusals(checks, args.force)
    if args.dry_run:
        return dry_run(checks, refused, args.json)
    if refused:
        raise RefusedError(" | ".join(refused))
    if not args.yes:
        confirm(checks)
    reporter = ProgressReporter(job.progress, args.json, target_lines)
    result = run_presented(job.run, control, reporter)
    return report(job, result, args.json)
