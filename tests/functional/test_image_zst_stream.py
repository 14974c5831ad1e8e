"""`rescue image SRC out.img.zst` streams the image as it reads: a healthy disk never needs the
staging image, a failing one (or one read metadata first) ends byte-exact, and a kill -9 at any
moment is continued by the same command. Judged by `zstd -d` and cmp, never by rescue alone."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import REPO_ROOT, assert_clean_failure, rescue
from tests.fixtures.faultdisk import faulty_device, make_backing
from tests.fixtures.filesystems import MIB, build_fs
from tests.fixtures.image_disk import DISK_SIZE, IMAGE_DISK
from tests.fixtures.judges import map_blocks

# bad areas early, so everything after the first one waits in the staging image
FAULTY = "sim:size=32M,seed=3,bad=3M+4k,bad=9M+8k,bad=20M+1536"
# the same disk, about five seconds to read: longer than the first kills below leave it
SLOW_FAULTY = FAULTY + ",rate=6M"

IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x80, 0x100, 0x4000
INOTIFY_EVENT = struct.Struct("iIII")  # watch, mask, cookie, name length


@contextlib.contextmanager
def created_names(folder: Path) -> Iterator[list[str]]:
    """The names created in (or renamed into) `folder` while the block runs, as the kernel
    reported them (inotify): every file a job made, however briefly it lived."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    names: list[str] = []
    try:
        assert libc.inotify_add_watch(fd, bytes(folder), IN_CREATE | IN_MOVED_TO) >= 0
        yield names
        while True:
            try:
                events = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            position = 0
            while position < len(events):
                _, mask, _, length = INOTIFY_EVENT.unpack_from(events, position)
                assert not mask & IN_Q_OVERFLOW, "events were lost"
                start = position + INOTIFY_EVENT.size
                names.append(events[start:start + length].rstrip(b"\0").decode())
                position = start + length
    finally:
        os.close(fd)


def decompressed(image: Path) -> bytes:
    """The image as `zstd -d` reads it."""
    done = subprocess.run(["zstd", "-d", "-q", "-c", str(image)], capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_same(image: Path, expected: Path, work: Path) -> None:
    """`zstd -d` turns the image into exactly the bytes of `expected` (judged by cmp)."""
    plain = work / "zstd-d.img"
    plain.write_bytes(decompressed(image))
    done = subprocess.run(["cmp", str(plain), str(expected)], capture_output=True, text=True)
    plain.unlink()
    assert done.returncode == 0, done.stdout + done.stderr


def assert_only_the_image_is_left(folder: Path, dest: Path) -> None:
    left = {p.name for p in folder.iterdir()}
    assert dest.name in left
    assert not {f"{dest.name}.partial", f"{dest.name}.partial.qcow2"} & left


def test_a_healthy_disk_never_creates_the_staging_image(tmp_path: Path) -> None:
    source = tmp_path / "source.img"
    make_backing(str(source), 40 * MIB, seed=7)
    work = tmp_path / "out"
    work.mkdir()
    dest = work / "disk.img.zst"
    with created_names(work) as names:
        done = rescue("image", str(source), str(dest))
    assert done.returncode == 0, done.stderr
    assert not [name for name in names if ".qcow2" in name], names
    assert f"{dest.name}.partial" in names  # it was streamed, then renamed
    assert_same(dest, source, tmp_path)
    assert_only_the_image_is_left(work, dest)
    verified = rescue("verify", str(dest))
    assert verified.returncode == 0 and "BLAKE3 verified" in verified.stdout, verified.stdout


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("ext4") / "fs.img"
    build_fs("ext4", image, 48 * MIB, seed=3)
    return image


def test_used_mode_streams_free_blocks_as_zeros(ext4: Path, tmp_path: Path) -> None:
    """Free blocks are never written, so they count as zeros at the frontier: no staging."""
    raw, dest = tmp_path / "used.img", tmp_path / "out" / "used.img.zst"
    dest.parent.mkdir()
    assert rescue("image", str(ext4), str(raw), "--mode", "used").returncode == 0
    with created_names(dest.parent) as names:
        done = rescue("image", str(ext4), str(dest), "--mode", "used")
    assert done.returncode == 0, done.stderr
    assert not [name for name in names if ".qcow2" in name], names
    assert_same(dest, raw, tmp_path)
    assert raw.read_bytes() != ext4.read_bytes()  # the free blocks held stale data


@pytest.mark.parametrize("options", [["--order", "metadata-first"],
                                     ["--order", "metadata-first", "--mode", "used"],
                                     ["--first", "/dir 1"]],
                         ids=["full", "used", "first-files"])
def test_metadata_first_pulls_the_staged_metadata_into_the_stream(
        ext4: Path, tmp_path: Path, options: list[str]) -> None:
    """The metadata (and the chosen files, looked up in the image as written so far) come
    first, out of order: they wait in the staging image until the in-order pass reaches them."""
    expected = ext4
    if "used" in options:
        expected = tmp_path / "used.img"
        assert rescue("image", str(ext4), str(expected), "--mode", "used").returncode == 0
    dest = tmp_path / "out" / "meta.img.zst"
    dest.parent.mkdir()
    with created_names(dest.parent) as names:
        done = rescue("image", str(ext4), str(dest), *options)
    assert done.returncode == 0, done.stderr
    assert f"{dest.name}.partial.qcow2" in names  # the metadata came first, out of order
    assert_same(dest, expected, tmp_path)
    assert_only_the_image_is_left(dest.parent, dest)


def expected_image(backing: Path, mapfile: Path, work: Path) -> Path:
    """The disk's bytes where the map says rescued, zeros everywhere else."""
    data = bytearray(backing.read_bytes())
    for position, size, state in map_blocks(mapfile):
        if state != "+":
            data[position:position + size] = bytes(size)
    expected = work / "expected.img"
    expected.write_bytes(bytes(data))
    return expected


@pytest.mark.slow
@pytest.mark.root
def test_a_failing_device_ends_byte_exact_with_its_bad_areas_as_zeros(tmp_path: Path) -> None:
    backing, dest = tmp_path / "backing.img", tmp_path / "out" / "disk.img.zst"
    dest.parent.mkdir()
    make_backing(str(backing), DISK_SIZE, seed=21)
    with faulty_device(str(backing), IMAGE_DISK) as device:
        done = rescue("image", device, str(dest))
    assert done.returncode == ExitCode.UNREADABLE, done.stderr
    mapfile = Path(f"{dest}.map")
    assert {state for _, _, state in map_blocks(mapfile)} == {"+", "-"}
    assert_same(dest, expected_image(backing, mapfile, tmp_path), tmp_path)
    assert_only_the_image_is_left(dest.parent, dest)
    assert "intact" in rescue("verify", str(dest)).stdout


@pytest.fixture(scope="module")
def faulty_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The raw image and map of one uninterrupted rescue of FAULTY."""
    image = tmp_path_factory.mktemp("reference") / "reference.img"
    assert rescue("image", FAULTY, str(image)).returncode == ExitCode.UNREADABLE
    return image, map_blocks(Path(f"{image}.map"))


def run_and_kill(command: list[str], delay: float) -> int | None:
    """Run `rescue` with `command`, kill -9 it after `delay` seconds; its exit code if it ended
    first, else None."""
    process = subprocess.Popen([sys.executable, "-m", "rescue", *command], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=60)
        return None


@pytest.mark.slow
def test_kill_9_again_and_again_while_a_failing_disk_is_streamed(
        tmp_path: Path, faulty_reference: tuple[Path, list]) -> None:
    """Killed at seeded random moments (copying, trimming, scraping, the finish), each time
    continued by the same command, and at last let run: the staging image and the stream are
    both resumed, and the end is the image and map of one uninterrupted rescue."""
    reference, reference_map = faulty_reference
    rng = random.Random(20261126)
    dest = tmp_path / "disk.img.zst"
    command = ["image", SLOW_FAULTY, str(dest), "--checkpoint", "0.1"]
    kills = 0
    while kills < 6 and run_and_kill(command, rng.uniform(0.3, 3.0)) is None:
        kills += 1
        if dest.exists():  # it took its name, so it was complete: killed on its way out
            break
    assert kills >= 3
    if dest.exists():  # the next run says so, and clears what a kill on the way out left
        again = rescue(*command)
        assert_clean_failure(again, ExitCode.USAGE, "is already complete")
    else:
        assert rescue(*command).returncode == ExitCode.UNREADABLE
    assert map_blocks(Path(f"{dest}.map")) == reference_map
    assert_same(dest, reference, tmp_path)
    assert_only_the_image_is_left(tmp_path, dest)
