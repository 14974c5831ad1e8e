"""The image digests: equal to what standard tools compute, however the bytes arrive.

New images record BLAKE3 (judged by `b3sum`); the older chunk fingerprint and plain SHA-256
are kept to verify older manifests (judged by coreutils)."""

import hashlib
import random
import threading
from collections.abc import Callable

import pytest

from rescue.engine.digest import DigestingWriter
from rescue.formats.base import ImageHasher
from rescue.formats.fingerprint import (
    CHUNK,
    ZERO_PIECE,
    BackgroundHasher,
    Blake3,
    Fingerprint,
    PlainSha256,
    chunk_digest,
    hash_image,
    zero_chunk_digest,
)
from rescue.formats.raw import RawReader, RawWriter
from tests.fixtures.cli import b3sum, coreutils_fingerprint

# each hasher with the standard tool that judges it
KINDS: dict[str, tuple[Callable[[], ImageHasher], Callable[[bytes], str]]] = {
    "blake3": (Blake3, b3sum),
    "fingerprint": (Fingerprint, coreutils_fingerprint),
    "sha256": (PlainSha256, lambda data: hashlib.sha256(data).hexdigest()),
}


def pieces(rng: random.Random, size: int) -> list[tuple[int, bool]]:
    """(length, is_hole) pieces of odd sizes, some far larger than a chunk."""
    result, done = [], 0
    while done < size:
        length = min(size - done, rng.choice([1, 511, 4096, CHUNK - 3, CHUNK, 3 * CHUNK + 17]))
        result.append((length, rng.random() < 0.4))
        done += length
    return result


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pieces_and_holes_give_what_the_standard_tool_computes(kind: str, seed: int) -> None:
    """Fed through the background thread; bytes hashed in place, views copied first, so the
    caller's buffer is overwritten at once after each update and must not matter."""
    make, judge = KINDS[kind]
    rng = random.Random(seed)
    size = rng.randrange(5 * CHUNK, 9 * CHUNK)
    hasher, expected = BackgroundHasher(make()), bytearray()
    reused = bytearray(3 * CHUNK + 17)
    for length, hole in pieces(rng, size):
        if hole:
            hasher.zeros(length)
            expected += bytes(length)
            continue
        data = rng.randbytes(length)
        expected += data
        if rng.random() < 0.5:
            hasher.update(data)
        else:
            reused[:length] = data
            hasher.update(memoryview(reused)[:length])
            reused[:length] = bytes(length)  # the caller reuses its buffer at once
    assert hasher.hexdigest() == judge(bytes(expected))


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_image_a_short_tail_and_a_hole_past_the_zero_buffer(kind: str) -> None:
    make, judge = KINDS[kind]
    assert make().hexdigest() == judge(b"")
    tail = make()
    tail.zeros(CHUNK + 5)
    assert tail.hexdigest() == judge(bytes(CHUNK + 5))
    hole = make()
    hole.update(b"x")
    hole.zeros(ZERO_PIECE + CHUNK + 1)  # more than one piece of the zero buffer
    assert hole.hexdigest() == judge(b"x" + bytes(ZERO_PIECE + CHUNK + 1))


def test_in_order_writes_are_hashed_as_they_come(tmp_path):
    size = 3 * CHUNK + 12345
    rng = random.Random(5)
    writer = DigestingWriter(RawWriter(str(tmp_path / "a.img"), size))
    expected = bytearray(size)
    buffer = bytearray(64 * 1024)
    for offset in range(0, size, 96 * 1024):  # 64 KiB of data, then a 32 KiB hole
        data = rng.randbytes(min(64 * 1024, size - offset))
        buffer[:len(data)] = data  # one buffer reused for every read, as a source does
        writer.write(offset, memoryview(buffer)[:len(data)])
        expected[offset:offset + len(data)] = data
    streamed = writer.fingerprint()
    writer.close()
    assert streamed == b3sum(bytes(expected))
    with RawReader(str(tmp_path / "a.img")) as reader:
        assert hash_image(reader) == streamed
        assert hash_image(reader, PlainSha256()) == hashlib.sha256(expected).hexdigest()
        assert hash_image(reader, Fingerprint()) == coreutils_fingerprint(bytes(expected))


def test_an_out_of_order_write_gives_no_streamed_digest(tmp_path):
    writer = DigestingWriter(RawWriter(str(tmp_path / "b.img"), 1 << 20))
    writer.write(512 * 1024, b"x" * 4096)
    writer.write(0, b"y" * 4096)  # a later pass filling a gap
    assert writer.fingerprint() is None
    writer.close()
    with open(tmp_path / "b.img", "rb") as f:
        assert f.read(4096) == b"y" * 4096
    assert not [t for t in threading.enumerate() if t.name == "image-hash"]


def test_held_bytes_are_released_once_hashed_even_when_dropped() -> None:
    """Restore hands its shared chunk buffers over with a release: each one comes back
    exactly once, hashed or dropped, or the buffer pool would leak or be reused too soon."""
    released: list[int] = []
    hasher = BackgroundHasher(Blake3(), depth=2)
    data = [random.Random(n).randbytes(CHUNK) for n in range(6)]
    for n, piece in enumerate(data[:3]):
        hasher.update(memoryview(piece), release=lambda n=n: released.append(n))
    assert hasher.hexdigest() == b3sum(b"".join(data[:3]))
    assert sorted(released) == [0, 1, 2]
    dropped = BackgroundHasher(Blake3(), depth=2)
    for n, piece in enumerate(data[3:], 3):
        dropped.update(memoryview(piece), release=lambda n=n: released.append(n))
    dropped.close()
    assert sorted(released) == [0, 1, 2, 3, 4, 5]
    small = BackgroundHasher(Blake3())
    small.update(memoryview(data[0])[:4096], release=lambda: released.append(6))
    assert released[-1] == 6  # a small piece is copied: the caller has its buffer back at once
    assert small.hexdigest() == b3sum(data[0][:4096])


def test_a_failing_hasher_is_reported_by_hexdigest() -> None:
    class Failing(Blake3):
        def update(self, data: bytes | memoryview, /) -> None:
            raise OSError("hash unit failed")

    hasher = BackgroundHasher(Failing())
    hasher.update(b"abc")
    hasher.zeros(10)
    with pytest.raises(OSError, match="hash unit failed"):
        hasher.hexdigest()


@pytest.mark.parametrize("size", [1, 4095, CHUNK, 4 * CHUNK, 4 * CHUNK - 512])
def test_chunk_digests_catch_any_wrong_byte(size: int) -> None:
    """Restore's read-back compares chunk digests: a hole's precomputed one is the digest of
    its zeros, and one wrong byte anywhere in a chunk changes it."""
    assert zero_chunk_digest(size) == chunk_digest(bytes(size))
    rng = random.Random(size)
    data = bytearray(rng.randbytes(size))
    good = chunk_digest(bytes(data))
    for position in {0, size - 1, *rng.sample(range(size), min(size, 20))}:
        wrong = bytearray(data)
        wrong[position] ^= 1 << rng.randrange(8)
        assert chunk_digest(bytes(wrong)) != good
