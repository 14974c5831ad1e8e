"""Two rescue processes at once: a second `rescue image` on an image being written, or a
`restore` onto a disk being imaged, is refused with one line naming the running job, and
leaves the image, its map and the disk exactly as they were. Each is tried TRIES times. Every
other use that meets a running job is tried once: imaging onto the disk it reads, converting
from or onto its image, imaging a disk being restored.

The running job is stopped (SIGSTOP) once it holds its image, so that what the second
command must not touch stands still while it runs; then it resumes and is interrupted, and
the next try continues the same job.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rescue.devices.locks import users
from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process
from tests.fixtures.faultdisk import make_backing
from tests.fixtures.loop import loop_device

TRIES = 10
Completed = subprocess.CompletedProcess[str]
SIZE = 128 << 20

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600)]


def digest(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[str]:
    """A writable loop disk with mixed content, big enough to take seconds to image."""
    backing = str(tmp_path / "disk.bin")
    make_backing(backing, SIZE, seed=7)
    with loop_device(backing) as device:
        yield device


class RunningJob:
    """A rescue command in the background, stopped (SIGSTOP) once it holds `holds` and `ready`
    exists."""

    def __init__(self, *args: str, holds: str, ready: Path | None = None) -> None:
        self.process = rescue_process(*args)
        deadline = time.monotonic() + 60
        while not ((ready is None or ready.exists()) and any(
                use.holder.pid == self.process.pid for use in users(holds))):
            assert self.process.poll() is None, self.process.communicate()[1]
            assert time.monotonic() < deadline, f"the job never took {holds}"
            time.sleep(0.002)
        os.kill(self.process.pid, signal.SIGSTOP)
        while not self.stopped():  # the signal lands when each thread is next scheduled
            time.sleep(0.002)

    def stopped(self) -> bool:
        """Every thread of the job is stopped: nothing of it writes any more."""
        for thread in Path(f"/proc/{self.process.pid}/task").glob("*/stat"):
            try:
                state = thread.read_text().rpartition(")")[2].split()[0]
            except FileNotFoundError:
                continue  # a thread that has ended writes nothing
            if state not in "tT":
                return False
        return True

    def end(self) -> None:
        """Let it go on, then interrupt it (map saved): the next try continues it."""
        os.kill(self.process.pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGINT)
        _, stderr = self.process.communicate(timeout=60)
        assert self.process.returncode in (ExitCode.INTERRUPTED, ExitCode.OK), stderr


def running_image(source: str, image: Path) -> RunningJob:
    """`rescue image` holding its image, with a map saved."""
    return RunningJob("image", source, str(image), "--checkpoint", "0.05", holds=str(image),
                      ready=Path(f"{image}.map"))


def refused_naming(result: Completed, job: RunningJob,
                   command: str = "image") -> str | None:
    """Refused (exit 5), one `rescue:` line naming the running job's PID and command; None if
    so, else what happened instead."""
    try:
        assert_clean_failure(result, ExitCode.REFUSED,
                             rf"PID {job.process.pid} \(\S*python\S* -m rescue {command} ")
    except AssertionError:
        return f"exit {result.returncode}: {result.stderr.strip()}"
    return None


def refused_every_try(disk: str, image: Path, attempt: Callable[[int], Completed],
                      state: Callable[[], object], what: str) -> None:
    """TRIES times: `attempt(try number)` while `rescue image disk image` runs, which must be
    refused naming that job and leave `state()` (what it would have written) unchanged."""
    failures = []
    for number in range(TRIES):
        job = running_image(disk, image)
        try:
            before = state()
            result = attempt(number)
            after = state()
        finally:
            job.end()
        problem = refused_naming(result, job) or (
            None if before == after else f"refused, but {what} changed")
        failures += [problem] if problem else []
    print(f"\nrefused {TRIES - len(failures)} of {TRIES}, {what} unchanged")
    assert not failures, failures


def test_a_second_image_run_on_the_same_image_is_refused(disk: str, tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    map_path = Path(f"{image}.map")
    refused_every_try(disk, image, lambda _: rescue("image", disk, str(image)),
                      lambda: (digest(image), map_path.read_bytes()), "the image and its map")
    done = rescue("image", disk, str(image))  # the job the tries interrupted completes
    assert done.returncode == ExitCode.OK, done.stderr
    assert subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image), disk],
                          capture_output=True).returncode == 0


def test_a_restore_onto_a_disk_being_imaged_is_refused(disk: str, tmp_path: Path) -> None:
    other = tmp_path / "other.img"
    make_backing(str(other), SIZE, seed=8)

    def restore(number: int) -> Completed:
        force = ["--force"] if number % 2 else []  # --force cannot override it either
        return rescue("restore", str(other), disk, "--yes", *force,
                      "--map-dir", str(tmp_path / "maps"))

    refused_every_try(disk, tmp_path / "disk.qcow2", restore, lambda: digest(disk), "the disk")


def test_every_other_use_that_would_meet_a_running_job_is_refused(disk: str,
                                                                  tmp_path: Path) -> None:
    """Imaging onto the disk being read (--force cannot override it), converting the image
    being written, or converting onto it."""
    image = tmp_path / "disk.qcow2"
    other = tmp_path / "other.qcow2"
    assert rescue("image", f"sim:size={SIZE}", str(other)).returncode == ExitCode.OK
    job = running_image(disk, image)
    try:
        before = digest(disk), digest(image)
        attempts = [rescue("image", str(other), disk, "--force"),
                    rescue("convert", str(image), str(tmp_path / "copy.img.zst")),
                    rescue("convert", str(other), str(image), "--force")]
        after = digest(disk), digest(image)
    finally:
        job.end()
    assert [refused_naming(attempt, job) for attempt in attempts] == [None] * 3
    assert before == after and not (tmp_path / "copy.img.zst").exists()


def test_imaging_a_disk_being_restored_is_refused(disk: str, tmp_path: Path) -> None:
    other = tmp_path / "other.img"
    make_backing(str(other), SIZE, seed=8)
    image = tmp_path / "disk.qcow2"
    job = RunningJob("restore", str(other), disk, "--yes", "--map-dir", str(tmp_path / "maps"),
                     holds=disk)
    try:
        attempt = rescue("image", disk, str(image))
    finally:
        job.end()
    assert refused_naming(attempt, job, "restore") is None
    assert not image.exists() and not Path(f"{image}.map").exists()
