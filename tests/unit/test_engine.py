"""The rescue engine on the simulated disk: exact maps, true content, options, job control, and
the range map and mapfile it stands on. Fast, no root."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.engine.jobs import JobControl
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.errors import FormatError
from rescue.formats import mapfile
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.io.reader import Unreadable
from rescue.rangemap import STATES, RangeMap
from rescue.sim.faulty import SECTOR, FaultySource, FaultySpec, content

MIB = 1 << 20
DISK = 16 * MIB


def scattered_bad(seed: int, count: int = 24) -> list[tuple[int, int, float]]:
    """Disjoint bad ranges of 1 to 40 sectors at random places (one per slot of the disk), plus
    one that is not sector-aligned and the last sector."""
    rng = random.Random(seed)
    slot = DISK // SECTOR // (count + 1)
    ranges = [((i * slot + rng.randrange(slot - 40)) * SECTOR, rng.randint(1, 40) * SECTOR, 0.0)
              for i in range(count) if i != 9 * MIB // SECTOR // slot]
    ranges.append((9 * MIB + 100, 700, 0.0))  # touches sectors 18432 and 18433
    ranges.append((DISK - SECTOR, SECTOR, 0.0))  # the very last sector
    return ranges


@dataclass
class Run:
    outcome: Outcome
    map: Mapfile
    image: bytes
    source: FaultySource
    saved: list[Mapfile]


def run_rescue(tmp_path: Path, spec: FaultySpec, options: RescueOptions | None = None, *,
               start: Mapfile | None = None, domain: RangeMap | None = None,
               control: JobControl | None = None,
               clock: Callable[[float], None] = time.sleep) -> Run:
    """Rescue the simulated disk into a raw image; every saved map is kept, parsed back."""
    source = FaultySource(spec, clock=clock)
    source.track_reads = True
    image = tmp_path / "out.img"
    writer = RawWriter(str(image), spec.size)
    current = start or Mapfile(RangeMap(spec.size))
    saved: list[Mapfile] = []
    rescue = Rescue(source, writer, current,
                    lambda m: saved.append(mapfile.parse(mapfile.render(m), size=spec.size)),
                    options or RescueOptions(), control, domain)
    try:
        outcome = rescue.run()
    finally:
        writer.close()
    return Run(outcome, current, image.read_bytes(), source, saved)


def sectors_in(rmap: RangeMap, states: str) -> set[int]:
    return {s for pos, length, state in rmap.areas() if state in states
            for s in range(pos // SECTOR, (pos + length) // SECTOR)}


def assert_true_content(run: Run) -> None:
    """Finished areas hold the disk's bytes; nothing else was ever written (sparse zeros)."""
    for pos, length, state in run.map.rmap.areas():
        got = run.image[pos:pos + length]
        if state == "+":
            assert got == content(pos, length, run.source.spec.seed), f"wrong data at {pos:#x}"
        else:
            assert got == bytes(length), f"{state!r} area at {pos:#x} holds data"


def block_lines(m: Mapfile) -> list[tuple[int, int, str]]:
    return list(m.rmap.areas())


def test_scattered_bad_ranges_give_an_exact_map_and_true_content(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=1), seed=3)
    run = run_rescue(tmp_path, spec)
    assert run.outcome is Outcome.UNREADABLE
    assert set(run.map.rmap.totals()) == set(STATES)
    assert sectors_in(run.map.rmap, "-") == run.source.bad_sectors()
    assert sectors_in(run.map.rmap, "?*/") == set()
    assert run.map.current_status == "+"
    assert_true_content(run)


def test_overlapping_bad_ranges_fail_every_sector_they_cover() -> None:
    source = FaultySource("sim:size=1M,bad=0+8k,bad=1k+512")
    assert 8 in source.bad_sectors()
    with pytest.raises(Unreadable):
        source.read(8 * SECTOR, SECTOR)


def test_a_healthy_disk_is_rescued_whole(tmp_path: Path) -> None:
    run = run_rescue(tmp_path, FaultySpec(3 * MIB + 5 * SECTOR, seed=9))
    assert run.outcome is Outcome.RESCUED
    assert block_lines(run.map) == [(0, 3 * MIB + 5 * SECTOR, "+")]
    assert run.image == content(0, 3 * MIB + 5 * SECTOR, 9)


def test_flaky_sectors_are_rescued_by_retry_passes(tmp_path: Path) -> None:
    spec = FaultySpec(4 * MIB, bad=[(MIB, 4 * SECTOR, 0.0)],
                      flaky=[(2 * MIB + 3 * SECTOR, 5 * SECTOR, 4.0)])
    without = run_rescue(tmp_path, spec)
    assert sectors_in(without.map.rmap, "-") > without.source.bad_sectors()
    with_retries = run_rescue(tmp_path, spec, RescueOptions(retries=3))
    assert sectors_in(with_retries.map.rmap, "-") == with_retries.source.bad_sectors()
    assert_true_content(with_retries)


def test_reverse_gives_the_same_final_map(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=2))
    forward = run_rescue(tmp_path, spec)
    backward = run_rescue(tmp_path, spec, RescueOptions(reverse=True))
    assert block_lines(backward.map) == block_lines(forward.map)
    assert_true_content(backward)


def test_no_trim_leaves_non_trimmed_areas_around_every_bad_sector(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=3))
    run = run_rescue(tmp_path, spec, RescueOptions(trim=False))
    states = {state for _, _, state in run.map.rmap.areas()}
    assert states == {"+", "*"}
    assert run.source.bad_sectors() <= sectors_in(run.map.rmap, "*")
    assert_true_content(run)


def test_no_scrape_leaves_non_scraped_middles(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=4))
    run = run_rescue(tmp_path, spec, RescueOptions(scrape=False))
    assert {state for _, _, state in run.map.rmap.areas()} == {"+", "-", "/"}
    bad = run.source.bad_sectors()
    assert sectors_in(run.map.rmap, "-") <= bad
    assert sectors_in(run.map.rmap, "-/") >= bad
    # trimming reads a bad run's edges; only the inside of runs of 3+ sectors stays unscraped
    assert sectors_in(run.map.rmap, "/") <= {s for s in bad if s - 1 in bad and s + 1 in bad}
    assert_true_content(run)


def test_copy_passes_read_no_sector_more_than_twice(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=5, count=60),
                      flaky=[(12 * MIB, 64 * SECTOR, 1.0)])
    run = run_rescue(tmp_path, spec, RescueOptions(trim=False, scrape=False))
    assert max(run.source.reads.values()) <= 2
    assert len(run.source.reads) == DISK // SECTOR


def test_domain_limits_reads_to_the_domain(tmp_path: Path) -> None:
    domain = RangeMap(DISK)
    inside = [(MIB + 7 * SECTOR, 300 * SECTOR), (5 * MIB, 2 * MIB), (DISK - 9 * SECTOR, 9 * SECTOR)]
    for pos, length in inside:
        domain.set(pos, length, "+")
    spec = FaultySpec(DISK, bad=[(MIB + 100 * SECTOR, 3 * SECTOR, 0.0),
                                 (3 * MIB, 10 * SECTOR, 0.0),  # outside: never read
                                 (6 * MIB, 20 * SECTOR, 0.0)])
    run = run_rescue(tmp_path, spec, domain=domain)
    domain_sectors = sectors_in(domain, "+")
    assert set(run.source.reads) <= domain_sectors
    assert sectors_in(run.map.rmap, "+-") == domain_sectors
    assert sectors_in(run.map.rmap, "-") == run.source.bad_sectors() & domain_sectors
    assert sectors_in(run.map.rmap, "?") == set(range(DISK // SECTOR)) - domain_sectors
    assert run.outcome is Outcome.UNREADABLE
    assert_true_content(run)


class ReadHook:
    """A FaultySource clock that runs `action` at the n-th read (rate= makes every read call it)."""

    def __init__(self, at_read: int, action: Callable[[], None]) -> None:
        self.at_read, self.action = at_read, action
        self.reads = 0
        self.reached = threading.Event()

    def __call__(self, delay: float) -> None:
        self.reads += 1
        if self.reads == self.at_read:
            self.action()
            self.reached.set()


def test_cancel_saves_a_map_that_resumes_to_the_same_result(tmp_path: Path) -> None:
    spec = FaultySpec(DISK, bad=scattered_bad(seed=6), rate=1 << 40)
    full = run_rescue(tmp_path, spec)
    (tmp_path / "out.img").unlink()

    control = JobControl()
    hook = ReadHook(at_read=12, action=control.cancel)
    stopped = run_rescue(tmp_path, spec, control=control, clock=hook)
    assert stopped.outcome is Outcome.INTERRUPTED
    last = stopped.saved[-1]
    assert block_lines(last) == block_lines(stopped.map)
    assert 0 < last.rmap.totals()["+"] < full.map.rmap.totals()["+"]
    assert last.current_status == "?"

    resumed = run_rescue(tmp_path, spec, start=last)
    assert block_lines(resumed.map) == block_lines(full.map)
    assert resumed.image == full.image


def test_pause_stops_reading_until_resumed(tmp_path: Path) -> None:
    spec = FaultySpec(4 * MIB, bad=[(MIB, SECTOR, 0.0)], rate=1 << 40)
    control = JobControl()
    hook = ReadHook(at_read=3, action=control.pause)
    source = FaultySource(spec, clock=hook)
    writer = RawWriter(str(tmp_path / "out.img"), spec.size)
    rescue = Rescue(source, writer, Mapfile(RangeMap(spec.size)), lambda m: None,
                    RescueOptions(), control)
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(rescue.run()))
    worker.start()
    try:
        assert hook.reached.wait(10)
        time.sleep(0.5)
        assert rescue.progress().paused
        assert hook.reads == 3
        assert worker.is_alive()
    finally:
        control.resume()
        worker.join(30)
        writer.close()
    assert outcome == [Outcome.UNREADABLE]
    assert hook.reads > 3
    assert not rescue.progress().paused


def test_cancel_wakes_a_paused_job(tmp_path: Path) -> None:
    spec = FaultySpec(4 * MIB, rate=1 << 40)
    control = JobControl()
    hook = ReadHook(at_read=2, action=control.pause)
    source = FaultySource(spec, clock=hook)
    writer = RawWriter(str(tmp_path / "out.img"), spec.size)
    saved: list[Mapfile] = []
    rescue = Rescue(source, writer, Mapfile(RangeMap(spec.size)), saved.append,
                    RescueOptions(), control)
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(rescue.run()))
    worker.start()
    assert hook.reached.wait(10)
    control.cancel()
    worker.join(10)
    writer.close()
    assert outcome == [Outcome.INTERRUPTED]
    assert hook.reads == 2
    assert saved


# ---- the range map against a naive per-byte model --------------------------------------------


def runs_of(model: list[str]) -> list[tuple[int, int, str]]:
    runs: list[tuple[int, int, str]] = []
    for pos, state in enumerate(model):
        if runs and runs[-1][2] == state:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, state)
        else:
            runs.append((pos, 1, state))
    return runs


def naive_find(model: list[str], states: str, pos: int, forward: bool
               ) -> tuple[int, int, str] | None:
    """The documented answer of RangeMap.find, from the per-byte model."""
    for begin, length, state in (runs_of(model) if forward else reversed(runs_of(model))):
        end = begin + length
        if state not in states:
            continue
        if forward and end > pos:
            return max(begin, pos), end - max(begin, pos), state
        if not forward and begin < pos:
            return begin, min(end, pos) - begin, state
    return None


@pytest.mark.parametrize("seed", range(6))
def test_range_map_agrees_with_a_per_byte_model(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 7, 512, 3000])
    initial = rng.choice(STATES)
    rmap, model = RangeMap(size, initial), [initial] * size
    for _ in range(300):
        pos = rng.randrange(size + 5)  # past the end: clipped
        length = rng.choice([1, 2, rng.randrange(1, 64), rng.randrange(1, size + 10)])
        state = rng.choice(STATES)
        rmap.set(pos, length, state)
        for i in range(max(pos, 0), min(pos + length, size)):
            model[i] = state
        assert list(rmap.areas()) == runs_of(model)
        assert rmap.totals() == {s: model.count(s) for s in STATES}
        probe = rng.randrange(size + 1)
        states = "".join(rng.sample(STATES, rng.randint(1, 2)))
        for forward in (True, False):
            assert rmap.find(states, probe, forward) == naive_find(model, states, probe, forward)
        if probe < size:
            assert rmap.state_at(probe) == model[probe]
            begin, end = sorted(rng.sample(range(size + 1), 2)) if size > 1 else (0, 1)
            counts = rmap.state_bytes(begin, end)
            assert counts == {s: model[begin:end].count(s) for s in STATES}


# ---- mapfiles --------------------------------------------------------------------------------


def test_mapfile_round_trip_keeps_status_and_blocks() -> None:
    rmap = RangeMap.from_areas(10 * MIB, [(0, MIB, "+"), (MIB, 512, "-"), (MIB + 512, 1024, "/"),
                                          (MIB + 1536, 4096, "*"), (MIB + 5632, 9 * MIB - 5632,
                                                                   "?")])
    original = Mapfile(rmap, current_pos=0x123400, current_status="/", current_pass=3)
    text = mapfile.render(original, "rescue image a b", 0.0)
    parsed = mapfile.parse(text, size=10 * MIB)
    assert (parsed.current_pos, parsed.current_status, parsed.current_pass) == (0x123400, "/", 3)
    assert block_lines(parsed) == block_lines(original)
    assert mapfile.render(parsed, "rescue image a b", 0.0).splitlines()[4:] == \
        text.splitlines()[4:]


def test_mapfile_numbers_may_be_decimal_hex_or_octal() -> None:
    text = ("# Mapfile. Created by GNU ddrescue version 1.27\n"
            "# current_pos  current_status\n"
            "0x200 ?\n"
            "0 512 +\n"
            "0x200  0x200  -  # trailing comment\n"
            "02000 01000 /\n"
            "\n"
            "1536 0x400 +\n")
    parsed = mapfile.parse(text, size=4096)
    assert (parsed.current_pos, parsed.current_status, parsed.current_pass) == (512, "?", 1)
    assert block_lines(parsed) == [(0, 512, "+"), (512, 512, "-"), (1024, 512, "/"),
                                   (1536, 1024, "+"), (2560, 1536, "?")]


@pytest.mark.parametrize(("text", "problem"), [
    ("", "no status line"),
    ("garbage here\n", "status line"),
    ("0 ? 1\n0 512 +\n1024 512 -\n", "gap"),
    ("0 ? 1\n0 512 +\n256 512 -\n", "overlap"),
    ("0 ? 1\n0 512 x\n", "block line"),
    ("0 ? 1\n0 zz +\n", "not a number"),
    ("0 ? 1\n0 8192 +\n", "different source"),
    ("0 ? 1\n0 -5 +\n", "negative"),
])
def test_broken_mapfiles_raise_one_line_format_errors(text: str, problem: str) -> None:
    with pytest.raises(FormatError, match=problem) as failure:
        mapfile.parse(text, "the.map", size=4096)
    assert "\n" not in str(failure.value)


def test_binary_mapfile_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.map"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FormatError, match="binary"):
        mapfile.load(str(path), 4096)


@pytest.mark.slow
def test_a_million_area_map_loads_and_saves(tmp_path: Path) -> None:
    count, area = 1_000_000, 1024
    rng = random.Random(0)
    states = []
    for _ in range(count):
        state = rng.choice(STATES)
        while states and state == states[-1]:
            state = rng.choice(STATES)
        states.append(state)
    rmap = RangeMap.from_areas(count * area, ((i * area, area, s) for i, s in enumerate(states)))
    path = tmp_path / "big.map"
    started = time.perf_counter()
    mapfile.save(str(path), Mapfile(rmap, 5 * area, "*", 1))
    saved = time.perf_counter()
    loaded = mapfile.load(str(path), count * area)
    finished = time.perf_counter()
    print(f"1,000,000-area map: save {saved - started:.2f} s, load {finished - saved:.2f} s")
    assert len(loaded.rmap) == count
    assert loaded.rmap.totals() == rmap.totals()
    assert list(loaded.rmap.areas())[::9973] == list(rmap.areas())[::9973]


def test_slow_areas_are_skipped_in_the_first_pass_and_read_later(tmp_path: Path) -> None:
    """With --min-read-rate the first pass leaves a slow area behind; later passes read it."""
    mib = 1 << 20
    spec = FaultySpec(size=8 * mib, slow=[(2 * mib, mib, 0.02)])
    source = FaultySource(spec)
    writer = RawWriter(str(tmp_path / "out.img"), spec.size)
    current = Mapfile(RangeMap(spec.size))
    rescue = Rescue(source, writer, current, lambda m: None,
                    RescueOptions(min_read_rate=50 * mib, max_read=64 * 1024))
    reads: list[tuple[int, str, int]] = []
    plain_read = source.read

    def watching_read(offset: int, length: int) -> memoryview:
        progress = rescue.progress()
        reads.append((offset, progress.phase, progress.pass_no))
        return plain_read(offset, length)

    source.read = watching_read  # type: ignore[method-assign]
    try:
        assert rescue.run() is Outcome.RESCUED
    finally:
        writer.close()
    in_slow_area = [(phase, passno) for o, phase, passno in reads if 2 * mib <= o < 3 * mib]
    first_pass = [r for r in in_slow_area if r == ("copying", 1)]
    assert 0 < len(first_pass) < 16, "the first pass touches the slow area, then skips it"
    assert len(in_slow_area) > len(first_pass), "a later pass reads the skipped slow area"
    assert current.rmap.totals()["+"] == spec.size
    assert (tmp_path / "out.img").read_bytes() == content(0, spec.size)
