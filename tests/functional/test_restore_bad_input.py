"""`rescue restore` with bad input: damaged and truncated images, a target that fails
mid-way, targets the policy must never allow; and the headless job's pause and cancel."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.engine.jobs import JobControl
from rescue.engine.restore import RestoreJob, RestoreRequest
from rescue.errors import ExitCode
from rescue.formats.zstseek import ZstSeekReader
from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.disks import small_tmpfs
from tests.fixtures.restore import (
    DISK,
    GPT_LAYOUT,
    MIB,
    cmp,
    digest,
    imaged_disk,
    target,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("restore-bad")
    return imaged_disk(folder, "gpt", DISK, GPT_LAYOUT, 3, "img.zst", "qcow2")


def damaged_copy(image: Path, folder: Path) -> tuple[Path, int, int]:
    """A copy of a .img.zst image with one data frame past its start overwritten; the image
    offset where that frame starts, and its length."""
    with ZstSeekReader(str(image)) as reader:
        frames = [f for f in reader.frames if f.offset and f.compressed_size > 1000]
    frame = frames[len(frames) // 2]
    damaged = folder / "damaged.img.zst"
    data = bytearray(image.read_bytes())
    middle = frame.compressed_offset + frame.compressed_size // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    damaged.write_bytes(data)
    return damaged, frame.offset, frame.length


def test_damage_found_mid_way_is_listed_and_the_rest_restored(
        source: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    image, offset, length = damaged_copy(source["gpt.img.zst"], tmp_path)
    device = target(stack, tmp_path, "t", DISK)
    result = rescue("restore", str(image), device, "--yes", "--map-dir", str(tmp_path / "m"))
    assert result.returncode == ExitCode.UNREADABLE, result.stderr
    assert f"damaged: bytes {offset:#x}-{offset + length - 1:#x}" in result.stdout
    assert "verified" not in result.stdout + result.stderr
    assert f"{device}: restored 48 MiB from a damaged image" in result.stdout
    end = offset + length  # every byte but the damaged frame's is on the target
    assert digest(device, 0, offset) == digest(source["gpt"], 0, offset)
    assert digest(device, end) == digest(source["gpt"], end)
    assert digest(device, offset, length) == hashlib.sha256(bytes(length)).hexdigest()


def test_check_image_reports_damage_before_writing(source: dict[str, Path], tmp_path: Path,
                                                   stack: ExitStack) -> None:
    image, offset, _ = damaged_copy(source["gpt.img.zst"], tmp_path)
    device = target(stack, tmp_path, "t", DISK, b"old")
    before = digest(device)
    result = rescue("restore", str(image), device, "--yes", "--check-image")
    assert_clean_failure(result, ExitCode.UNREADABLE, rf"damaged: bytes {offset:#x}-0x[0-9a-f]+"
                         r"\); nothing was written")
    assert digest(device) == before


def test_truncated_image_is_refused_before_writing(source: dict[str, Path], tmp_path: Path,
                                                  stack: ExitStack) -> None:
    image = tmp_path / "cut.qcow2"
    image.write_bytes(source["gpt.qcow2"].read_bytes()[:os.path.getsize(source["gpt.qcow2"]) // 2])
    device = target(stack, tmp_path, "t", DISK, b"old")
    before = digest(device)
    result = rescue("restore", str(image), device, "--yes")
    assert_clean_failure(result, 2, "cut.qcow2: truncated")
    assert digest(device) == before


def test_a_failing_target_is_dropped_while_the_other_finishes(
        source: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    good = target(stack, tmp_path, "good", DISK)
    full = stack.enter_context(small_tmpfs(8 * MIB))
    bad = target(stack, full, "bad", DISK)
    result = rescue("restore", str(source["gpt.qcow2"]), good, bad, "--yes",
                    "--map-dir", str(tmp_path / "m"))
    assert_clean_failure(result, 3, rf"cannot write to {bad}")
    assert f"{good}: restored 48 MiB (image: checksums and BLAKE3 verified" in result.stdout
    cmp(source["gpt"], good, DISK)


def test_the_image_and_the_running_system_are_never_targets(source: dict[str, Path]) -> None:
    root = subprocess.run(["findmnt", "-nvo", "SOURCE", "/"], capture_output=True,
                          text=True).stdout.strip()
    targets = (str(source["gpt.qcow2"]), *([root] if root.startswith("/dev/") else []))
    job = RestoreJob(RestoreRequest(str(source["gpt.qcow2"]), targets, force=True))
    checks = job.check()  # judges only; nothing is opened for writing
    assert not any(check.allowed(force=True) for check in checks)
    assert "--force cannot override this" in (checks[0].problem(force=True) or "")


def test_pause_and_cancel_leave_a_resumable_map(source: dict[str, Path], tmp_path: Path,
                                               stack: ExitStack) -> None:
    device = target(stack, tmp_path, "t", DISK)
    control = JobControl()
    request = RestoreRequest(str(source["gpt.qcow2"]), (device,), map_dir=str(tmp_path / "m"),
                             checkpoint=0.0)
    job = RestoreJob(request, control)
    assert job.check()[0].allowed()
    control.pause()
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(job.run()))
    worker.start()
    deadline = time.monotonic() + 30
    while job.progress().targets[0].phase != "writing" and time.monotonic() < deadline:
        time.sleep(0.01)
    progress = job.progress()
    assert progress.targets[0].phase == "writing"  # the target is open: its map is kept
    assert progress.paused and progress.phase == "restoring"
    control.cancel()
    worker.join(30)
    result = outcome[0]
    assert result.outcome == "interrupted"
    assert result.targets[0].phase == "interrupted"
    assert os.path.exists(result.targets[0].map_path)
    again = RestoreJob(request).run()  # the same request continues and completes
    assert again.outcome == "restored" and again.targets[0].verified == DISK
    cmp(source["gpt"], device, DISK)


def test_a_restore_clock_stands_still_while_paused_and_once_finished(
        source: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    device = target(stack, tmp_path, "t", DISK)
    control = JobControl()
    job = RestoreJob(RestoreRequest(str(source["gpt.qcow2"]), (device,),
                                    map_dir=str(tmp_path / "m")), control)
    assert job.check()[0].allowed()
    control.pause()
    worker = threading.Thread(target=job.run)
    worker.start()
    deadline = time.monotonic() + 30
    while job.progress().targets[0].phase != "writing" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        before = job.progress()
        time.sleep(1)
        assert job.progress().elapsed == before.elapsed
    finally:
        control.resume()
        worker.join(60)
    done = job.progress()
    assert done.phase == "finished"
    time.sleep(1)
    assert job.progress().as_dict() == done.as_dict()
