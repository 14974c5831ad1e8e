"""`rescue sim-map SPEC OUT`: a simulated disk's truth as a GNU ddrescue mapfile.

The map marks every unreadable sector '-' and the rest '+', so `ddrescue --test-mode=OUT` (-H)
meets the same failures on any file of that size, and a rescue of the `sim:` disk can be judged
against what a perfect one would map.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from rescue.errors import DestinationError, ExitCode, UsageError
from rescue.units import human_size


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim-map", help="write a simulated disk's bad sectors as a ddrescue mapfile",
        description="Write the truth of a simulated disk as a GNU ddrescue mapfile: bad "
                    "sectors '-', the rest '+'. Run `ddrescue -H OUT` to read any file of the "
                    "same size as if it failed there.")
    parser.add_argument("spec", metavar="SPEC",
                        help="a simulated disk, e.g. sim:size=1T,head=1/4 (see README)")
    parser.add_argument("out", metavar="OUT", help="mapfile to write (not overwritten unless "
                                                   "--force)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rescue.sim.faulty import PREFIX, FaultySpec, write_truth_map

    if not args.spec.startswith(PREFIX):
        raise UsageError(f"SPEC must start with {PREFIX} (e.g. {PREFIX}size=64M,head=1/4)")
    spec = FaultySpec.parse(args.spec)
    if os.path.lexists(args.out) and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to replace it")
    try:
        truth = write_truth_map(spec, args.out, shlex.join(["rescue", *sys.argv[1:]]))
    except OSError as error:
        raise DestinationError(f"cannot write {args.out}: {error.strerror or error}") from None
    totals = truth.rmap.totals()
    bad_areas = sum(1 for *_, state in truth.rmap.areas() if state == "-")
    print(f"{args.out}: {human_size(totals['-'])} bad in {bad_areas} area(s), "
          f"{human_size(totals['+'])} good, of {human_size(spec.size)}")
    return int(ExitCode.OK)
