"""The job screen's log: the files a rescue's unreadable sectors hit, and used-mode warnings."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.rescue import Outcome
from rescue.tui.app import RescueApp
from tests.fixtures.faultdisk import SECTOR, faulty_device
from tests.fixtures.filesystems import MIB, build_fs, ext_first_block
from tests.fixtures.tui import drive, screen_lines, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_finished_job_lists_the_damaged_file(tmp_path: Path) -> None:
    image = tmp_path / "ext4.img"
    hashes = build_fs("ext4", image, 32 * MIB, seed=5)
    victim = sorted(f"/{name}" for name in hashes)[0]
    bad = ext_first_block(image, victim)
    with faulty_device(str(image), f"sim:bad={bad}+{SECTOR}") as device:
        job = ImageJob(ImageRequest(source=device, dest=str(tmp_path / "out.img")))
        app = RescueApp(job)

        async def scenario(pilot) -> None:
            await wait_until(pilot, lambda: app.jobs and app.jobs[0].done, timeout=60)

        drive(app, scenario)
    running = app.jobs[0]
    assert running.outcome is Outcome.UNREADABLE
    assert any(line.endswith("affected files: 1") for line in running.log)
    assert any(line.strip().endswith(f"{victim} (lost 512 B)") for line in running.log)


def test_the_log_carries_the_used_mode_warnings(tmp_path: Path) -> None:
    """What `rescue image` prints as warnings (here: no file system to read, so the whole
    disk is imaged) reaches the job screen's log too."""
    disk = tmp_path / "noise.img"
    disk.write_bytes(random.Random(3).randbytes(4 * MIB))
    job = ImageJob(ImageRequest(source=str(disk), dest=str(tmp_path / "out.img"), mode="used"))
    app = RescueApp(job)

    async def scenario(pilot) -> None:
        await wait_until(pilot, lambda: app.jobs and app.jobs[0].done, timeout=60)

    drive(app, scenario)
    assert app.jobs[0].outcome is Outcome.RESCUED
    warning = ("warning: disk: unknown file system, so its free blocks cannot be told apart: "
               "imaging the whole area, nothing skipped")
    assert any(line.endswith(warning) for line in app.jobs[0].log), app.jobs[0].log


def test_the_job_screen_counts_the_files_read_first(tmp_path: Path) -> None:
    """With --first, the counters gain a line of how many of the chosen files are complete,
    and the log names the damaged one with the bytes it lost."""
    image = tmp_path / "ext4.img"
    hashes = build_fs("ext4", image, 32 * MIB, seed=5)
    chosen = sorted(f"/{name}" for name in hashes if name.startswith("dir 1/"))
    bad = ext_first_block(image, chosen[0]) + 1024
    with faulty_device(str(image), f"sim:bad={bad}+{SECTOR}") as device:
        job = ImageJob(ImageRequest(source=device, dest=str(tmp_path / "out.img"),
                                    first=("/dir 1",)))
        app = RescueApp(job)
        shown: list[str] = []

        async def scenario(pilot) -> None:
            await wait_until(pilot, lambda: app.jobs and app.jobs[0].done, timeout=60)
            await wait_until(pilot, lambda: any("[unreadable]" in line
                                                for line in screen_lines(app)))
            shown.extend(screen_lines(app))

        drive(app, scenario)
    assert f"first files: {len(chosen) - 1} of {len(chosen)} complete" in "\n".join(shown)
    assert any(line.endswith(f"first: {chosen[0]} 512 bytes unreadable at 1024+512")
               for line in app.jobs[0].log), app.jobs[0].log
