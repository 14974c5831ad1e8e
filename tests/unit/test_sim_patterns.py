"""Real failure patterns in the simulated disk, exact to the sector: dead heads in serpentine
bands, scratches, weak zones and scattered sectors; the virtual clock and the tally."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from rescue.engine.rescue import Rescue, RescueOptions
from rescue.errors import UsageError
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.io.reader import Unreadable
from rescue.rangemap import RangeMap
from rescue.sim.faulty import SECTOR, FaultySource, FaultySpec, content
from tests.fixtures.cli import assert_clean_failure, rescue

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

# four zones of 64 KiB (the last 1.5 KiB longer), bands of 8, 6, 4 and 2 KiB, two heads
SMALL = 4 * 64 * KIB + 3 * SECTOR
LAYOUT = f"sim:size={SMALL},zones=4,band=8k-2k"


def bad(spec: str) -> list[tuple[int, int]]:
    return FaultySource(spec).bad_ranges()


def kib(ranges: list[tuple[int, int]]) -> list[tuple[float, float]]:
    return [(pos / KIB, length / KIB) for pos, length in ranges]


def test_a_dead_head_owns_every_other_band_zone_by_zone() -> None:
    ranges = kib(bad(f"{LAYOUT},head=1/2"))
    zone0 = [(8, 8), (24, 8), (40, 8), (56, 8)]
    zone1 = [(70, 6), (82, 6), (94, 6), (106, 6), (118, 6)]  # period 12 KiB from 64 KiB
    zone2 = [(132 + 8 * i, 4) for i in range(8)]  # period 8 KiB from 128 KiB
    zone3 = [(194 + 4 * i, 2) for i in range(16)]  # period 4 KiB from 192 KiB to 257.5 KiB
    assert ranges == zone0 + zone1 + zone2 + zone3


def test_a_zones_last_band_is_cut_short_by_its_end() -> None:
    ranges = kib(bad(f"{LAYOUT},head=0/2"))
    assert ranges[:2] == [(0, 8), (16, 8)]
    # 124 + 6 passes the zone's end at 128: cut to 4 KiB, and joined by zone 2's first band
    assert (64, 6) in ranges and (124, 8) in ranges
    assert ranges[-1] == (256, 1.5)  # the last zone's remainder


def test_every_head_dead_leaves_nothing_readable_and_heads_never_overlap() -> None:
    heads = [bad(f"{LAYOUT},head={k}/3") for k in range(3)]
    everything = sorted(r for ranges in heads for r in ranges)
    assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(everything))
    assert sum(length for _, length in everything) == SMALL
    assert bad(f"{LAYOUT},head=0/3,head=1/3,head=2/3") == [(0, SMALL)]


def test_neighbouring_dead_heads_merge_into_double_bands() -> None:
    ranges = bad("sim:size=1M,zones=1,band=4k,head=1/4,head=2/4")
    assert ranges == [(pos, 8 * KIB) for pos in range(4 * KIB, MIB, 16 * KIB)]


@pytest.mark.parametrize(("size", "outer", "inner"), [
    (TIB, 128 * MIB, 64 * MIB), (4 * GIB, 512 * KIB, 256 * KIB), (2 * TIB, 256 * MIB, 128 * MIB)])
def test_default_bands_shrink_from_size_over_8192_to_half(size: int, outer: int,
                                                          inner: int) -> None:
    ranges = bad(f"sim:size={size},head=1/4")
    assert ranges[:2] == [(outer, outer), (5 * outer, outer)]
    last_zone = size - size // 16
    assert next(r for r in ranges if r[0] >= last_zone) == (last_zone + inner, inner)


def test_band_lengths_shrink_linearly_rounded_down_to_sectors() -> None:
    """16 zones from 100000 to 10000 bytes: zone k has 100000 - 90000 k / 15, rounded down to
    a multiple of 512."""
    size = 16 * 4 * MIB
    ranges = bad(f"sim:size={size},band=100000-10000,head=2/3")
    for zone in range(16):
        start = zone * 4 * MIB
        first = next(r for r in ranges if r[0] >= start)
        band = (100000 - 90000 * zone // 15) // SECTOR * SECTOR
        assert first == (start + 2 * band, band), f"zone {zone}"


def test_the_tally_counts_failed_reads_until_the_last_good_byte() -> None:
    slept: list[float] = []
    source = FaultySource("sim:size=64k,bad=8k+4k,rate=1M,cost=3", clock=slept.append)
    assert source.tally.good_bytes == 60 * KIB
    source.read(12 * KIB, 52 * KIB)
    with pytest.raises(Unreadable):
        source.read(8 * KIB, 4 * KIB)
    source.read(12 * KIB, 4 * KIB)  # again: no new good byte
    assert source.tally.failed_reads_to_all_good is None
    with pytest.raises(Unreadable):
        source.read(8 * KIB, 512)
    assert bytes(source.read(0, 8 * KIB)) == content(0, 8 * KIB)
    tally = source.tally
    assert (tally.reads, tally.failed_reads, tally.good_bytes_read) == (5, 2, 60 * KIB)
    assert tally.failed_reads_to_all_good == 2
    good_seconds = (52 + 4 + 8) / 1024
    assert tally.seconds == pytest.approx(2 * 3 + good_seconds)
    assert tally.seconds_to_all_good == pytest.approx(tally.seconds)
    assert sum(slept) == pytest.approx((52 + 4 + 4 + 0.5 + 8) / 1024)  # rate= really waits


def test_without_a_rate_good_reads_cost_150_mb_per_second_and_nothing_sleeps() -> None:
    slept: list[float] = []
    source = FaultySource("sim:size=300M,bad=0+512,cost=0.5", clock=slept.append)
    source.read(MIB, 150 * 10**6)
    with pytest.raises(Unreadable):
        source.read(0, 512)
    assert source.tally.seconds == pytest.approx(1.5)
    assert slept == []


@pytest.mark.parametrize("spec", [
    "sim:size=1M,head=4/4",              # head K >= N
    "sim:size=1M,head=0/0",              # no heads
    "sim:size=1M,head=-1/2",
    "sim:size=1M,head=1",                # no N
    "sim:size=1M,head=0/2,head=1/3",     # heads disagree on N
    "sim:size=1M,head=1/2,head=1/2",     # the same head twice
    "sim:size=1M,head=x/2",
    "sim:size=1M,zones=4",               # a layout without a dead head
    "sim:size=1M,band=4k",
    "sim:size=1M,head=0/2,zones=0",
    "sim:size=1M,head=0/2,zones=nan",
    "sim:size=1M,head=0/2,zones=4096",   # zones shorter than a sector
    "sim:size=1M,head=0/2,zones=4,band=512k",  # a band longer than a zone
    "sim:size=1M,head=0/2,band=0",
    "sim:size=1M,head=0/2,band=100",     # less than a sector
    "sim:size=1M,head=0/2,band=4k-8k",   # growing inwards
    "sim:size=1M,head=0/2,band=4k-0",
    "sim:size=1M,head=0/2,band=4k-",
    "sim:size=1M,head=0/2,zones=2,zones=4",
    "sim:size=1T,head=0/2,band=4k",      # hundreds of millions of bands
    "sim:size=1M,cost=-1",
    "sim:size=1M,cost=nan",
    "sim:size=1M,cost=inf",
    "sim:size=1M,cost=1,cost=2",
])
def test_malformed_head_layouts_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        FaultySpec.parse(spec)


def test_bad_sectors_and_bad_ranges_agree_with_plain_bad_ranges() -> None:
    source = FaultySource("sim:size=1M,bad=4k+100,bad=4k+1k,bad=9k+1,bad=1048064+512")
    assert source.bad_ranges() == [(4 * KIB, KIB), (9 * KIB, SECTOR), (MIB - SECTOR, SECTOR)]
    assert source.bad_sectors() == {8, 9, 18, 2047}
    assert source.tally.good_bytes == MIB - 2 * KIB


def test_a_scratch_is_count_spots_stride_apart_widened_to_sectors() -> None:
    assert bad("sim:size=1M,scratch=10k+1k/100k*3") == [
        (10 * KIB, KIB), (110 * KIB, KIB), (210 * KIB, KIB)]
    assert bad("sim:size=1M,scratch=1000+100/4k*2") == [(512, 1024), (4608, 1024)]
    assert bad("sim:size=1M,scratch=0+4k/4k*4") == [(0, 16 * KIB)]  # spots that touch join


def scattered(spec: str) -> set[int]:
    return FaultySource(spec).bad_sectors()


def test_scattered_sectors_are_distinct_inside_their_range_and_fixed_by_the_seed() -> None:
    whole = scattered("sim:size=1M,scatter=300")
    assert len(whole) == 300 and whole <= set(range(2048))
    ranged = scattered("sim:size=1M,scatter=40@100000+64k")
    inside = range(-(-100000 // SECTOR), (100000 + 64 * KIB) // SECTOR)  # whole sectors only
    assert len(ranged) == 40 and ranged <= set(inside)
    assert scattered("sim:size=1M,scatter=40@100000+64k") == ranged
    assert scattered("sim:size=1M,scatter=40@100000+64k,seed=1") != ranged
    every = scattered(f"sim:size=1M,scatter={len(inside)}@100000+64k")
    assert every == set(inside)
    twice = scattered("sim:size=1M,scatter=5,scatter=5")  # each setting draws its own
    assert 5 < len(twice) <= 10


def read_every_sector(source: FaultySource, sectors: int) -> set[int]:
    failed = set()
    for sector in range(sectors):
        try:
            source.read(sector * SECTOR, SECTOR)
        except Unreadable:
            failed.add(sector)
    return failed


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_weak_zone_fails_one_sector_in_16_twice_then_reads_and_costs_time(seed: int) -> None:
    slept: list[float] = []
    source = FaultySource(f"sim:size=192k,weak=32k+64k@0.25,seed={seed}", clock=slept.append)
    first = read_every_sector(source, 384)
    assert len(first) == 8 and all(64 <= s < 192 for s in first)
    assert sorted(s // 16 for s in first) == list(range(4, 12))  # one in each group of 16
    assert read_every_sector(source, 384) == first
    assert source.tally.failed_reads_to_all_good is None
    assert read_every_sector(source, 384) == set()
    tally = source.tally
    assert tally.failed_reads_to_all_good == 16 and tally.good_bytes == 192 * KIB
    weak_reads, good_reads = 3 * 128, 3 * 384 - 16
    assert tally.seconds == pytest.approx(weak_reads * 0.25 + 16 * 2 +
                                          good_reads * SECTOR / 150e6)
    assert slept == []  # weak zones cost virtual time only
    assert bytes(source.read(32 * KIB, 64 * KIB)) == content(32 * KIB, 64 * KIB, seed)


def test_weak_sectors_move_with_the_seed_and_stay_put_without_it() -> None:
    def weak_sectors(seed: int) -> set[int]:
        return read_every_sector(FaultySource(f"sim:size=1M,weak=0+1M,seed={seed}"), 2048)

    assert weak_sectors(3) == weak_sectors(3)
    assert weak_sectors(3) != weak_sectors(4)


def test_one_read_over_a_weak_zone_fails_while_any_of_its_weak_sectors_does() -> None:
    source = FaultySource("sim:size=1M,weak=0+1M@0")
    for _ in range(2):
        with pytest.raises(Unreadable):
            source.read(0, 64 * KIB)
    assert bytes(source.read(0, 64 * KIB)) == content(0, 64 * KIB)
    assert source.tally.seconds == pytest.approx(4 + 64 * KIB / 150e6)


@pytest.mark.parametrize("spec", [
    "sim:size=1M,scratch=0+512",               # no stride and count
    "sim:size=1M,scratch=0+512/4k",
    "sim:size=1M,scratch=0+512/4k*0",
    "sim:size=1M,scratch=0+4k/1k*3",           # spots that overlap
    "sim:size=1M,scratch=0+0/4k*3",
    "sim:size=1M,scratch=1044480+4k/4k*2",    # past the end
    "sim:size=1M,scratch=0+512/4k*x",
    "sim:size=1M,weak=0+0",
    "sim:size=1M,weak=1M+512",                 # past the end
    "sim:size=1M,weak=0+4k@-1",
    "sim:size=1M,weak=0+4k@nan",
    "sim:size=1M,weak=0+4k@inf",
    "sim:size=1M,scatter=0",
    "sim:size=1M,scatter=-3",
    "sim:size=1M,scatter=2049",                # more sectors than the disk has
    "sim:size=1M,scatter=2@100+1000",          # one whole sector in the range
    "sim:size=1M,scatter=1@1M+512",
    "sim:size=1M,scatter=1@0",
    "sim:size=1M,scatter=x",
    "sim:size=1M,scatter=5000000@0+1M",
])
def test_malformed_patterns_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        FaultySpec.parse(spec)


def test_the_cli_refuses_a_bad_pattern_in_one_line(tmp_path: Path) -> None:
    done = rescue("image", "sim:size=1M,head=4/4", tmp_path / "out.img")
    assert_clean_failure(done, 2, "heads are numbered 0 to 3")


def test_a_rescue_of_a_dead_head_model_maps_its_truth_and_the_tally_follows(
        tmp_path: Path) -> None:
    spec = "sim:size=24M,head=2/4,zones=3,band=256k-64k,scratch=3M+8k/5M*4,weak=20M+1M@0.01"
    source = FaultySource(spec)
    current = Mapfile(RangeMap(source.size))
    writer = RawWriter(str(tmp_path / "out.img"), source.size)
    try:
        Rescue(source, writer, current, lambda m: None, RescueOptions(retries=2)).run()
    finally:
        writer.close()
    assert [(pos, length) for pos, length, state in current.rmap.areas() if state == "-"] \
        == source.bad_ranges()
    tally = source.tally
    assert tally.good_bytes_read == tally.good_bytes == current.rmap.totals()["+"]
    assert tally.failed_reads_to_all_good is not None
    assert 0 < tally.failed_reads_to_all_good <= tally.failed_reads < tally.reads
    assert tally.seconds_to_all_good is not None
    assert tally.seconds >= tally.seconds_to_all_good >= tally.failed_reads_to_all_good * 2


@pytest.mark.parametrize("seed", range(4))
def test_distinct_good_bytes_are_counted_once_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    source = FaultySource("sim:size=64k,bad=20k+2k,bad=40k+512")
    seen = bytearray(64 * KIB)
    for _ in range(300):
        offset = rng.randrange(64 * KIB)
        length = rng.randrange(1, 6 * KIB)
        try:
            got = source.read(offset, length)
        except Unreadable:
            continue
        seen[offset:offset + len(got)] = b"\1" * len(got)
        assert source.tally.good_bytes_read == sum(seen)
