"""Shared pieces of the benchmarks: mixed-content disks, cache dropping, timing, reporting.

Benchmarks compare rescue with the peer tool in the same run and report ratios, because the
machines are shared and absolute speeds vary from run to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rescue.engine.jobs import JobControl  # noqa: E402
from rescue.engine.rescue import Rescue, RescueOptions  # noqa: E402
from rescue.formats.mapfile import Mapfile  # noqa: E402
from rescue.rangemap import RangeMap  # noqa: E402
from rescue.sim.discard import DiscardWriter  # noqa: E402
from rescue.sim.faulty import CHUNK, FaultySource, content  # noqa: E402


def make_mixed_disk(path: str, size: int, seed: int = 1) -> None:
    """Text, random, zero and patterned megabytes, the mix a real disk holds."""
    with open(path, "wb") as f:
        for offset in range(0, size, CHUNK):
            f.write(content(offset, min(CHUNK, size - offset), seed))


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(cmd: Sequence[str], *, drop: bool = True, env: dict[str, str] | None = None,
          ok_codes: Sequence[int] = (0,)) -> float:
    """Seconds `cmd` takes from cold caches; its output is discarded."""
    if drop:
        drop_caches()
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    return elapsed


def rescue_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rescue", *args]


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def remove(*paths: str) -> None:
    for path in paths:
        for candidate in (path, f"{path}.map", f"{path}.map.bak"):
            if os.path.exists(candidate):
                os.unlink(candidate)


def rescue_model(spec: str, options: RescueOptions, *,
                 until_all_good: bool = False) -> tuple[float, FaultySource, RangeMap]:
    """Rescue a simulated disk through the engine into a writer that keeps nothing; its wall
    seconds, the source (whose tally holds the figures) and the final map. With
    `until_all_good` the rescue is cancelled as soon as every good byte was read: on a 1 TB
    model, scraping a quarter of a terabyte of bad sectors tells nothing more."""
    source = FaultySource(spec)
    control = JobControl()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            if source.tally.failed_reads_to_all_good is not None:
                control.cancel()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    rmap = RangeMap(source.size)
    rescue = Rescue(source, DiscardWriter(source.size), Mapfile(rmap), lambda m: None,
                    options, control)
    started = time.perf_counter()
    if until_all_good:
        watcher.start()
    try:
        rescue.run()
    finally:
        done.set()
    return time.perf_counter() - started, source, rmap
