"""The image fingerprint: equal to what standard tools compute, however the bytes arrive."""

import hashlib
import random

import pytest

from rescue.engine.digest import DigestingWriter
from rescue.formats.fingerprint import (
    CHUNK,
    Fingerprint,
    PlainSha256,
    chunk_digests,
    hash_image,
    zero_chunk_digests,
)
from rescue.formats.raw import RawReader, RawWriter
from tests.fixtures.cli import coreutils_fingerprint


def pieces(rng: random.Random, size: int) -> list[tuple[int, bool]]:
    """(length, is_hole) pieces of odd sizes, some far larger than a chunk."""
    result, done = [], 0
    while done < size:
        length = min(size - done, rng.choice([1, 511, 4096, CHUNK - 3, CHUNK, 3 * CHUNK + 17]))
        result.append((length, rng.random() < 0.4))
        done += length
    return result


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pieces_and_holes_give_the_coreutils_fingerprint(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(5 * CHUNK, 9 * CHUNK)
    fingerprint, expected = Fingerprint(), bytearray()
    for length, hole in pieces(rng, size):
        if hole:
            fingerprint.zeros(length)
            expected += bytes(length)
        else:
            data = rng.randbytes(length)  # bytes are hashed in place, views copied first
            fingerprint.update(data if rng.random() < 0.5 else memoryview(data))
            expected += data
    assert fingerprint.hexdigest() == coreutils_fingerprint(bytes(expected))
    assert fingerprint.hexdigest() == fingerprint.hexdigest()  # reading it changes nothing


def test_an_empty_image_and_a_short_tail() -> None:
    assert Fingerprint().hexdigest() == hashlib.sha256(b"").hexdigest()
    tail = Fingerprint()
    tail.zeros(CHUNK + 5)
    assert tail.hexdigest() == coreutils_fingerprint(bytes(CHUNK + 5))


def test_in_order_writes_are_fingerprinted_as_they_come(tmp_path):
    size = 3 * CHUNK + 12345
    rng = random.Random(5)
    writer = DigestingWriter(RawWriter(str(tmp_path / "a.img"), size))
    expected = bytearray(size)
    for offset in range(0, size, 96 * 1024):  # 64 KiB of data, then a 32 KiB hole
        data = rng.randbytes(min(64 * 1024, size - offset))
        writer.write(offset, memoryview(data))
        expected[offset:offset + len(data)] = data
    streamed = writer.fingerprint()
    writer.close()
    assert streamed == coreutils_fingerprint(bytes(expected))
    with RawReader(str(tmp_path / "a.img")) as reader:
        assert hash_image(reader) == streamed
        assert hash_image(reader, PlainSha256()) == hashlib.sha256(expected).hexdigest()


def test_an_out_of_order_write_gives_no_streamed_fingerprint(tmp_path):
    writer = DigestingWriter(RawWriter(str(tmp_path / "b.img"), 1 << 20))
    writer.write(512 * 1024, b"x" * 4096)
    writer.write(0, b"y" * 4096)  # a later pass filling a gap
    assert writer.fingerprint() is None
    writer.close()
    with open(tmp_path / "b.img", "rb") as f:
        assert f.read(4096) == b"y" * 4096


@pytest.mark.parametrize("seed", [4, 5])
def test_chunk_digests_hashed_elsewhere_give_the_coreutils_fingerprint(seed: int) -> None:
    """Restore hashes each 4 MiB piece once for its read-back and feeds the same digests to
    the fingerprint; zero pieces cost no hashing. The last piece may be short."""
    rng = random.Random(seed)
    piece = 4 * CHUNK
    sizes = [piece] * rng.randrange(1, 4) + [rng.randrange(1, piece)]
    fingerprint, expected = Fingerprint(), bytearray()
    for size in sizes:
        if rng.random() < 0.4:
            fingerprint.add_chunk_digests(zero_chunk_digests(size))
            expected += bytes(size)
        else:
            data = rng.randbytes(size)
            fingerprint.add_chunk_digests(chunk_digests(data))
            expected += data
    assert fingerprint.hexdigest() == coreutils_fingerprint(bytes(expected))
