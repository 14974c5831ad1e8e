"""Zstd seekable images: `zstd` itself judges the stream; the spec judges the seek table."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest
import zstandard

from rescue.errors import FormatError, UsageError
from rescue.formats.base import DamagedData
from rescue.formats.integrity import verify_image
from rescue.formats.zstseek import (
    CHECKSUM_FLAG,
    EMPTY_CHECKSUM,
    MANIFEST_TAG,
    SEEK_TABLE_MAGIC,
    SEEKABLE_MAGIC,
    ZstSeekReader,
    ZstSeekWriter,
)

FRAME = 128 * 1024
MASK64 = (1 << 64) - 1
PRIME1, PRIME2, PRIME3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
PRIME4, PRIME5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & MASK64


def _round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * PRIME2) & MASK64, 31) * PRIME1 & MASK64


def xxh64(data: bytes) -> int:
    """XXH64 with seed 0, straight from the xxHash spec: an independent judge of checksums."""
    length, pos = len(data), 0
    if length >= 32:
        lanes = [(PRIME1 + PRIME2) & MASK64, PRIME2, 0, -PRIME1 & MASK64]
        while pos + 32 <= length:
            for i, lane in enumerate(struct.unpack_from("<4Q", data, pos)):
                lanes[i] = _round(lanes[i], lane)
            pos += 32
        acc = sum(_rotl(lane, bits) for lane, bits in zip(lanes, (1, 7, 12, 18), strict=True))
        for lane in lanes:
            acc = ((acc ^ _round(0, lane)) * PRIME1 + PRIME4) & MASK64
    else:
        acc = PRIME5
    acc = (acc + length) & MASK64
    while pos + 8 <= length:
        acc ^= _round(0, struct.unpack_from("<Q", data, pos)[0])
        acc = (_rotl(acc, 27) * PRIME1 + PRIME4) & MASK64
        pos += 8
    if pos + 4 <= length:
        acc ^= struct.unpack_from("<I", data, pos)[0] * PRIME1 & MASK64
        acc = (_rotl(acc, 23) * PRIME2 + PRIME3) & MASK64
        pos += 4
    for byte in data[pos:]:
        acc ^= byte * PRIME5 & MASK64
        acc = _rotl(acc, 11) * PRIME1 & MASK64
    for shift, prime in ((33, PRIME2), (29, PRIME3)):
        acc = (acc ^ (acc >> shift)) * prime & MASK64
    return acc ^ (acc >> 32)


def mixed_content(size: int, seed: int = 7) -> bytes:
    """Random, text and zero runs, with run edges that do not line up with frames."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 8)).hex().encode() for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        run = rng.randint(FRAME // 3, 3 * FRAME)
        kind = len(out) // run % 3
        if kind == 0:
            out += rng.randbytes(run)
        elif kind == 1:
            out += b" ".join(rng.choices(words, k=run // 5))[:run]
        else:
            out += bytes(run)
    return bytes(out[:size])


def write_image(path: Path, data: bytes, *, manifest: bytes | None = None,
                threads: int = 2) -> None:
    """Write `data` in uneven chunks, passing each all-zero chunk as a hole."""
    rng = random.Random(3)
    with ZstSeekWriter(str(path), len(data), frame_size=FRAME, threads=threads) as writer:
        offset = 0
        while offset < len(data):
            chunk = data[offset:offset + rng.randint(1, 3 * FRAME)]
            if chunk.count(0) == len(chunk):
                writer.write_zeros(len(chunk))
            else:
                writer.write(offset, chunk)
            offset += len(chunk)
        if manifest is not None:
            writer.set_manifest(manifest)


@pytest.fixture(scope="module")
def data() -> bytes:
    return mixed_content(24 * FRAME + 12345)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> Path:
    path = tmp_path_factory.mktemp("zstseek") / "disk.img.zst"
    write_image(path, data, manifest=b'{"source": "/dev/sdz"}')
    return path


def damaged_copy(image: Path, tmp_path: Path, offset: int, replacement: bytes) -> Path:
    copy = tmp_path / "copy.img.zst"
    shutil.copyfile(image, copy)
    with open(copy, "r+b") as file:
        file.seek(offset if offset >= 0 else copy.stat().st_size + offset)
        file.write(replacement)
    return copy


def open_error(path: Path) -> str:
    with pytest.raises(FormatError) as caught:
        ZstSeekReader(str(path))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_zstd_tool_decompresses_to_the_raw_image(image: Path, data: bytes) -> None:
    subprocess.run(["zstd", "-t", "-q", str(image)], check=True)
    result = subprocess.run(["zstd", "-d", "-c", str(image)], check=True, capture_output=True)
    assert result.stdout == data


def test_random_reads_match_the_raw_image(image: Path, data: bytes) -> None:
    rng = random.Random(11)
    with ZstSeekReader(str(image)) as reader:
        assert reader.size == len(data)
        for _ in range(300):
            offset = rng.randrange(len(data))
            length = rng.choice((1, 512, 4096, FRAME, 3 * FRAME + 17))
            assert reader.read(offset, length) == data[offset:offset + length]
        assert reader.read(0, len(data)) == data
        assert reader.read(len(data) - 10, 100) == data[-10:]
        assert reader.read(len(data), 10) == b""
        with pytest.raises(UsageError):
            reader.read(-1, 10)


def test_one_reader_serves_many_threads(image: Path, data: bytes) -> None:
    def read_many(seed: int) -> bool:
        rng = random.Random(seed)
        for _ in range(100):
            offset, length = rng.randrange(len(data)), rng.randint(1, 2 * FRAME)
            if reader.read(offset, length) != data[offset:offset + length]:
                return False
        return True

    with ZstSeekReader(str(image)) as reader, ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read_many, range(8)))


def test_seek_table_follows_the_spec(image: Path, data: bytes) -> None:
    """Parse the table by hand: frame offsets are sums of sizes, checksums are XXH64 low bits."""
    raw = image.read_bytes()
    count, descriptor, magic = struct.unpack("<IBI", raw[-9:])
    assert magic == SEEKABLE_MAGIC and descriptor == CHECKSUM_FLAG
    table_size = 8 + 12 * count + 9
    assert struct.unpack_from("<II", raw, len(raw) - table_size) == (SEEK_TABLE_MAGIC,
                                                                     table_size - 8)
    entries = list(struct.iter_unpack("<III", raw[-table_size + 8:-9]))
    assert (xxh64(b""), xxh64(b"a")) == (0xEF46DB3751D8E999, 0xD24EC4F1A98C6E5B)  # spec vectors
    assert xxh64(b"") & 0xFFFFFFFF == EMPTY_CHECKSUM
    compressed_offset = offset = 0
    for compressed_size, length, checksum in entries:
        frame = raw[compressed_offset:compressed_offset + compressed_size]
        if length:
            content = zstandard.ZstdDecompressor().decompress(frame)
            assert content == data[offset:offset + length]
        else:
            assert 0x184D2A50 <= struct.unpack_from("<I", frame)[0] <= 0x184D2A5F
            content = b""
        assert checksum == xxh64(content) & 0xFFFFFFFF
        compressed_offset += compressed_size
        offset += length
    assert (compressed_offset, offset) == (len(raw) - table_size, len(data))


@pytest.mark.parametrize("threads", [1, 3])
def test_output_does_not_depend_on_threads(image: Path, data: bytes, tmp_path: Path,
                                           threads: int) -> None:
    """Frames come back from the pool out of order but must land in order."""
    path = tmp_path / "threads.img.zst"
    write_image(path, data, manifest=b'{"source": "/dev/sdz"}', threads=threads)
    assert path.read_bytes() == image.read_bytes()


def test_frames_cover_the_image(image: Path, data: bytes) -> None:
    with ZstSeekReader(str(image)) as reader:
        frames = reader.frames
    assert frames[0].offset == 0
    assert all(a.offset + a.length == b.offset for a, b in pairwise(frames))
    assert frames[-1].offset + frames[-1].length == len(data)
    assert max(frame.length for frame in frames) == FRAME
    assert all(
        a.compressed_offset + a.compressed_size == b.compressed_offset
        for a, b in pairwise(frames)
    )


def test_manifest_round_trip_and_invisible_to_zstd(image: Path, data: bytes,
                                                   tmp_path: Path) -> None:
    with ZstSeekReader(str(image)) as reader:
        assert reader.manifest() == b'{"source": "/dev/sdz"}'
    plain = tmp_path / "plain.img.zst"
    write_image(plain, data)
    with ZstSeekReader(str(plain)) as reader:
        assert reader.manifest() is None
    result = subprocess.run(["zstd", "-d", "-c", str(image)], check=True, capture_output=True)
    assert b"/dev/sdz" not in result.stdout


def test_a_damaged_manifest_frame_is_reported_not_absent(image: Path, tmp_path: Path) -> None:
    """Without its manifest an image loses its BLAKE3 check: that must show."""
    offset = image.read_bytes().index(MANIFEST_TAG) - 8  # the manifest's skippable frame
    for where in (offset, offset + 8):  # the frame's magic, then its tag
        copy = damaged_copy(image, tmp_path, where, b"\x5f")
        with ZstSeekReader(str(copy)) as reader:
            with pytest.raises(FormatError, match="manifest frame is damaged"):
                reader.manifest()
            assert any("manifest" in p for p in verify_image(str(copy), reader).problems)


def test_extents_report_zero_frames_as_holes(image: Path, data: bytes) -> None:
    with ZstSeekReader(str(image)) as reader:
        extents = list(reader.extents())
        frames = reader.frames
    assert extents[0][0] == 0 and sum(length for _, length, _ in extents) == len(data)
    assert all(a[0] + a[1] == b[0] and a[2] != b[2]
               for a, b in pairwise(extents))
    holes = [(offset, length) for offset, length, allocated in extents if not allocated]
    zero_frames = [f for f in frames if data[f.offset:f.offset + f.length].count(0) == f.length]
    assert holes and sum(length for _, length in holes) == sum(f.length for f in zero_frames)
    for offset, length in holes:
        assert data[offset:offset + length].count(0) == length


def test_verify_names_the_damaged_range(image: Path, data: bytes, tmp_path: Path) -> None:
    with ZstSeekReader(str(image)) as reader:
        assert verify_image(reader.path, reader).damaged == []
        victim = max(reader.frames[5:], key=lambda frame: frame.compressed_size)
    copy = damaged_copy(image, tmp_path, victim.compressed_offset + victim.compressed_size // 2,
                        b"\xff\x00\xaa")
    with ZstSeekReader(str(copy)) as reader:
        assert verify_image(reader.path, reader).damaged == [(victim.offset, victim.length)]
        with pytest.raises(DamagedData, match=f"image bytes {victim.offset}-"):
            reader.read(victim.offset + 10, 1)
        assert reader.read(0, victim.offset) == data[:victim.offset]


def test_wrong_table_checksum_is_damage(image: Path, tmp_path: Path) -> None:
    with ZstSeekReader(str(image)) as reader:
        frame_count = len(reader.frames)
        victim = reader.frames[2]
    table_entries = -9 - 12 * (frame_count + 2)  # data frames plus header and manifest frames
    checksum_field = table_entries + 12 * 3 + 8  # entry 3: the header frame comes first
    copy = damaged_copy(image, tmp_path, checksum_field, b"\x00\x00\x00\x00")
    with ZstSeekReader(str(copy)) as reader:
        assert verify_image(reader.path, reader).damaged == [(victim.offset, victim.length)]
        with pytest.raises(DamagedData, match="checksum"):
            reader.read(victim.offset, 1)


def spec_file(path: Path, contents: list[bytes], *, checksums: bool) -> None:
    """A seekable file built from the spec alone: frames without checksum or content size."""
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=False,
                                          write_content_size=False)
    frames = [compressor.compress(content) for content in contents]
    entry = "<III" if checksums else "<II"
    table = b"".join(
        struct.pack(entry, len(frame), len(content), xxh64(content) & 0xFFFFFFFF)
        if checksums else struct.pack(entry, len(frame), len(content))
        for frame, content in zip(frames, contents, strict=True)
    )
    table += struct.pack("<IBI", len(frames), CHECKSUM_FLAG if checksums else 0, SEEKABLE_MAGIC)
    path.write_bytes(b"".join(frames) + struct.pack("<II", SEEK_TABLE_MAGIC, len(table)) + table)


@pytest.mark.parametrize("checksums", [True, False])
def test_reads_seekable_files_from_other_writers(tmp_path: Path, checksums: bool) -> None:
    contents = [mixed_content(size, seed) for seed, size in enumerate((5000, 70000, 33, 4096))]
    path = tmp_path / "foreign.zst"
    spec_file(path, contents, checksums=checksums)
    whole = b"".join(contents)
    with ZstSeekReader(str(path)) as reader:
        assert reader.size == len(whole)
        assert reader.read(4000, 72000) == whole[4000:76000]
        assert verify_image(reader.path, reader).damaged == []
        assert reader.manifest() is None
    if checksums:
        last_checksum = -9 - 4
        copy = damaged_copy(path, tmp_path, last_checksum, struct.pack("<I", xxh64(b"x") >> 32))
        with ZstSeekReader(str(copy)) as reader:
            assert verify_image(reader.path, reader).damaged == [(len(whole) - 4096, 4096)]


def test_independent_implementation_agrees(image: Path, data: bytes, tmp_path: Path) -> None:
    """pyzstd's SeekableZstdFile reads our images, and we read the ones it writes."""
    pyzstd = pytest.importorskip("pyzstd")
    rng = random.Random(5)
    with pyzstd.SeekableZstdFile(str(image), "r") as theirs:
        for _ in range(50):
            offset, length = rng.randrange(len(data)), rng.randint(1, 3 * FRAME)
            theirs.seek(offset)
            assert theirs.read(length) == data[offset:offset + length]
    path = tmp_path / "pyzstd.zst"
    with pyzstd.SeekableZstdFile(str(path), "w", max_frame_content_size=100000) as theirs:
        theirs.write(data)
    with ZstSeekReader(str(path)) as reader:
        assert reader.read(0, len(data)) == data
        assert verify_image(reader.path, reader).damaged == []


def test_sync_makes_written_frames_readable_by_zstd(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "synced.img.zst"
    snapshot = tmp_path / "snapshot.img.zst"
    half = 5 * FRAME + 777
    with ZstSeekWriter(str(path), len(data), frame_size=FRAME) as writer:
        writer.write(0, data[:half])
        writer.sync()
        shutil.copyfile(path, snapshot)
        writer.write(half, data[half:])
    decompressed = subprocess.run(["zstd", "-d", "-c", str(snapshot)], check=True,
                                  capture_output=True).stdout
    assert decompressed == data[:half]
    assert "unfinished" in open_error(snapshot)
    with ZstSeekReader(str(path)) as reader:
        assert reader.read(0, len(data)) == data
        assert reader.frames[5].length == 777


def test_close_pads_the_tail_with_zeros(tmp_path: Path) -> None:
    path = tmp_path / "short.img.zst"
    with ZstSeekWriter(str(path), 3 * FRAME + 5, frame_size=FRAME, threads=1) as writer:
        writer.write(0, b"head")
    with ZstSeekReader(str(path)) as reader:
        assert reader.read(0, reader.size) == b"head" + bytes(3 * FRAME + 1)
        assert list(reader.extents()) == [(0, FRAME, True), (FRAME, 2 * FRAME + 5, False)]


def test_empty_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.img.zst"
    ZstSeekWriter(str(path), 0).close()
    with ZstSeekReader(str(path)) as reader:
        assert (reader.size, reader.read(0, 10), list(reader.extents())) == (0, b"", [])


def test_writes_must_arrive_in_order(tmp_path: Path) -> None:
    writer = ZstSeekWriter(str(tmp_path / "order.img.zst"), 100, frame_size=FRAME)
    writer.write(0, b"x" * 10)
    with pytest.raises(UsageError, match="expected offset 10, got 20"):
        writer.write(20, b"y")
    with pytest.raises(UsageError, match="past the end"):
        writer.write(10, bytes(91))
    with pytest.raises(UsageError, match="past the end"):
        writer.write_zeros(91)
    writer.close()
    with pytest.raises(UsageError, match="closed"):
        writer.write(100, b"")


def test_writer_that_dies_leaves_an_unfinished_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "died.img.zst"
    with pytest.raises(RuntimeError), ZstSeekWriter(str(path), len(data),
                                                    frame_size=FRAME) as writer:
        writer.write(0, data[:4 * FRAME])
        raise RuntimeError("source vanished")
    assert "unfinished" in open_error(path)


def test_not_zstd(tmp_path: Path) -> None:
    for name, content in (("empty", b""), ("text", b"hello, this is not an image\n" * 9)):
        path = tmp_path / name
        path.write_bytes(content)
        assert "not a zstd file" in open_error(path)
    assert "cannot read" in open_error(tmp_path)
    assert "cannot open" in open_error(tmp_path / "missing.img.zst")


def test_plain_zstd_file_suggests_converting(tmp_path: Path, data: bytes) -> None:
    raw = tmp_path / "disk.img"
    raw.write_bytes(data[:100000])
    subprocess.run(["zstd", "-q", str(raw), "-o", str(tmp_path / "disk.img.zst")], check=True)
    message = open_error(tmp_path / "disk.img.zst")
    assert "plain zstd file" in message and "convert" in message


def test_truncated_file(image: Path, tmp_path: Path) -> None:
    for cut in (1, 9, 400, image.stat().st_size // 2):
        copy = tmp_path / f"cut{cut}.img.zst"
        copy.write_bytes(image.read_bytes()[:-cut])
        assert "unfinished or truncated" in open_error(copy)


def test_seek_table_inconsistent_with_file_size(image: Path, tmp_path: Path) -> None:
    raw = image.read_bytes()
    grown = tmp_path / "grown.img.zst"
    grown.write_bytes(raw[:100] + b"junk" + raw[100:])
    assert "does not match the file size" in open_error(grown)
    count = struct.unpack_from("<I", raw, len(raw) - 9)[0]
    huge = damaged_copy(image, tmp_path, -9, struct.pack("<I", count + 10**6))
    assert "more than" in open_error(huge)
    off_by_one = damaged_copy(image, tmp_path, -9, struct.pack("<I", count - 1))
    assert "frame header is damaged" in open_error(off_by_one)
    reserved = damaged_copy(image, tmp_path, -5, b"\x84")
    assert "reserved bits" in open_error(reserved)
