"""Imaging throughput with the TUI open against `rescue image` headless, same source, one run.

Both sides are fresh processes imaging the same simulated disk (no rate limit, so the engine
and the presenter compete for the CPU): `rescue image SOURCE DEST` with its status lines, and
the app showing the same job's live sector map under Textual's headless driver (`run_test`,
80x24, 5 frames a second) until the job ends. The figure is the TUI's throughput as a fraction
of the headless one, from the job's own elapsed time (what the engine reads while each
presenter runs: the app starts a job's clock and work once the job's screen is up); the budget
is at least 0.95. Wall-clock times, start-up included (Textual's import and the app's first
frame cost about half a second), are shown for comparison.

Both sides run this tree's rescue. Best of the rounds, and the median of each round's ratio
(on a shared machine one lucky headless round can swing the best-of figure).

Run: python bench/bench_tui.py [--source sim:size=1G] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import remove, report, rescue_cmd

from rescue.sim.faulty import FaultySource

# The app side: a child process, so both sides pay the same start-up and neither shares a
# Python interpreter (or its GIL) with the benchmark itself.
TUI_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {repo!r})
from rescue.engine.imaging import ImageRequest
from rescue.tui.app import make_app
from rescue.tui.widgets.sector_map import MapLook

async def main():
    app = make_app(ImageRequest(source={source!r}, dest={dest!r}), look=MapLook())
    async with app.run_test(size=(80, 24)):
        await app.wait_for_jobs()
    print(json.dumps({{"elapsed": app.jobs[0].job.progress().elapsed}}))
    sys.exit(app.exit_code())

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="sim:size=1G")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    size = FaultySource(args.source).size if args.source.startswith("sim:") \
        else os.path.getsize(args.source)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-tui-") as folder:
        dest = os.path.join(folder, "out.img")
        script = TUI_SCRIPT.format(repo=repo, source=args.source, dest=dest)
        headless: list[tuple[float, float]] = []
        tui: list[tuple[float, float]] = []
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both
            remove(dest)
            headless.append(job_seconds(rescue_cmd("image", args.source, dest, "--json"),
                                        repo))
            remove(dest)
            tui.append(job_seconds([sys.executable, "-c", script], repo))
        remove(dest)
    (job_headless, wall_headless), (job_tui, wall_tui) = min(headless), min(tui)
    median = statistics.median(h / t for (h, _), (t, _) in zip(headless, tui, strict=True))
    mib = size / (1 << 20)
    report(f"imaging {args.source} ({mib:.0f} MiB), best of {args.rounds}", [
        ("headless rescue image", f"job {job_headless:.2f} s  {mib / job_headless:.0f} MiB/s  "
                                  f"(wall {wall_headless:.2f} s)"),
        ("TUI open (80x24 map)", f"job {job_tui:.2f} s  {mib / job_tui:.0f} MiB/s  "
                                 f"(wall {wall_tui:.2f} s)"),
        ("TUI / headless throughput", f"{job_headless / job_tui:.2f}  (budget >= 0.95); "
                                      f"wall clock {wall_headless / wall_tui:.2f}"),
        ("median of the rounds' ratios", f"{median:.2f}"),
    ])


def job_seconds(command: list[str], repo: str) -> tuple[float, float]:
    """(the job's own elapsed seconds, from its last JSON line; the process's wall time).
    The command runs this tree's rescue, whatever the installed one is."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}): {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["elapsed"], wall


if __name__ == "__main__":
    main()
