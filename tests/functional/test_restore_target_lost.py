"""`rescue restore` when a target goes away part-way, and when the user stops it part-way.

The failing target is a real block device (tests/fixtures/faultdisk.py `failing_disk`): a loop
device over a FUSE file that takes writes until a set number of bytes has passed, then answers
every request with EIO, or ENODEV as an unplugged disk does, until the test heals it. Its FUSE
process logs every write it is sent, so a resumed restore can be held to writing only what the
map does not already claim. `qemu-img compare` judges the restored bytes against the image.
"""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.engine import pipeline, restore
from rescue.formats import mapfile
from rescue.formats.base import ImageReader
from rescue.formats.image import open_reader
from rescue.rangemap import FINISHED
from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process
from tests.fixtures.faultdisk import FailingDisk, LoggedRead, failing_disk, make_backing
from tests.fixtures.restore import MIB, blank, make_image, target

pytestmark = pytest.mark.slow

SIZE = 32 * MIB
GONE_AFTER = 10 * MIB  # inside the third 4 MiB chunk: two whole chunks get written first


RESTORED_32 = ("restored 32 MiB (image: checksums and BLAKE3 verified; read back as "
               "written)")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qcow2 image of mixed content (text, noise, zeros, patterns), made by `rescue image`."""
    folder = tmp_path_factory.mktemp("restore-lost")
    make_backing(str(folder / "source.disk"), SIZE, seed=11)
    return make_image(folder / "source.disk", folder / "source.qcow2")


def lost_disk(stack: ExitStack, folder: Path, name: str, gone_after: int | None = GONE_AFTER,
              error: int = errno.EIO) -> FailingDisk:
    """A writable target over folder/NAME.target that goes away after `gone_after` bytes."""
    backing = blank(folder / f"{name}.target", SIZE, fill=b"stale ")
    spec = "sim:" if gone_after is None else f"sim:gone={gone_after}"
    return stack.enter_context(failing_disk(str(backing), spec, error=error))


def restore_args(image: Path, maps: Path, *targets: str) -> tuple[str, ...]:
    """The command line; checkpointing after every chunk so the maps record each one, and
    reading back after the writing: a disk's gone= counts reads as well as writes, and these
    tests place the loss by what was written (test_restore_readback.py loses a disk while it
    is read back during the writing)."""
    return ("restore", str(image), *targets, "--yes", "--map-dir", str(maps),
            "--checkpoint", "0", "--read-back", "after")


def same_as_image(image: Path, device: str) -> None:
    """qemu-img, an independent qcow2 reader, finds the device equal to the image."""
    done = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image),
                           device], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def finished_ranges(maps: Path, device: str) -> list[tuple[int, int]]:
    """(offset, length) of what the device's restore map claims written; [] without a map."""
    found = list(maps.glob(f"{Path(device).name}-*.map"))
    assert len(found) <= 1, found
    if not found:
        return []
    rmap = mapfile.load(str(found[0]), SIZE).rmap
    return [(offset, length) for offset, length, state in rmap.areas() if state == FINISHED]


def covered(writes: list[LoggedRead]) -> list[tuple[int, int]]:
    """The byte ranges that successful writes covered, merged."""
    merged: list[tuple[int, int]] = []
    for write in sorted((w for w in writes if w.ok), key=lambda w: w.offset):
        end = write.offset + write.size
        if merged and write.offset <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((write.offset, end))
    return [(start, end - start) for start, end in merged]


def complement(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    gaps, position = [], 0
    for offset, length in sorted(ranges):
        if offset > position:
            gaps.append((position, offset - position))
        position = offset + length
    return gaps + ([(position, size - position)] if position < size else [])


def assert_resumed(disk: FailingDisk, writes_before: int, claimed: list[tuple[int, int]]
                   ) -> None:
    """The resumed run wrote exactly what the map did not claim, each byte once."""
    resumed = [w for w in disk.writes()[writes_before:] if w.ok]
    assert claimed, "the interrupted run left no written range to resume from"
    assert covered(resumed) == complement(claimed, SIZE)
    assert sum(w.size for w in resumed) == SIZE - sum(length for _, length in claimed)


@pytest.mark.parametrize(("error", "message"), [
    (errno.EIO, r"cannot write to {}: Input/output error"),
    (errno.ENODEV, r"{} vanished \(No such device\)"),
], ids=["EIO", "ENODEV"])
def test_one_of_two_targets_goes_away_and_the_other_completes(
        image: Path, tmp_path: Path, stack: ExitStack, error: int, message: str) -> None:
    good = target(stack, tmp_path, "good", SIZE, fill=b"old data ")
    lost = lost_disk(stack, tmp_path, "lost", error=error)
    maps = tmp_path / "maps"
    result = rescue(*restore_args(image, maps, good, lost.device))
    assert lost.gone, "the target never went away: the test proves nothing"
    assert_clean_failure(result, 3, message.format(lost.device))
    assert result.stdout.splitlines()[-1] == f"{good}: {RESTORED_32}"
    same_as_image(image, good)
    assert not finished_ranges(maps, good)  # done: no map left behind
    claimed = finished_ranges(maps, lost.device)
    assert 0 < sum(length for _, length in claimed) <= GONE_AFTER

    lost.heal()  # back again: the lost target alone continues from its map
    writes_before = len(lost.writes())
    again = rescue(*restore_args(image, maps, lost.device))
    assert again.returncode == 0, again.stderr
    assert_resumed(lost, writes_before, claimed)
    same_as_image(image, lost.device)


def test_the_only_target_fails_then_comes_back_and_the_same_command_resumes(
        image: Path, tmp_path: Path, stack: ExitStack) -> None:
    lost = lost_disk(stack, tmp_path, "lost")
    maps = tmp_path / "maps"
    args = restore_args(image, maps, lost.device)
    result = rescue(*args)
    assert lost.gone
    assert_clean_failure(result, 3, rf"cannot write to {lost.device}: Input/output error")
    claimed = finished_ranges(maps, lost.device)
    assert claimed == [(0, 2 * 4 * MIB)], "every chunk written before the failure is claimed"

    lost.heal()
    writes_before = len(lost.writes())
    again = rescue(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == f"{lost.device}: {RESTORED_32}"
    assert_resumed(lost, writes_before, claimed)
    same_as_image(image, lost.device)
    assert not finished_ranges(maps, lost.device)


def test_target_lost_while_verifying_is_reported_as_a_read_back_failure(
        image: Path, tmp_path: Path, stack: ExitStack) -> None:
    """Everything was written and claimed; the disk goes away half-way through reading it
    back. Once back, the same command only verifies."""
    lost = lost_disk(stack, tmp_path, "lost", gone_after=SIZE + SIZE // 2)
    maps = tmp_path / "maps"
    args = restore_args(image, maps, lost.device)
    result = rescue(*args)
    assert lost.gone
    assert_clean_failure(result, 3, rf"cannot read back {lost.device}: Input/output error")
    assert finished_ranges(maps, lost.device) == [(0, SIZE)]

    lost.heal()
    writes_before = len(lost.writes())
    again = rescue(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == f"{lost.device}: {RESTORED_32}"  # read back whole
    assert not lost.writes()[writes_before:], "a finished target is not written again"
    same_as_image(image, lost.device)


def test_reading_stops_once_the_only_target_is_lost(tmp_path: Path, stack: ExitStack,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is left to write to, so the rest of the image is not decoded: on a large image
    that would keep the user waiting for hours before the failure is reported. The image is
    big enough that the queues and decode window cannot already hold all of it."""
    size = 128 * MIB
    make_backing(str(tmp_path / "large.img"), size, seed=12)
    lost = stack.enter_context(failing_disk(str(blank(tmp_path / "t", size)),
                                            f"sim:gone={4 * MIB}"))
    read: list[int] = []

    def counting_reader(path: str, image_format: str | None = None) -> ImageReader:
        reader = open_reader(path, image_format)
        read_chunk = reader.read

        def counted(offset: int, length: int) -> bytes:
            read.append(length)
            return read_chunk(offset, length)

        monkeypatch.setattr(reader, "read", counted)
        return reader

    monkeypatch.setattr(restore, "open_reader", counting_reader)
    monkeypatch.setattr(pipeline, "open_reader", counting_reader)
    job = restore.RestoreJob(restore.RestoreRequest(
        str(tmp_path / "large.img"), (lost.device,), map_dir=str(tmp_path / "maps")))
    assert job.check()[0].allowed()
    result = job.run()
    assert lost.gone
    assert result.outcome == "failed"
    assert result.targets[0].error == f"cannot write to {lost.device}: Input/output error"
    assert sum(read) < size * 3 // 4  # the queues and decode window, not the whole image


def wait_for_partial_map(maps: Path, device: str, process: subprocess.Popen[str]) -> bool:
    """Wait until the device's map claims some of the target, but not all of it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if 0 < sum(length for _, length in finished_ranges(maps, device)) < SIZE:
            return True
        time.sleep(0.005)
    return False


def test_ctrl_c_keeps_both_maps_and_the_same_command_continues(
        image: Path, tmp_path: Path, stack: ExitStack) -> None:
    plain = target(stack, tmp_path, "plain", SIZE, fill=b"old data ")
    logged = lost_disk(stack, tmp_path, "logged", gone_after=None)
    maps = tmp_path / "maps"
    args = restore_args(image, maps, plain, logged.device)
    process = rescue_process(*args)
    try:
        partial = wait_for_partial_map(maps, logged.device, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert partial, "the restore finished before it could be interrupted"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    for line, device in zip(lines, (plain, logged.device), strict=True):
        assert re.fullmatch(rf"rescue: {device}: interrupted at [\d.]+ [KM]iB; run the same "
                            "command to continue", line), line
    claimed = finished_ranges(maps, logged.device)

    writes_before = len(logged.writes())
    again = rescue(*args)
    assert again.returncode == 0, again.stderr
    assert_resumed(logged, writes_before, claimed)
    same_as_image(image, plain)
    same_as_image(image, logged.device)
    assert not list(maps.glob("*.map"))


def test_a_target_that_drops_writes_is_caught_by_the_read_back(
        image: Path, tmp_path: Path, stack: ExitStack) -> None:
    """The disk acknowledges every write but keeps none in 16 KiB across a chunk boundary,
    as a disk with failing media or a lying cache does. The read-back (several reads in flight)
    finds exactly those sectors, the map gives them back to be written, and the same command
    writes only their chunks again, and again finds them lost."""
    lost_start, lost_length = 8 * MIB - 8192, 16384
    backing = blank(tmp_path / "liar.target", SIZE, fill=b"stale ")
    liar = stack.enter_context(failing_disk(str(backing), "sim:",
                                            lose_writes=f"{lost_start}+{lost_length}"))
    maps = tmp_path / "maps"
    args = restore_args(image, maps, liar.device)
    first = rescue(*args)
    assert_clean_failure(first, 1, rf"{liar.device}: verify found 1 differing ranges")
    assert f"{lost_start:#x}+{lost_length:#x}" in first.stderr
    assert finished_ranges(maps, liar.device) == [
        (0, lost_start), (lost_start + lost_length, SIZE - lost_start - lost_length)]

    writes_before = len(liar.writes())
    again = rescue(*args, "--json")
    assert again.returncode == 1, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    assert [t["mismatches"] for t in summary["targets"]] == [[[lost_start, lost_length]]]
    chunk = pipeline.CHUNK  # a restore writes whole chunks: those holding the lost bytes
    first, end = lost_start // chunk * chunk, -(-(lost_start + lost_length) // chunk) * chunk
    assert covered(liar.writes()[writes_before:]) == [(first, end - first)]
