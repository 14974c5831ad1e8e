"""The image wizard offers what `rescue image` does, at 80x24: used-blocks mode, the order,
compression level and threads only for compressed formats, a verify once imaging ends, one
partition of a disk as the source; and it says before the job starts whether the destination's
image is resumed (how far, since when), started fresh, or refused as another source's."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, OptionList

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.rescue import Outcome
from rescue.errors import ExitCode
from rescue.formats import mapfile
from rescue.rangemap import FINISHED, RangeMap
from rescue.tui.jobs import RunningJob
from rescue.tui.screens.image_wizard import ImageWizard
from rescue.tui.screens.job import JobScreen
from tests.fixtures.cli import rescue, run
from tests.fixtures.loop import loop_device
from tests.fixtures.tui import drive, make_file, wait_until
from tests.tui.test_wizards import (
    MIB,
    SIM,
    full_text,
    highlight,
    home_app,
    image_wizard,
    set_field,
    shown,
)

pytestmark = pytest.mark.timeout(120)


def stamp(path: Path) -> str:
    """How the wizard and the CLI name the time a map was last saved."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))


async def choose(pilot: Pilot, selector: str, value: str) -> None:
    pilot.app.screen.query_one(selector).value = value  # type: ignore[attr-defined]
    await pilot.pause()


def test_options_map_to_the_request_and_the_level_shows_only_where_it_counts(
        tmp_path: Path) -> None:
    dest = tmp_path / "sim.img"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_wizard(pilot, SIM, str(dest))
        assert wizard.step_id == "options"
        assert not wizard.query_one("#compression").display  # raw: no level, no threads
        assert "Compression level" not in shown(app)
        await choose(pilot, "#mode", "used")
        await choose(pilot, "#order", "metadata-first")
        wizard.query_one("#verify", Checkbox).value = True
        await pilot.press("ctrl+n")
        assert wizard.step_id == "summary"
        assert shlex.join(wizard.choices.request().to_argv()) == (
            f"rescue image {SIM} {dest} --format raw --mode used --order metadata-first")
        summary = full_text(app, "#summary")
        assert "mode used, order metadata-first" in summary
        assert f"then:    rescue verify {dest}" in summary
        assert app.focused is wizard.query_one("#finish")  # enter starts
        await pilot.press("ctrl+b")
        await choose(pilot, "#format", "qcow2")
        assert wizard.query_one("#compression").display
        assert "Compression level (1-19):" in shown(app) and "threads:" in shown(app)
        assert "auto" in shown(app)  # the threads' default, the same on every machine
        await set_field(pilot, "#threads", "0")
        await pilot.press("ctrl+n")
        assert wizard.step_id == "options"
        assert "--threads must be between 1 and" in full_text(app, "#problem")
        await set_field(pilot, "#threads", "2")
        await pilot.press("ctrl+n")
        assert wizard.choices.request().to_argv()[4:] == [
            "--format", "qcow2", "--level", "3", "--threads", "2", "--mode", "used",
            "--order", "metadata-first"]
        assert "level 3, 2 threads" in full_text(app, "#summary") and not app.jobs

    drive(app, scenario)


def test_verify_runs_when_imaging_ends(tmp_path: Path) -> None:
    dest = tmp_path / "sim.qcow2"
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_wizard(pilot, "sim:size=4M", str(dest))
        await choose(pilot, "#format", "qcow2")
        wizard.query_one("#verify", Checkbox).value = True
        await pilot.press("ctrl+n", "enter")
        assert isinstance(app.screen, JobScreen)
        running = app.jobs[0]
        assert isinstance(running, RunningJob) and running.verify
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.RESCUED and running.error is None
        verdicts = [line.split(" ", 1)[1] for line in running.log if " verify: " in line]
        assert verdicts == ["verify: sim.qcow2: intact (checksums and BLAKE3 verified)"]
        await wait_until(pilot, lambda: "verify: sim.qcow2: intact (checksums and BLAKE3 "
                                        "verified)" in shown(app))

    drive(app, scenario)


def image_partway(tmp_path: Path, source: str, dest: Path) -> None:
    """Image a quarter of `source` (8 MiB, its bad sector elsewhere) into `dest`."""
    domain = tmp_path / "quarter.map"
    rmap = RangeMap(8 * MIB)
    rmap.set(4 * MIB, 2 * MIB, FINISHED)
    mapfile.save(str(domain), mapfile.Mapfile(rmap))
    job = ImageJob(ImageRequest(source=source, dest=str(dest), domain_path=str(domain)))
    assert job.run() is Outcome.RESCUED


def test_the_wizard_says_it_resumes_before_the_job_starts(tmp_path: Path) -> None:
    dest = tmp_path / "sim.img"
    image_partway(tmp_path, SIM, dest)
    map_path = Path(f"{dest}.map")
    app = home_app()

    async def scenario(pilot: Pilot) -> None:
        wizard = await image_wizard(pilot, SIM, str(tmp_path / "new.img"))
        await pilot.press("ctrl+b")
        assert "will start fresh" in shown(app)
        await set_field(pilot, "#dest-path", str(dest))
        resumes = f"will resume: 25.0% rescued, last run {stamp(map_path)}"
        assert resumes in shown(app)
        await pilot.press("enter", "ctrl+n")
        assert wizard.step_id == "summary" and resumes in full_text(app, "#summary")
        await pilot.press("ctrl+b", "ctrl+b", "ctrl+b")
        await set_field(pilot, "#source-path", "sim:size=16M")
        await pilot.press("enter")
        await set_field(pilot, "#dest-path", str(dest))
        assert (f"will refuse: sim:size=16M is not the source of {map_path} (size 8388608 "
                "recorded, 16777216 now)") in " ".join(full_text(app, "#dest-info").split())
        await pilot.press("escape")

    drive(app, scenario)


def test_the_cli_says_whether_it_resumes_or_starts_fresh(tmp_path: Path) -> None:
    dest = tmp_path / "sim.img"
    domain = tmp_path / "half.map"
    rmap = RangeMap(8 * MIB)
    rmap.set(4 * MIB, 4 * MIB, FINISHED)  # the bad sector lies before
    mapfile.save(str(domain), mapfile.Mapfile(rmap))
    first = rescue("image", SIM, dest, "--domain", domain)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "will start fresh"
    last_run = stamp(Path(f"{dest}.map"))  # before the run writes the map again
    again = rescue("image", SIM, dest)
    assert again.returncode == ExitCode.UNREADABLE, again.stderr  # its bad sector
    assert again.stdout.splitlines()[0] == f"will resume: 50.0% rescued, last run {last_run}"
    other = tmp_path / "other.img"
    make_file(str(other), MIB, b"not an image of this disk")
    refused = rescue("image", SIM, other)
    assert refused.stderr.splitlines() == [
        f"rescue: {other} already exists and has no mapfile; use --force to overwrite it"]
    assert not refused.stdout
    over = rescue("image", "sim:size=1M", other, "--force")
    assert over.returncode == 0, over.stderr
    assert over.stdout.splitlines()[0] == f"will start over: {other} exists without a map: " \
                                          "overwritten"
    last_run = stamp(Path(f"{other}.map"))
    complete = rescue("image", "sim:size=1M", other)
    assert complete.returncode == 0, complete.stderr
    assert complete.stdout.splitlines()[0] == (
        f"will resume: every byte rescued already, last run {last_run}")


# ---- on a real loop device --------------------------------------------------------------------


@pytest.fixture
def two_partitions(tmp_path: Path) -> Iterator[str]:
    """A loop disk with two ext4 partitions (the second with files in it): the disk."""
    backing = make_file(str(tmp_path / "disk.bin"), 48 * MIB)
    run("sfdisk", "-q", backing, stdin="label: dos\n,16M,83\n,,83\n")
    with loop_device(backing, partitions=True) as disk:
        run("mkfs.ext4", "-q", f"{disk}p1")
        run("mkfs.ext4", "-q", "-d", str(Path(__file__).parent), f"{disk}p2")
        yield disk


@pytest.mark.slow
def test_one_partition_of_a_disk_is_picked_and_imaged_by_its_used_blocks(
        two_partitions: str, tmp_path: Path) -> None:
    disk, app = two_partitions, home_app()
    partition, dest = f"{disk}p2", tmp_path / "p2.img"

    async def scenario(pilot: Pilot) -> None:
        await highlight(pilot, disk)
        await pilot.press("i")
        wizard = app.screen
        assert isinstance(wizard, ImageWizard)
        assert "One job reads one source: the whole disk, or one of its partitions" \
            in shown(app)
        known = wizard.query_one("#known", OptionList)
        ids = [known.get_option_at_index(i).id for i in range(known.option_count)]
        assert ids[ids.index(disk) + 1:ids.index(disk) + 3] == [f"{disk}p1", partition]
        known.focus()
        known.highlighted = ids.index(partition)
        await pilot.press("enter")
        assert wizard.step_id == "dest" and wizard.choices.source == partition
        await set_field(pilot, "#dest-path", str(dest))
        await pilot.press("enter")
        await choose(pilot, "#mode", "used")
        await pilot.press("ctrl+n")
        assert wizard.choices.request().to_argv() == [
            "rescue", "image", partition, str(dest), "--format", "raw", "--mode", "used"]
        await pilot.press("enter")
        running = app.jobs[0]
        assert isinstance(running, RunningJob)
        await wait_until(pilot, lambda: running.done)
        assert running.outcome is Outcome.RESCUED and running.error is None, running.log
        plan = running.job.plan
        assert plan is not None and 0 < plan.used_bytes < plan.size

    drive(app, scenario)
    with open(partition, "rb") as original:
        size = original.seek(0, os.SEEK_END)
    assert dest.stat().st_size == size
    run("e2fsck", "-fn", str(dest))  # the used blocks make a whole file system
