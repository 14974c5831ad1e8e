"""The simulated disk's bytes: one truth however they are asked for, every sector unlike every
other (so misplaced data is caught), and cheap enough for a terabyte model."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from rescue.sim.content import CHUNK, ContentView, kind
from rescue.sim.faulty import SECTOR, FaultySource, content

MIB = 1 << 20


@pytest.mark.parametrize("seed", [0, 3])
def test_any_cut_of_the_content_reads_the_same_bytes(seed: int) -> None:
    whole = content(0, 6 * MIB, seed)
    rng = random.Random(seed)
    cuts = sorted({0, 6 * MIB, *(rng.randrange(6 * MIB) for _ in range(40)),
                   *(k * CHUNK for k in range(7))})
    assert b"".join(content(a, b - a, seed) for a, b in itertools.pairwise(cuts)) \
        == whole


def test_reads_of_the_source_are_the_content_wherever_they_fall() -> None:
    size = 5 * MIB + 3 * SECTOR + 100  # a last chunk and a last sector cut short
    source = FaultySource(f"sim:size={size},seed=5")
    truth = content(0, size, 5)
    rng = random.Random(1)
    reads = [(0, size), (size - 700, 700), (CHUNK - 100, 300), (2 * CHUNK, CHUNK),
             *((rng.randrange(size), rng.randrange(1, 3 * MIB)) for _ in range(200))]
    for offset, length in reads:
        got = source.read(offset, length)
        assert bytes(got) == truth[offset:offset + length], f"read at {offset:#x}"


def test_every_sector_differs_from_every_other_but_zeros() -> None:
    """A sector written at any other place than its own never compares equal."""
    data = content(0, 96 * MIB, 2)
    zero = bytes(SECTOR)
    digests = [hashlib.blake2b(data[pos:pos + SECTOR], digest_size=12).digest()
               for pos in range(0, len(data), SECTOR) if data[pos:pos + SECTOR] != zero]
    assert {kind(index, 2) for index in range(96)} == {"random", "text", "zeros", "pattern"}
    assert len(digests) > 60 * MIB // SECTOR
    assert len(set(digests)) == len(digests)


def test_reading_a_thousand_chunks_builds_no_new_megabyte() -> None:
    """The hot path hands out views of one stamped copy of the period, also for reads across a
    chunk's end: the work per read is the stamps, not a megabyte of new bytes."""
    view = ContentView(seed=4)
    buffers = set()
    for number, index in enumerate(range(0, 1000 * 4093, 4093)):
        offset = index * CHUNK + number % 3 * 4096 * 37  # aligned, or across the next chunk
        got = view.read(offset, CHUNK)
        buffers.add(id(got.obj))
        if number % 50 == 0:
            assert got == content(offset, CHUNK, 4)
    assert len(buffers) == 1
    assert view.read(0, 0) == b""
    assert bytes(view.read(77 * CHUNK + 1000, 5000)) == content(77 * CHUNK + 1000, 5000, 4)
