"""The rescue algorithm on the failure patterns of real disks: every good byte first, at few
read errors, no sector read more than twice before trimming, and in the end the same map a
perfect rescue makes, exact to the sector, also after an interruption."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.engine.bands import BandLearner, Predicted
from rescue.engine.jobs import JobControl, Phase
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.formats import mapfile
from rescue.formats.mapfile import Mapfile
from rescue.rangemap import BAD, FINISHED, RangeMap
from rescue.sim.discard import DiscardWriter
from rescue.sim.faulty import FaultySource

QUICK = RescueOptions(checkpoint_interval=1e9)
NO_SCRAPE = RescueOptions(checkpoint_interval=1e9, scrape=False)


@dataclass
class Run:
    outcome: Outcome
    source: FaultySource
    map: Mapfile


def rescue_sim(spec: str | FaultySource, options: RescueOptions = QUICK,
               current: Mapfile | None = None, control: JobControl | None = None) -> Run:
    source = spec if isinstance(spec, FaultySource) else FaultySource(spec)
    current = current or Mapfile(RangeMap(source.size))
    rescue = Rescue(source, DiscardWriter(source.size), current, lambda m: None, options,
                    control)
    return Run(rescue.run(), source, current)


def truth(source: FaultySource) -> list[tuple[int, int, str]]:
    """The map a perfect rescue makes: the bad ranges '-', the rest '+'."""
    rmap = RangeMap(source.size, FINISHED)
    for pos, length in source.bad_ranges():
        rmap.set(pos, length, BAD)
    return list(rmap.areas())


# ---- every good byte first -----------------------------------------------------------------

DEAD_HEADS = {
    "one head of four": "sim:size=4G,head=1/4",
    "one head of two, four zones": "sim:size=4G,head=0/2,zones=4",
    "two neighbouring heads of four": "sim:size=4G,head=1/4,head=2/4",
    "two heads of four apart": "sim:size=4G,head=0/4,head=2/4",
    "one head of eight, 24 zones": "sim:size=8G,head=5/8,zones=24",
    "the last head, short bands": "sim:size=4G,head=3/4,band=128k-64k",
}


@pytest.mark.parametrize("spec", DEAD_HEADS.values(), ids=DEAD_HEADS.keys())
def test_a_dead_head_gives_up_every_good_byte_after_few_read_errors(spec: str) -> None:
    """GNU ddrescue 1.27 needs about 24,000 read errors on the first of these models before
    the last good byte is in (measured with bench/bench_patterns.py); a few hundred at most
    is the bar, and every good byte is read."""
    run = rescue_sim(spec, NO_SCRAPE)
    tally = run.source.tally
    assert tally.failed_reads_to_all_good is not None, "some good data was never read"
    assert tally.failed_reads_to_all_good <= 350
    assert run.map.rmap.totals()[FINISHED] == tally.good_bytes
    # the bands of the dead head were found, not guessed: nothing good is marked bad
    bad = RangeMap(run.source.size)
    for pos, length in run.source.bad_ranges():
        bad.set(pos, length, BAD)
    assert all(bad.state_bytes(pos, pos + n)[BAD] == n
               for pos, n, state in run.map.rmap.areas() if state == BAD)


@pytest.mark.slow
def test_a_one_terabyte_drive_with_a_dead_head_costs_at_most_300_read_errors() -> None:
    """ddrescue 1.30's published figure on such a drive is 283 read errors."""
    source = FaultySource("sim:size=1T,head=1/4")
    control = JobControl()
    read = source.read

    def read_until_all_good(offset: int, length: int) -> memoryview:
        if source.tally.failed_reads_to_all_good is not None:
            control.cancel()  # every good byte is in: the bad bands are not the question
        return read(offset, length)

    source.read = read_until_all_good  # type: ignore[method-assign]
    run = rescue_sim(source, NO_SCRAPE, control=control)
    assert run.outcome is Outcome.INTERRUPTED
    assert source.tally.failed_reads_to_all_good is not None
    assert source.tally.failed_reads_to_all_good <= 300


OTHER_PATTERNS = {
    "scratch": ("sim:size=1G,scratch=100M+64k/37M*20", 20),
    "scattered sectors": ("sim:size=1G,scatter=60", 2 * 60),
    "bad areas of every size": ("sim:size=256M,bad=10M+4k,bad=61M+1M,bad=64M+4k,"
                                "bad=150M+160k,bad=200M+8M,bad=230M+512", 60),
}


@pytest.mark.parametrize(("spec", "most"), OTHER_PATTERNS.values(), ids=OTHER_PATTERNS.keys())
def test_other_patterns_cost_no_more_than_ddrescue(spec: str, most: int) -> None:
    """The bar is what GNU ddrescue 1.27 needs before its last good byte on these models (a
    scratch: one per spot; scattered sectors: two each; the bad areas: more than 100)."""
    run = rescue_sim(spec, NO_SCRAPE)
    tally = run.source.tally
    assert tally.failed_reads_to_all_good is not None
    assert tally.failed_reads_to_all_good <= most


def test_a_pattern_that_stops_costs_no_data_only_order() -> None:
    """Two bad areas of one length at one distance predict a third that never comes: the
    predicted bands are good, are read in the sweep, and nothing is lost."""
    run = rescue_sim("sim:size=64M,bad=4M+64k,bad=8M+64k")
    assert list(run.map.rmap.areas()) == truth(run.source)
    assert run.source.tally.failed_reads_to_all_good is not None
    assert run.source.tally.failed_reads_to_all_good <= 12


# ---- the same exact map in the end -----------------------------------------------------------

EXACT = {
    "dead head": "sim:size=64M,head=1/4,band=256k-128k",
    "scratch": "sim:size=64M,scratch=1M+4k/3M*15",
    "scattered sectors": "sim:size=64M,scatter=40,seed=3",
    "everything": "sim:size=128M,head=3/4,band=512k-256k,scratch=5M+8k/7M*12,scatter=20,"
                  "bad=100M+3k",
}


@pytest.mark.parametrize("spec", EXACT.values(), ids=EXACT.keys())
def test_the_final_map_is_exact_to_the_sector(spec: str) -> None:
    run = rescue_sim(spec)
    assert run.outcome is Outcome.UNREADABLE
    assert list(run.map.rmap.areas()) == truth(run.source)


def test_weak_sectors_are_rescued_by_a_retry_pass() -> None:
    run = rescue_sim("sim:size=64M,weak=8M+4M@0", RescueOptions(checkpoint_interval=1e9,
                                                               retries=1))
    assert run.outcome is Outcome.RESCUED


def test_no_sector_is_read_more_than_twice_before_trimming() -> None:
    """Counting the reads of sectors not rescued yet: a check that the source is still there
    reads a rescued sector again, and that is no read of the rescue."""
    source = FaultySource(EXACT["everything"])
    reads: Counter[int] = Counter()
    phases: set[Phase] = set()
    read = source.read

    def count_while_copying(offset: int, length: int) -> memoryview:
        phase = rescue.progress().phase
        phases.add(phase)
        rescued = rescue.rmap.state_bytes(offset, offset + length)[FINISHED] == length
        if phase in (Phase.COPYING, Phase.SWEEPING) and not rescued:
            reads.update(range(offset // 512, -(-(offset + length) // 512)))
        return read(offset, length)

    source.read = count_while_copying  # type: ignore[method-assign]
    rescue = Rescue(source, DiscardWriter(source.size), Mapfile(RangeMap(source.size)),
                    lambda m: None, QUICK)
    rescue.run()
    assert {Phase.COPYING, Phase.SWEEPING, Phase.SCRAPING} <= phases
    assert len(reads) > source.size // 512 // 2
    assert max(reads.values()) <= 2


@pytest.mark.parametrize("stop_after", [40, 400, 4000])
def test_an_interrupted_rescue_resumes_to_the_same_map(tmp_path: Path, stop_after: int
                                                       ) -> None:
    """Stopped at any point (mid pass 1, mid sweep, mid scraping), saved and loaded again,
    the rescue ends with the map of one that was never stopped."""
    spec = EXACT["everything"]
    control = JobControl()
    source = FaultySource(spec)
    read = source.read

    def read_then_stop(offset: int, length: int) -> memoryview:
        if source.tally.reads >= stop_after:
            control.cancel()
        return read(offset, length)

    source.read = read_then_stop  # type: ignore[method-assign]
    path = tmp_path / "disk.map"
    current = Mapfile(RangeMap(source.size))
    stopped = Rescue(source, DiscardWriter(source.size), current,
                     lambda m: mapfile.save(str(path), m), QUICK, control).run()
    assert stopped is Outcome.INTERRUPTED
    resumed = rescue_sim(spec, current=mapfile.load(str(path)))
    assert list(resumed.map.rmap.areas()) == truth(resumed.source)


# ---- the learner -----------------------------------------------------------------------------

def test_the_learner_predicts_bands_at_the_period_of_two_equal_ones() -> None:
    learner = BandLearner(512)
    assert learner.predict(0) is None
    learner.observe(1000 * 512, 1100 * 512)
    assert learner.predict(0) is None, "one band tells no period"
    learner.observe(1400 * 512, 1500 * 512)
    assert learner.period() == 400 * 512
    assert learner.predict(1500 * 512) == (1800 * 512, 1900 * 512)
    assert learner.predict(1850 * 512) == (1800 * 512, 1900 * 512)
    assert learner.predict(1900 * 512) == (2200 * 512, 2300 * 512)


def test_a_band_of_a_new_length_keeps_the_ratio_of_period_to_length() -> None:
    """A new zone: shorter bands, the same number of heads."""
    learner = BandLearner(512)
    learner.observe(0, 100 * 512)
    learner.observe(400 * 512, 500 * 512)
    learner.observe(10_000 * 512, 10_090 * 512)
    assert learner.period() == 360 * 512
    assert learner.predict(10_090 * 512) == (10_360 * 512, 10_450 * 512)


def test_bands_of_unequal_lengths_predict_nothing() -> None:
    learner = BandLearner(512)
    learner.observe(0, 100 * 512)
    learner.observe(400 * 512, 450 * 512)
    assert learner.period() is None and learner.predict(0) is None


def test_forgotten_predictions_are_returned_and_no_longer_overlap() -> None:
    predicted = Predicted()
    for begin in (10, 30, 50):
        predicted.add(begin, begin + 5)
    assert predicted.overlaps(12, 13) and not predicted.overlaps(16, 29)
    assert predicted.forget_after(29) == [(30, 35), (50, 55)]
    assert not predicted.overlaps(30, 60) and len(predicted) == 1


# ---- edges: odd sizes, skips, domains ----------------------------------------------------------

def test_a_skip_past_a_slow_read_lands_on_a_sector_boundary() -> None:
    """With every read too slow, pass 1 skips by a size/100 default that is no sector
    multiple on most disks; the skip is rounded, so no good byte shares a sector with a bad one
    in the map."""
    run = rescue_sim("sim:size=64M,bad=10M+3k", RescueOptions(checkpoint_interval=1e9,
                                                              min_read_rate=10**12))
    assert list(run.map.rmap.areas()) == truth(run.source)


def test_a_disk_of_an_odd_size_read_backwards_ends_exact() -> None:
    run = rescue_sim("sim:size=1000,bad=0+1000", RescueOptions(checkpoint_interval=1e9,
                                                               reverse=True))
    assert list(run.map.rmap.areas()) == [(0, 1000, BAD)]


def test_nothing_outside_a_domain_of_several_pieces_is_read() -> None:
    """The learning pass reads into bands and probes past bad areas; none of it may leave the
    domain (the metadata-first and chosen-files stages rely on it)."""
    source = FaultySource("sim:size=64M,head=1/4,band=256k-128k,bad=20M+64k")
    domain = RangeMap(source.size)
    for begin in range(0, source.size, 8 << 20):
        domain.set(begin + (1 << 20), 3 << 20, FINISHED)
    outside: list[tuple[int, int]] = []
    read = source.read

    def read_inside(offset: int, length: int) -> memoryview:
        if domain.state_bytes(offset, offset + length)[FINISHED] != length:
            outside.append((offset, length))
        return read(offset, length)

    source.read = read_inside  # type: ignore[method-assign]
    current = Mapfile(RangeMap(source.size))
    Rescue(source, DiscardWriter(source.size), current, lambda m: None, QUICK, None,
           domain).run()
    assert outside == []
    exact = RangeMap.from_areas(source.size, truth(source))
    for begin, length, state in domain.areas():
        if state == FINISHED:
            assert current.rmap.state_bytes(begin, begin + length) == \
                exact.state_bytes(begin, begin + length)
        else:
            assert current.rmap.state_bytes(begin, begin + length)["?"] == length
