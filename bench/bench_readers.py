"""Every reader of files inside an image, measured on the corpus of real file systems.

The corpus (tests/fixtures/corpus.py) is built here once: ext2/3/4 and its variants, FAT12/16/
32, exFAT, NTFS, XFS and btrfs, each with the truth its own driver shows. Each reader walks
each file system it can open: The Sleuth Kit (pytsk3), the libyal bindings, dissect's modules,
rescue's own used-block parsers (paths, sizes and data only) and rescue itself (`rescue ls -R
--json` + `rescue extract`, the readers rescue chose). Printed: a markdown table "file system ×
reader: entries exact / total" (exact: name, kind, size, mode and owner where kept, mtime at
the file system's resolution, content or target, streams), the entries each gets wrong, and seconds
per reader.

Run as root: python bench/bench_readers.py [--workdir DIR] [--examples N]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common  # noqa: F401  (puts the repository first on the path)
from readers import READERS, native_records

from tests.fixtures.corpus import Case, Record, build_corpus, differences, rescue_read

NATIVE_FAMILIES = ("ext", "fat", "exfat", "ntfs")
# A reader that misreads a size may try to allocate all of it: it gets a MemoryError (counted
# as its error) rather than the whole bench being killed for it.
MEMORY_LIMIT = 4 << 30


def walk(reader: object) -> tuple[dict[str, Record], int]:
    """Every entry below the reader's root, depth first: (path → record, entries whose
    record raised)."""
    found: dict[str, Record] = {}
    errors = 0
    stack: list[tuple[str, object]] = [("", reader.root)]  # type: ignore[attr-defined]
    while stack:
        prefix, directory = stack.pop()
        for name, node in reader.children(directory):  # type: ignore[attr-defined]
            path = f"{prefix}{name}"
            try:
                record = reader.record(node)  # type: ignore[attr-defined]
            except Exception:  # a reader's crash on one entry is a finding
                errors += 1
                continue
            found[path] = record
            if record.kind == "dir":
                stack.append((f"{path}/", reader.enter(node)))  # type: ignore[attr-defined]
    return found, errors


def measured(case: Case, read: Callable[[], tuple[dict[str, Record], int]]
             ) -> tuple[str, float, dict[str, str]]:
    """The table cell, the seconds and what the reader got wrong."""
    started = time.perf_counter()
    try:
        found, errors = read()
    except Exception as error:  # a reader that cannot open it is a finding
        return f"fails: {type(error).__name__}", time.perf_counter() - started, {
            "": f"{type(error).__name__}: {str(error)[:120]}"}
    seconds = time.perf_counter() - started
    wrong = differences(case, found)
    exact = sum(1 for path in case.truth if path not in wrong)
    cell = f"{exact} / {len(case.truth)}" + (f", {errors} errors" if errors else "")
    extra = sum(1 for path in wrong if path not in case.truth)
    return cell + (f", {extra} extra" if extra else ""), seconds, wrong


def tally(wrong: dict[str, str]) -> str:
    """How many entries a reader got wrong in each way: "content 12, mtime 3"."""
    counts = collections.Counter(
        "missing" if what == "missing" else "extra" if what == "not in the file system"
        else part.split(" ")[0] for what in wrong.values() for part in what.split("; "))
    return ", ".join(f"{what} {count}" for what, count in counts.most_common())


def without_times_or_modes(case: Case) -> Case:
    """The case judged on names, kinds, sizes, content and streams only: what rescue's
    used-block parsers know of a file (they keep no times, modes or owners)."""
    truth = {path: dataclasses.replace(record, mode=None, mtime_ns=None, owner=None)
             for path, record in case.truth.items()}
    return dataclasses.replace(case, truth=truth)


def rescue_reader(case: Case, out: Path) -> Callable[[], tuple[dict[str, Record], int]]:
    def read() -> tuple[dict[str, Record], int]:
        shutil.rmtree(out, ignore_errors=True)
        found, runs = rescue_read(case.image, "/", out)
        failed = [run for run in runs if run.returncode != 0]
        if failed and not found:
            raise RuntimeError(failed[0].stderr.strip()[-200:])
        return found, len(failed)
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=4)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    work = Path(tempfile.mkdtemp(prefix="readers-", dir=args.workdir))
    try:
        cases = build_corpus(work)
        names = ["tsk", "libyal", "dissect", "rescue/fs/used", "rescue"]
        headings = [*names[:3], "rescue/fs/used (no times, modes, owners)",
                    "rescue ls + extract"]
        rows, seconds, findings = [], dict.fromkeys(names, 0.0), []
        for case in cases:
            readers: dict[str, Callable[[], tuple[dict[str, Record], int]]] = {
                name: (lambda cls=cls, image=str(case.image): walk(cls(image)))
                for name, cls in READERS[case.family]}
            if case.family in NATIVE_FAMILIES:
                readers["rescue/fs/used"] = lambda image=str(case.image): (
                    native_records(image), 0)
            readers["rescue"] = rescue_reader(case, work / "extracted")
            cells = []
            for name in names:
                if name not in readers:
                    cells.append("—")
                    continue
                judged = without_times_or_modes(case) if name == "rescue/fs/used" else case
                cell, spent, wrong = measured(judged, readers[name])
                cells.append(cell)
                seconds[name] += spent
                if wrong:
                    findings.append(f"- {case.name} × {name}: {tally(wrong)}")
                findings += [f"  - `{path[:60]}`: {what[:200]}"
                             for path, what in sorted(wrong.items())[:args.examples]]
            rows.append(f"| {case.name} | " + " | ".join(cells) + " |")
            print(rows[-1], file=sys.stderr)
        print("| file system | " + " | ".join(headings) + " |")
        print("|---" * (len(names) + 1) + "|")
        print("\n".join(rows))
        print("| seconds | " + " | ".join(f"{seconds[name]:.1f}" for name in names) + " |")
        print("\nWhat each gets wrong: entries by the way they are wrong, and the first few:\n")
        print("\n".join(findings))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
