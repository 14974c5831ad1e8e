"""The sector map on a 1,000,000-area mapfile: loading it, one frame, and a cursor query.

A frame is what the widget does 5 times a second: take the cells of the whole device from a
snapshot (`cell_states`), then build the rows' strips. The budget is 20 ms per frame; loading
is reported for comparison with `ddrescuelog -t` on the same file, read in the same run (best
of three runs each, so both read from the page cache), and saving is reported too.

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
from rescue.rangemap import STATES, RangeMap
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


def widget_frame(path: str, size: tuple[int, int]) -> float:
    """Best time of show() plus building every row of the map, inside a headless app."""
    app = make_app(map_path=path)
    result: list[float] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            widget = app.screen.query_one(SectorMap)
            snapshot = widget.snapshot
            assert snapshot is not None

            def frame() -> None:
                widget._cells = b""  # every row changes, as on the first frame
                widget.show(snapshot, 0)
                for y in range(widget.size.height):
                    widget.render_line(y)

            result.append(best_of(5, frame))

    asyncio.run(main())
    return result[0]


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
            rows.append((f"widget frame {size[0]}x{size[1]}",
                         f"{widget_frame(path, size) * 1000:.2f} ms (budget 20 ms)"))
        report("sector map on a 1,000,000-area map", rows)


if __name__ == "__main__":
    main()
