"""Resuming `rescue image`: from a GNU ddrescue mapfile, and after `kill -9` in every phase.

Either way the final image and map must be those of one uninterrupted rescue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from rescue.sim.faulty import content
from tests.fixtures.cli import REPO_ROOT, rescue
from tests.fixtures.faultdisk import SECTOR, faulty_device, make_backing
from tests.fixtures.image_disk import BAD, DISK_SIZE, IMAGE_DISK
from tests.fixtures.judges import listed_sectors, map_blocks, map_status, sectors_of


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("ddrescue_options", [
    ["--cpass=1", "--no-trim", "--no-scrape"],  # leaves non-tried and non-trimmed areas
    ["--max-errors=1"],                         # stops while trimming
    ["--no-scrape"],                            # leaves non-scraped areas
], ids=["first-pass", "max-errors", "no-scrape"])
def test_continues_a_ddrescue_mapfile(tmp_path: Path, ddrescue_options: list[str]) -> None:
    backing = tmp_path / "backing.img"
    make_backing(str(backing), DISK_SIZE, seed=5)
    image, mapfile = tmp_path / "dd.img", tmp_path / "dd.map"
    reference = tmp_path / "reference.img"
    with faulty_device(str(backing), IMAGE_DISK) as device:
        subprocess.run(["ddrescue", "-d", "-b", str(SECTOR), *ddrescue_options, device,
                        str(image), str(mapfile)], capture_output=True, timeout=120)
        partial = map_blocks(mapfile)
        assert {state for _, _, state in partial} - {"+", "-"}, "ddrescue left nothing to do"
        continued = rescue("image", device, str(image), "--map", str(mapfile))
        uninterrupted = rescue("image", device, str(reference))
    assert (continued.returncode, uninterrupted.returncode) == (1, 1), continued.stderr
    assert map_blocks(mapfile) == map_blocks(Path(f"{reference}.map"))
    assert listed_sectors(mapfile, "-") == sectors_of(BAD)
    assert image.read_bytes() == reference.read_bytes()


# ---- kill -9 in each phase, then the same command again --------------------------------------

# Copying takes about 1.5 s (rate), trimming reads 128 slow good sectors at the edges of the bad
# area, scraping 382 slow bad sectors inside it: each phase outlasts the 1 s JSON progress tick.
FAULTS = "bad=2080k+192k,slow=2048k+32k@0.012,slow=2272k+32k@0.012,slow=2080k+192k@0.004"
SLOW_SPEC = f"sim:size=8M,seed=4,rate=6M,{FAULTS}"
FAST_SPEC = "sim:size=8M,seed=4,bad=2080k+192k"  # same disk, full speed: timing changes no map
PHASE_STATUS = {"copying": "?", "trimming": "*", "scraping": "/"}


def signal_in_phase(command: list[str], phase: str, sig: signal.Signals) -> tuple[int, str]:
    """Start the rescue, send `sig` as soon as a progress line reports `phase`, and return its
    exit status and stderr."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            if json.loads(line)["phase"] == phase:
                os.kill(process.pid, sig)
                break
        else:
            pytest.fail(f"the rescue ended before {phase}")
        process.stdout.read()
        return process.wait(timeout=60), process.stderr.read()
    finally:
        process.kill()
        process.wait()


def assert_map_claims_only_true_data(mapfile: Path, image: Path, seed: int) -> None:
    """Every area the map calls finished holds the disk's bytes in the image."""
    data = image.read_bytes()
    for pos, size, state in map_blocks(mapfile):
        if state == "+":
            assert data[pos:pos + size] == content(pos, size, seed), f"area at {pos:#x}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list]:
    image = tmp_path_factory.mktemp("uninterrupted") / "out.img"
    result = rescue("image", FAST_SPEC, str(image))
    assert result.returncode == 1, result.stderr
    return image.read_bytes(), map_blocks(Path(f"{image}.map"))


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASE_STATUS))
def test_kill_9_then_the_same_command_finishes_the_job(
        tmp_path: Path, phase: str, uninterrupted: tuple[bytes, list]) -> None:
    image, mapfile = tmp_path / "out.img", tmp_path / "out.img.map"
    # the forward passes find a bad area's edges to the sector while copying, so trimming has
    # work to last a progress tick after ddrescue's classic passes (--reverse)
    classic = ["--reverse"] if phase == "trimming" else []
    command = ["image", SLOW_SPEC, str(image), "--checkpoint", "0.2", "--json", *classic]
    code, _ = signal_in_phase([sys.executable, "-m", "rescue", *command], phase, signal.SIGKILL)
    assert code == -signal.SIGKILL

    _, status = map_status(mapfile)
    phases = list(PHASE_STATUS.values())
    assert status in phases[phases.index(PHASE_STATUS[phase]):], status
    assert {state for _, _, state in map_blocks(mapfile)} - {"+", "-"}, "nothing left to do"
    assert_map_claims_only_true_data(mapfile, image, seed=4)

    again = rescue(*command)
    assert again.returncode == 1, again.stderr
    assert map_status(mapfile)[1] == "+"
    assert (image.read_bytes(), map_blocks(mapfile)) == uninterrupted


@pytest.mark.slow
def test_sigint_saves_the_map_exits_130_and_resumes(
        tmp_path: Path, uninterrupted: tuple[bytes, list]) -> None:
    image, mapfile = tmp_path / "out.img", tmp_path / "out.img.map"
    command = ["image", SLOW_SPEC, str(image), "--json"]  # the map is saved on the way out
    code, stderr = signal_in_phase([sys.executable, "-m", "rescue", *command], "copying",
                                   signal.SIGINT)
    assert code == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert map_status(mapfile)[1] == "?"
    assert "?" in {state for _, _, state in map_blocks(mapfile)}
    assert_map_claims_only_true_data(mapfile, image, seed=4)

    again = rescue("image", FAST_SPEC, str(image))
    assert again.returncode == 1, again.stderr
    assert (image.read_bytes(), map_blocks(mapfile)) == uninterrupted
