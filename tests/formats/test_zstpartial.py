"""An unfinished .img.zst, cut anywhere as a kill leaves it: its complete frames are found and
kept, and the writer continues after them into a file `zstd -d` restores whole."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from rescue.errors import FormatError
from rescue.formats.zstpartial import UnfinishedReader, kept_frames
from rescue.formats.zstseek import ZstSeekReader, ZstSeekWriter

FRAME = 64 * 1024


def image_bytes(size: int, seed: int) -> bytes:
    """Random, zero and repeated runs: frames of very different compressed sizes."""
    rng = random.Random(seed)
    parts = []
    while sum(map(len, parts)) < size:
        kind = rng.randrange(3)
        length = rng.randrange(1, 3 * FRAME)
        parts.append(rng.randbytes(length) if kind == 0 else
                     bytes(length) if kind == 1 else bytes([rng.randrange(256)]) * length)
    return b"".join(parts)[:size]


def unfinished(path: Path, data: bytes, syncs: list[int]) -> None:
    """Write `data` with a sync at each of `syncs` (a short frame ends there) and stop without
    a seek table, as a killed writer does."""
    writer = ZstSeekWriter(str(path), len(data), frame_size=FRAME, threads=2)
    position = 0
    for stop in [*syncs, len(data)]:
        writer.write(position, data[position:stop])
        writer.sync()
        position = stop
    writer.abandon()


def frame_ends(path: Path) -> list[tuple[int, int]]:
    """(file offset, image bytes) after each frame, from the frames that walk finds in the
    whole file."""
    with open(path, "rb") as f:
        entries = kept_frames(f.fileno())
    ends, offset, position = [], 0, 0
    for compressed, length, _ in entries:
        offset, position = offset + compressed, position + length
        ends.append((offset, position))
    return ends


def test_every_cut_keeps_exactly_the_complete_frames_and_continues(tmp_path: Path) -> None:
    data = image_bytes(6 * FRAME + 777, seed=1)
    whole = tmp_path / "whole.img.zst"
    unfinished(whole, data, syncs=[FRAME // 3, 2 * FRAME + 5])
    raw = whole.read_bytes()
    ends = frame_ends(whole)
    assert ends[-1] == (len(raw), len(data))
    rng = random.Random(2)
    cuts = {0, 1, 19, 20, 21, len(raw) - 1, len(raw)} | {end for end, _ in ends}
    cuts |= {end + d for end, _ in ends for d in (-4, -1, 1, 3, 17)} | {
        rng.randrange(len(raw)) for _ in range(40)}
    for cut in sorted(c for c in cuts if 0 <= c <= len(raw)):
        path = tmp_path / "cut.img.zst"
        path.write_bytes(raw[:cut])
        with open(path, "rb") as f:
            kept = kept_frames(f.fileno())
        expected = [(end, position) for end, position in ends if end <= cut]
        assert sum(c for c, _, _ in kept) == (expected[-1][0] if expected else 0), cut
        kept_bytes = expected[-1][1] if expected else 0
        writer = ZstSeekWriter(str(path), len(data), frame_size=FRAME, kept=kept)
        assert writer.position == kept_bytes
        writer.write(kept_bytes, data[kept_bytes:])
        writer.close()
        done = subprocess.run(["zstd", "-d", "-q", "-c", str(path)], capture_output=True)
        assert done.returncode == 0 and done.stdout == data, cut
        with ZstSeekReader(str(path)) as reader:
            assert reader.read(0, len(data)) == data


def test_a_limit_keeps_the_frames_that_end_before_it(tmp_path: Path) -> None:
    data = image_bytes(4 * FRAME, seed=3)
    path = tmp_path / "limit.img.zst"
    unfinished(path, data, syncs=[FRAME + 100])
    positions = [position for _, position in frame_ends(path)]
    for limit in (0, 1, FRAME, FRAME + 99, FRAME + 100, FRAME + 101, 4 * FRAME):
        with open(path, "rb") as f:
            kept = kept_frames(f.fileno(), limit)
        assert sum(length for _, length, _ in kept) == max(p for p in positions if p <= limit)


def test_the_unfinished_reader_reads_the_complete_frames(tmp_path: Path) -> None:
    data = image_bytes(3 * FRAME + 10, seed=4)
    path = tmp_path / "read.img.zst"
    unfinished(path, data, syncs=[])
    size = os.path.getsize(path)
    os.truncate(path, size - 5)  # the last frame torn
    with UnfinishedReader(str(path)) as reader:
        assert reader.size == 3 * FRAME
        assert reader.read(0, reader.size) == data[:3 * FRAME]


@pytest.mark.parametrize("content", [b"garbage!" * 8, b"\x28\xb5\x2f\xfd" + bytes(60)],
                         ids=["garbage", "plain-zstd-magic"])
def test_a_file_not_ours_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.img.zst"
    path.write_bytes(content)
    with open(path, "rb") as f, pytest.raises(FormatError, match="not an unfinished"):
        kept_frames(f.fileno())
