"""The sector map on a 1,000,000-area mapfile: loading it, frames, and a cursor query.

A live frame is what the job screen does 5 times a second while a job writes the map: take a
snapshot, bring the cells up to it (only those whose bytes the job wrote since the last frame
are computed again), then rebuild the strips of the rows that changed. Between two frames the
job does what 200 ms of a rescue does: a run of forward reads and scattered sector reads. The
budget is 20 ms per live frame. The first frame (every cell computed, as after a resize or a
zoom) is shown too. Loading is reported for comparison with `ddrescuelog -t` on the same file,
read in the same run (best of three runs each, so both read from the page cache), and saving
is reported too.

Run: python bench/bench_map.py [--areas 1000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable

from common import report

from rescue.formats import mapfile
from rescue.rangemap import BAD, FINISHED, NON_TRIMMED, STATES, RangeMap
from rescue.tui.app import make_app
from rescue.tui.widgets.sector_map import SectorMap, cell_bytes_for, cell_states

TIB = 1 << 40


def write_big_map(path: str, areas: int, seed: int = 7) -> None:
    """`areas` areas of random sector-multiple lengths over 2 TiB, neighbours never alike."""
    rng = random.Random(seed)
    size = 2 * TIB
    cuts = sorted({rng.randrange(1, size // 512) * 512 for _ in range(areas + areas // 8)})
    starts = [0, *cuts[:areas - 1]]
    states, previous = [], ""
    for _ in starts:
        state = rng.choice([s for s in STATES if s != previous])
        states.append(state)
        previous = state
    ends = [*starts[1:], size]
    rmap = RangeMap.from_areas(size, zip(starts, (e - s for s, e in zip(starts, ends,
                                                                        strict=True)), states,
                                         strict=True))
    assert len(rmap) == areas, len(rmap)
    mapfile.save(path, mapfile.Mapfile(rmap, 0, "?", 1))


def best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def job_writes(rmap: RangeMap, rng: random.Random, pos: int) -> int:
    """200 ms of a rescue: 1,600 forward reads of 64 KiB (100 MiB, some bad), and 50 sector
    reads scattered over the disk (trimming); where the forward reads stopped."""
    for _ in range(1600):
        rmap.set(pos, 65536, BAD if rng.random() < 0.01 else FINISHED)
        pos = (pos + 65536) % rmap.size
    for _ in range(50):
        rmap.set(rng.randrange(rmap.size // 512) * 512, 512, rng.choice((FINISHED, NON_TRIMMED)))
    return pos


def widget_frames(path: str, size: tuple[int, int]) -> tuple[float, float]:
    """Best times of the first frame (every cell) and of a live frame (snapshot, show(),
    the rows asked for), inside a headless app showing the map."""
    app = make_app(map_path=path)
    rmap = mapfile.load(path).rmap
    result: list[float] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            widget = app.screen.query_one(SectorMap)

            def draw() -> None:
                widget.show(rmap.snapshot(), position)
                for y in range(widget.size.height):
                    widget.render_line(y)

            def first_frame() -> None:
                widget._cells = b""  # every row changes, as on the first frame
                draw()

            position = rmap.size // 3
            result.append(best_of(5, first_frame))
            rng = random.Random(3)
            live = float("inf")
            for _ in range(10):
                position = job_writes(rmap, rng, position)
                live = min(live, best_of(1, draw))
            result.append(live)

    asyncio.run(main())
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--areas", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        path = os.path.join(workdir, "big.map")
        write_big_map(path, args.areas)
        megabytes = os.path.getsize(path) / 1e6
        load = best_of(3, lambda: mapfile.load(path))
        ddrescuelog = best_of(3, lambda: subprocess.run(["ddrescuelog", "-t", path], check=True,
                                                        capture_output=True))
        loaded = mapfile.load(path)
        rmap = loaded.rmap
        save = best_of(3, lambda: mapfile.save(os.path.join(workdir, "saved.map"), loaded))
        snapshot_time = best_of(5, rmap.snapshot)
        snapshot = rmap.snapshot()
        rows = [("mapfile", f"{len(rmap):,} areas, {megabytes:.1f} MB"),
                ("load (rescue)", f"{load * 1000:.0f} ms"),
                ("ddrescuelog -t (same file)", f"{ddrescuelog * 1000:.0f} ms"),
                ("load / ddrescuelog -t", f"{load / ddrescuelog:.2f}x"),
                ("save (rescue, with fsync)", f"{save * 1000:.0f} ms"),
                ("snapshot", f"{snapshot_time * 1000:.2f} ms")]
        for columns, lines in ((80, 15), (200, 55)):
            count = columns * lines
            cell = cell_bytes_for(rmap.size, count)
            seconds = best_of(5, lambda c=cell, n=count: cell_states(snapshot, 0, rmap.size,
                                                                     c, n))
            rows.append((f"cell_states {columns}x{lines}", f"{seconds * 1000:.2f} ms"))
            cursor = best_of(5, lambda c=cell: snapshot.state_bytes(c * 7, c * 8))
            rows.append((f"cursor counts {columns}x{lines}", f"{cursor * 1000:.2f} ms"))
        for size in ((80, 24), (220, 64)):
            first, live = widget_frames(path, size)
            rows.append((f"widget first frame {size[0]}x{size[1]}", f"{first * 1000:.2f} ms"))
            rows.append((f"widget live frame {size[0]}x{size[1]}",
                         f"{live * 1000:.2f} ms (budget 20 ms)"))
        report("sector map on a 1,000,000-area map", rows)


if __name__ == "__main__":
    main()
