"""--threads: however many threads compress or decode, the image and the restored disk hold the
same bytes; the source is a real loop device, qemu-img the judge of the images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rescue.sim.content import CHUNK, content, kind
from tests.fixtures.cli import rescue
from tests.fixtures.loop import loop_device

pytestmark = [pytest.mark.slow, pytest.mark.root]

# not a whole number of qcow2 clusters: the last one is written in pieces
SIZE = 48 * CHUNK + 24 * 1024
SEED = 5


def tool(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stdout} {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("threads") / "disk.raw"
    path.write_bytes(content(0, SIZE, SEED))
    return path


def image(device: str, dest: Path, threads: int) -> None:
    done = rescue("image", device, str(dest), "--threads", str(threads))
    assert done.returncode == 0, done.stderr


def assert_identical(first: Path | str, second: Path | str, *formats: str) -> None:
    options = [arg for flag, fmt in zip(("-f", "-F"), formats, strict=True)
               for arg in (flag, fmt)]
    assert "identical" in tool("qemu-img", "compare", *options, str(first), str(second))


def test_one_thread_and_many_make_the_same_qcow2(disk: Path, tmp_path: Path) -> None:
    one, many = tmp_path / "one.qcow2", tmp_path / "many.qcow2"
    with loop_device(str(disk), read_only=True) as device:
        image(device, one, 1)
        image(device, many, 5)
    for made in (one, many):
        tool("qemu-img", "check", str(made))
        assert_identical(disk, made, "raw", "qcow2")
    assert_identical(one, many, "qcow2", "qcow2")
    # the same clusters compressed alike: only where they were packed may differ
    assert abs(one.stat().st_size - many.stat().st_size) <= 64 * 1024


def test_one_thread_and_many_convert_and_restore_alike(disk: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.qcow2"
    with loop_device(str(disk), read_only=True) as device:
        image(device, source, 2)
    zst_one, zst_many = tmp_path / "one.img.zst", tmp_path / "many.img.zst"
    for dest, threads in ((zst_one, "1"), (zst_many, "3")):
        done = rescue("convert", str(source), str(dest), "--threads", threads)
        assert done.returncode == 0, done.stderr
    raw_one, raw_many = tmp_path / "one.raw", tmp_path / "many.raw"
    tool("zstd", "-q", "-d", str(zst_one), "-o", str(raw_one))
    tool("zstd", "-q", "-d", str(zst_many), "-o", str(raw_many))
    assert raw_one.read_bytes() == raw_many.read_bytes() == disk.read_bytes()

    for threads in ("1", "3"):
        target = tmp_path / f"target{threads}"
        target.write_bytes(os.urandom(SIZE))  # old data that must not survive
        with loop_device(str(target)) as device:
            done = rescue("restore", str(source), device, "--yes", "--threads", threads,
                          "--map-dir", str(tmp_path / "maps"))
            assert done.returncode == 0, done.stderr
            assert_identical(source, device, "qcow2", "raw")


def test_a_raw_image_keeps_the_zeros_of_a_read_with_data_as_holes(disk: Path,
                                                                  tmp_path: Path) -> None:
    """Reads grow and are not aligned to the disk's zero megabytes: those stay holes all the
    same, and the image reads back as the device."""
    out = tmp_path / "out.img"
    with loop_device(str(disk), read_only=True) as device:
        done = rescue("image", device, str(out))
        assert done.returncode == 0, done.stderr
    assert out.read_bytes() == disk.read_bytes()
    zero_chunks = [i for i in range(SIZE // CHUNK) if kind(i, SEED) == "zeros"]
    assert zero_chunks
    with out.open("rb") as f:
        for index in zero_chunks:
            start = index * CHUNK
            hole = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            assert hole <= start + 64 * 1024, f"chunk {index} is not a hole"
    assert out.stat().st_blocks * 512 <= SIZE - (len(zero_chunks) - 1) * CHUNK
