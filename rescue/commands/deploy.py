"""`rescue deploy send IMAGE` and `rescue deploy receive TARGET`: one image onto many machines.

The sender multicasts the image with udp-sender and waits for every receiver's report; each
receiver writes its disk under the restore's safety policy and confirmation, reads it back and
reports whether it holds the image. The sender prints one line per receiver and fails unless
every receiver proved its disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rescue.commands import add_image_argument
from rescue.commands.restore import confirm
from rescue.commands.status import ProgressReporter, run_presented
from rescue.engine.choices import READ_BACKS
from rescue.engine.deploywire import DEFAULT_PORT, Report
from rescue.errors import RefusedError
from rescue.units import human_rate, human_size

if TYPE_CHECKING:
    from rescue.engine.deploy import SendProgress


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interface", metavar="IF",
                        help="network interface to multicast on (default: udpcast's choice)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                        help=f"udpcast port base: P and P+1 carry the stream, P+2 the "
                             f"receivers' reports (default {DEFAULT_PORT}); sender and "
                             "receivers must agree")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per update and a final summary")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="multicast one image onto many machines (udpcast)",
        description="Deploy one image to a room of machines at once over multicast (udpcast). "
                    "Start `rescue deploy receive DISK` on every machine, then `rescue deploy "
                    "send IMAGE` on one; each receiver reads its disk back and reports.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION",
                                    help="send or receive")
    send = actions.add_parser("send", help="multicast an image and collect the receivers' "
                                           "reports",
                              description="Stream IMAGE's bytes to every receiver, then wait "
                                          "for each one's report. Exits non-zero unless every "
                                          "receiver read back the image.")
    add_image_argument(send, help="image file to send (raw, .qcow2 or .img.zst)")
    send.add_argument("--min-receivers", type=int, default=1, metavar="N",
                      help="start once N receivers joined; fewer reports than N is a failure "
                           "(default 1)")
    send.add_argument("--max-wait", type=_positive, metavar="S",
                      help="start after S seconds even with fewer than N receivers")
    send.add_argument("--report-timeout", type=_positive, default=60.0, metavar="S",
                      help="a receiver silent this long is failed (default 60)")
    send.add_argument("--no-compress", dest="compress", action="store_false",
                      help="send the bytes as they are instead of zstd-compressed")
    _network_options(send)
    send.set_defaults(run=run_send)
    receive = actions.add_parser("receive", help="write a multicast image onto a disk",
                                 description="Wait for a sender, write its image onto TARGET, "
                                             "read TARGET back and report to the sender. The "
                                             "write-safety policy and confirmation are those "
                                             "of `rescue restore`.")
    receive.add_argument("target", metavar="TARGET", help="disk to overwrite")
    receive.add_argument("--yes", "-y", action="store_true",
                         help="do not ask for confirmation (for scripts and boot entries)")
    receive.add_argument("--read-back", choices=READ_BACKS, default="auto",
                         help="when TARGET is read back: during the writing, following what "
                              "is synced, or after it (auto: during, unless the disk spins)")
    _network_options(receive)
    receive.set_defaults(run=run_receive)


def send_lines(progress: SendProgress) -> list[str]:
    wire = f", {human_size(progress.wire)} on the wire" if progress.wire else ""
    line = (f"{progress.phase}: {human_size(progress.sent)} of {human_size(progress.size)}"
            f"{wire}; {len(progress.joined)} joined")
    return [line, *(f"  {r.target} ({r.phase}): written {human_size(r.written)}, read back "
                    f"{human_size(r.verified)}" for r in progress.reports)]


def run_send(args: argparse.Namespace) -> int:
    from rescue.engine.deploy import SendJob, SendRequest
    from rescue.engine.jobs import JobControl

    request = SendRequest(args.image, args.image_format, args.min_receivers, args.max_wait,
                          args.interface, args.port, args.compress, args.report_timeout)
    control = JobControl()
    job = SendJob(request, control)
    result = run_presented(job.run, control, ProgressReporter(job.progress, args.json,
                                                              send_lines))
    code = int(result.exit_code)
    if args.json:
        print(json.dumps({"type": "summary", "exit_code": code, "size": result.size,
                          "wire": result.wire, "seconds": result.seconds,
                          "image_ok": result.image_ok, "problem": result.problem,
                          "receivers": [r.as_dict() for r in result.receivers]}))
        return code
    for r in result.receivers:
        if r.ok:
            print(f"{r.address}: done, {r.target} ({human_size(r.target_size)}) holds the "
                  f"image, read back and fingerprint ok")
        else:
            where = f", {r.target}" if r.target else ""
            print(f"{r.address}: failed{where}: {r.error}")
    good = sum(r.ok for r in result.receivers)
    rate = human_rate(result.size / result.seconds) if result.seconds > 0 else "-"
    print(f"{good} of {len(result.receivers)} receivers hold the image; sent "
          f"{human_size(result.size)} as {human_size(result.wire)} on the wire at {rate}")
    if result.problem:
        print(f"rescue: {result.problem}", file=sys.stderr)
    if result.image_ok is False:
        print("rescue: the image does not match its manifest's digest; the receivers "
              "failed with it", file=sys.stderr)
    return code


def receive_lines(progress: Report) -> list[str]:
    return [f"{progress.target}: {progress.phase}, written {human_size(progress.written)}, "
            f"read back {human_size(progress.verified)}"]


def run_receive(args: argparse.Namespace) -> int:
    from rescue.engine import consent
    from rescue.engine.deployrecv import ReceiveJob, ReceiveRequest
    from rescue.engine.jobs import JobControl

    control = JobControl()
    job = ReceiveJob(ReceiveRequest(args.target, args.interface, args.port,
                                            args.read_back), control)
    check = job.check()
    refused = consent.refusals([check], False)
    if refused:
        raise RefusedError(" | ".join(refused))
    if not args.yes:
        confirm((check,))
    result = run_presented(job.run, control, ProgressReporter(job.progress, args.json,
                                                              receive_lines))
    report = result.report
    if args.json:
        print(json.dumps({"type": "summary", "exit_code": int(result.exit_code),
                          "image": result.image, "sender": result.sender, **report.as_dict()}))
    elif report.ok:
        print(f"{report.target}: holds {result.image} ({human_size(report.written)}), read "
              f"back and fingerprint ok; reported to {result.sender}")
    else:
        print(f"rescue: {report.target}: {report.error}", file=sys.stderr)
    return int(result.exit_code)
