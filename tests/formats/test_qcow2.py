"""qcow2 writer and reader, judged by QEMU's own qemu-img (and qemu-io for zero clusters)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rescue.errors import FormatError, UsageError
from rescue.formats.base import DamagedData
from rescue.formats.integrity import verify_image
from rescue.formats.qcow2 import Qcow2Reader, Qcow2Writer
from tests.fixtures.pieces import mixed_content, shuffled_pieces, write_pieces

MIB = 1 << 20
CLUSTER = 65536


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def assert_check_clean(path: Path) -> None:
    """qemu-img check: exit 0 means no corruption and no leaks."""
    result = qemu_img("check", "--output=json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report


def assert_same_as_raw(image: Path, raw: Path) -> None:
    result = qemu_img("compare", "-f", "qcow2", "-F", "raw", str(image), str(raw))
    assert result.returncode == 0, result.stdout + result.stderr
    converted = image.with_suffix(".converted")
    assert qemu_img("convert", "-O", "raw", str(image), str(converted)).returncode == 0
    assert converted.read_bytes() == raw.read_bytes()


@pytest.fixture()
def mixed(tmp_path: Path) -> tuple[bytes, Path]:
    data = mixed_content(6 * MIB, seed=1)
    raw = tmp_path / "reference.raw"
    raw.write_bytes(data)
    return data, raw


@pytest.mark.parametrize("compression", ["zstd", "zlib"])
def test_random_order_writes_make_a_clean_identical_image(
        tmp_path: Path, mixed: tuple[bytes, Path], compression: str) -> None:
    data, raw = mixed
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), len(data), compression=compression) as writer:
        write_pieces(writer, data, shuffled_pieces(len(data), seed=2), sync_every=97)
    assert_check_clean(image)
    info = json.loads(qemu_img("info", "--output=json", str(image)).stdout)
    assert info["format-specific"]["data"]["compression-type"] == compression
    assert info["virtual-size"] == len(data)
    assert_same_as_raw(image, raw)
    assert os.path.getsize(image) < len(data) * 0.8  # zeros are holes, text compresses
    with Qcow2Reader(str(image)) as reader:
        assert (reader.size, reader.cluster_size, reader.compression) == (
            len(data), CLUSTER, compression)
        rng = random.Random(3)
        for _ in range(200):
            offset = rng.randrange(len(data))
            length = rng.randrange(1, 200_000)
            assert reader.read(offset, length) == data[offset:offset + length]
        assert verify_image(reader.path, reader).damaged == []


def test_extents_mark_zero_clusters_as_holes(tmp_path: Path) -> None:
    data = bytes(CLUSTER) + b"x" * CLUSTER + bytes(3 * CLUSTER) + b"y" * 512 + bytes(CLUSTER - 512)
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), len(data)) as writer:
        writer.write(0, data)
    with Qcow2Reader(str(image)) as reader:
        assert list(reader.extents()) == [
            (0, CLUSTER, False), (CLUSTER, CLUSTER, True), (2 * CLUSTER, 3 * CLUSTER, False),
            (5 * CLUSTER, CLUSTER, True)]
    mapped = json.loads(qemu_img("map", "--output=json", str(image)).stdout)
    assert [(m["start"], m["length"]) for m in mapped if m["data"]] == [
        (CLUSTER, CLUSTER), (5 * CLUSTER, CLUSTER)]


def test_overwriting_frees_old_space(tmp_path: Path) -> None:
    """Rewrites allocate anew and free the old payload: check finds no leaks, and zeros written
    over data turn the cluster back into a hole."""
    image = tmp_path / "disk.qcow2"
    rng = random.Random(4)
    with Qcow2Writer(str(image), 4 * MIB) as writer:
        for _ in range(5):
            writer.write(0, rng.randbytes(2 * MIB))
            writer.sync()
        writer.write(0, bytes(MIB))
    assert_check_clean(image)
    with Qcow2Reader(str(image)) as reader:
        assert [allocated for _, _, allocated in reader.extents()] == [False, True, False]
    assert os.path.getsize(image) < 5 * MIB  # five rewrites of 2 MiB reuse freed space


def test_partial_cluster_completed_sector_by_sector_after_reopen(
        tmp_path: Path, mixed: tuple[bytes, Path]) -> None:
    """A first pass leaves a cluster half written; a later run fills single sectors."""
    data, raw = mixed
    image = tmp_path / "disk.qcow2"
    gap = range(3 * CLUSTER + 4096, 5 * CLUSTER + 8192, 512)
    with Qcow2Writer(str(image), len(data)) as writer:
        writer.write(0, data[:gap.start])
        writer.write(gap.stop, data[gap.stop:])
    assert_check_clean(image)
    with Qcow2Writer(str(image), len(data)) as writer:
        for number, offset in enumerate(reversed(gap)):
            writer.write(offset, data[offset:offset + 512])
            if number % 7 == 0:
                writer.sync()
    assert_check_clean(image)
    assert_same_as_raw(image, raw)


def test_reopen_with_small_memory_budget_evicts_partials(tmp_path: Path) -> None:
    """More partial clusters than fit in memory: evicted ones are stored and read back later."""
    size = 64 * CLUSTER
    data = random.Random(5).randbytes(size)
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), size, cluster_size=4096) as writer:
        for half in (0, 2048):
            for offset in range(half, size, 4096):
                writer.write(offset, data[offset:offset + 2048])
    raw = tmp_path / "reference.raw"
    raw.write_bytes(data)
    assert_check_clean(image)
    assert_same_as_raw(image, raw)


def test_manifest_survives_copy_and_replacement(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    big = random.Random(6).randbytes(300_000)
    with Qcow2Writer(str(image), 2 * MIB) as writer:
        writer.write(0, b"a" * MIB)
        writer.set_manifest(big)
        writer.sync()
        writer.set_manifest(b'{"job": "small"}')
    assert_check_clean(image)
    copy = tmp_path / "copy.qcow2"
    shutil.copyfile(image, copy)
    with Qcow2Reader(str(copy)) as reader:
        assert reader.manifest() == b'{"job": "small"}'
        assert reader.read(0, MIB) == b"a" * MIB
        assert reader.read(2 * MIB - 10, 100) == bytes(10)  # the manifest is not disk data
    with Qcow2Writer(str(image), 2 * MIB) as writer:
        writer.set_manifest(big)
    assert_check_clean(image)
    with Qcow2Reader(str(image)) as reader:
        assert reader.manifest() == big


def test_larger_clusters(tmp_path: Path, mixed: tuple[bytes, Path]) -> None:
    data, raw = mixed
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), len(data), cluster_size=2 * MIB) as writer:
        write_pieces(writer, data, shuffled_pieces(len(data), seed=7), sync_every=50)
    assert_check_clean(image)
    assert_same_as_raw(image, raw)


def test_invalid_arguments(tmp_path: Path) -> None:
    path = str(tmp_path / "disk.qcow2")
    with pytest.raises(UsageError, match="power of two"):
        Qcow2Writer(path, MIB, cluster_size=3000)
    with pytest.raises(UsageError, match="zstd or zlib"):
        Qcow2Writer(path, MIB, compression="lz4")
    with pytest.raises(UsageError, match="multiple of 512"):
        Qcow2Writer(path, 1000)
    with Qcow2Writer(path, MIB) as writer, pytest.raises(UsageError, match="outside"):
        writer.write(MIB - 512, bytes(1024))
    with pytest.raises(FormatError, match="not 2097152 bytes"):
        Qcow2Writer(path, 2 * MIB)
    with Qcow2Writer(path, MIB) as writer:  # the refused open left the image continuable
        assert writer.size == MIB


@pytest.mark.parametrize("options", [
    ["-c", "-o", "compression_type=zstd"],
    ["-c", "-o", "compression_type=zlib"],
    ["-o", "compat=0.10"],
    ["-o", "compat=1.1,cluster_size=4096"],
])
def test_reads_images_made_by_qemu(tmp_path: Path, mixed: tuple[bytes, Path],
                                   options: list[str]) -> None:
    data, raw = mixed
    image = tmp_path / "qemu.qcow2"
    result = qemu_img("convert", "-O", "qcow2", *options, str(raw), str(image))
    assert result.returncode == 0, result.stderr
    with Qcow2Reader(str(image)) as reader:
        assert reader.read(0, len(data)) == data
        rng = random.Random(8)
        for _ in range(100):
            offset = rng.randrange(len(data))
            assert reader.read(offset, 7000) == data[offset:offset + 7000]
        assert verify_image(reader.path, reader).damaged == []
        assert reader.manifest() is None


def test_reads_qemu_zero_clusters_and_empty_images(tmp_path: Path) -> None:
    image = tmp_path / "qemu.qcow2"
    assert qemu_img("create", "-f", "qcow2", str(image), "4M").returncode == 0
    with Qcow2Reader(str(image)) as reader:
        assert reader.read(0, 4 * MIB) == bytes(4 * MIB)
        assert list(reader.extents()) == [(0, 4 * MIB, False)]
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 256k",
                    "-c", "write -z 64k 64k", str(image)], check=True, capture_output=True)
    with Qcow2Reader(str(image)) as reader:
        expected = b"A" * CLUSTER + bytes(CLUSTER) + b"A" * 2 * CLUSTER
        assert reader.read(0, 4 * CLUSTER) == expected
        assert list(reader.extents())[:3] == [
            (0, CLUSTER, True), (CLUSTER, CLUSTER, False), (2 * CLUSTER, 2 * CLUSTER, True)]


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture()
def small_image(tmp_path: Path) -> Path:
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), 2 * MIB) as writer:
        writer.write(0, mixed_content(2 * MIB, seed=9))
    return image


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


def assert_one_line_error(path: Path, pattern: str) -> None:
    with pytest.raises(FormatError, match=pattern) as caught:
        Qcow2Reader(str(path)).read(0, 2 * MIB)
    assert "\n" not in str(caught.value)


def test_rejects_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "not.qcow2"
    path.write_bytes(b"hello" * 100)
    assert_one_line_error(path, "wrong magic")
    with pytest.raises(FormatError, match="not an image this program wrote"):
        Qcow2Writer(str(path), 512)


def test_rejects_truncated_files(small_image: Path) -> None:
    os.truncate(small_image, 40)
    assert_one_line_error(small_image, "truncated")


@pytest.mark.parametrize("options", [[], ["-c"]])
def test_reports_truncated_data(tmp_path: Path, mixed: tuple[bytes, Path],
                                options: list[str]) -> None:
    """QEMU puts metadata first, so cutting its image in half loses data clusters only."""
    data, raw = mixed
    image = tmp_path / "qemu.qcow2"
    assert qemu_img("convert", "-O", "qcow2", *options, str(raw), str(image)).returncode == 0
    os.truncate(image, os.path.getsize(image) // 2)
    with Qcow2Reader(str(image)) as reader:
        with pytest.raises(DamagedData, match=r"truncated .*cluster at logical offset"):
            reader.read(0, len(data))
        damaged = verify_image(reader.path, reader).damaged
    assert damaged and damaged[-1][0] + damaged[-1][1] == len(data)


def random_cluster(image: Path) -> tuple[int, int]:
    """The logical and the stored offset of the first cluster of random data (a long
    payload)."""
    with Qcow2Reader(str(image)) as reader:
        return next(
            (index * CLUSTER, offset) for index in range(2 * MIB // CLUSTER)
            for offset, length in [reader._geometry.compressed_range(reader._entry(index))]
            if length > CLUSTER // 2)


def test_flipped_bytes_name_the_damaged_range(small_image: Path) -> None:
    start, offset = random_cluster(small_image)
    patch(small_image, offset + 1000, b"\xff\x00\xff\x00")
    with Qcow2Reader(str(small_image)) as reader:
        with pytest.raises(DamagedData, match=f"logical offset {start} "):
            reader.read(start + 100, 10)
        assert reader.read(0, start) == mixed_content(2 * MIB, seed=9)[:start]
        assert verify_image(reader.path, reader).damaged == [(start, CLUSTER)]


def test_reading_into_a_used_buffer_gives_what_read_checked_gives(small_image: Path) -> None:
    """The restore decodes into pooled buffers that still hold the last chunk: holes and
    damaged clusters must overwrite it with zeros, and the damage must be the same."""
    start, stored = random_cluster(small_image)
    patch(small_image, stored + 1000, b"\xff\x00\xff\x00")
    with Qcow2Reader(str(small_image)) as reader:
        for offset, length in [(0, reader.size), (start - 100, 3 * CLUSTER), (123, 4567)]:
            expected, damaged = reader.read_checked(offset, length)
            buffer = bytearray(b"\xee" * length)
            assert reader.read_checked_into(offset, memoryview(buffer)) == damaged
            assert buffer == expected
        assert damaged == [] and reader.read_checked(0, reader.size)[1] == [(start, CLUSTER)]
        assert reader.read_checked(0, reader.size)[0].count(0) > CLUSTER  # holes among them


def test_flipped_bytes_in_zlib_clusters_are_found_by_crc(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    with Qcow2Writer(str(image), MIB, compression="zlib") as writer:
        writer.write(0, random.Random(10).randbytes(MIB))  # stored deflate blocks
    with Qcow2Reader(str(image)) as reader:
        offset, _ = reader._geometry.compressed_range(reader._entry(2))
    patch(image, offset + 1000, b"\x55")
    with Qcow2Reader(str(image)) as reader:
        assert verify_image(reader.path, reader).damaged == [(2 * CLUSTER, CLUSTER)]


@pytest.mark.parametrize(("offset", "value", "pattern"), [
    (32, struct.pack(">I", 1), "encrypted"),
    (72, struct.pack(">Q", 1 << 5 | 1 << 3), "unknown qcow2 incompatible features 0x20"),
    (72, struct.pack(">Q", 1 << 2 | 1 << 3), "external data file"),
    (4, struct.pack(">I", 4), "version 4"),
])
def test_rejects_unsupported_features(small_image: Path, offset: int, value: bytes,
                                      pattern: str) -> None:
    patch(small_image, offset, value)
    assert_one_line_error(small_image, pattern)


def test_rejects_backing_files_and_data_files(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    overlay = tmp_path / "overlay.qcow2"
    assert qemu_img("create", "-f", "qcow2", str(base), "1M").returncode == 0
    assert qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(overlay)).returncode == 0
    assert_one_line_error(overlay, "backing file")
    external = tmp_path / "external.qcow2"
    assert qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
                    str(external), "1M").returncode == 0
    assert_one_line_error(external, "external data file")
    with pytest.raises(FormatError, match="not an image this program wrote"):
        Qcow2Writer(str(base), MIB)


# --- crash safety -----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import random, sys
    sys.path.insert(0, {root!r})
    from tests.fixtures.pieces import mixed_content, shuffled_pieces, write_pieces
    from rescue.formats.qcow2 import Qcow2Writer
    data = mixed_content({size}, seed=11)
    writer = Qcow2Writer({path!r}, {size}, cluster_size=4096)
    print("writing", flush=True)
    write_pieces(writer, data, shuffled_pieces({size}, seed=12), sync_every=40)
    writer.set_manifest(b"done")
    writer.close()
""")


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume(tmp_path: Path) -> None:
    """SIGKILL mid-write, several times at different moments: every interrupted image passes
    qemu-img check, and resuming with the same writes gives the uninterrupted result."""
    size = 16 * MIB
    data = mixed_content(size, seed=11)
    raw = tmp_path / "reference.raw"
    raw.write_bytes(data)
    image = tmp_path / "disk.qcow2"
    script = tmp_path / "child.py"
    root = str(Path(__file__).resolve().parents[2])
    script.write_text(CHILD.format(root=root, size=size, path=str(image)))

    def start_writing() -> tuple[subprocess.Popen[str], float]:
        """A child that has begun writing (start-up time is not write time), and when."""
        child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        return child, time.monotonic()

    child, began = start_writing()
    assert child.wait() == 0
    write_time = time.monotonic() - began
    image.unlink()
    rng = random.Random(13)
    interrupted = 0
    for attempt in range(8):
        child, _ = start_writing()
        time.sleep(rng.uniform(0.05, 0.8) * write_time)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if image.exists():
            assert_check_clean(image)
            with Qcow2Reader(str(image)) as reader:
                interrupted += reader.manifest() != b"done"
        if attempt % 2:  # sometimes let an interrupted image be interrupted again
            continue
        subprocess.run([sys.executable, str(script)], check=True)
        assert_check_clean(image)
        assert_same_as_raw(image, raw)
        with Qcow2Reader(str(image)) as reader:
            assert reader.manifest() == b"done"
        image.unlink()
    assert interrupted >= 2  # most kills must land while writing, not before or after
