"""`rescue image` of a real block device with real read errors, judged by GNU ddrescuelog.

The device is /dev/loopN over a FUSE file that answers EIO, stalls or fails a few times exactly
where told (tests/fixtures/faultdisk.py); the FUSE process logs every read it serves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

# the other `rescue image` tests import these two from here with the helpers below
from tests.fixtures.cli import REPO_ROOT as REPO_ROOT
from tests.fixtures.cli import assert_clean_failure as assert_clean_failure
from tests.fixtures.cli import rescue, summary
from tests.fixtures.faultdisk import (
    SECTOR,
    faulty_device,
    make_backing,
    read_log,
    sector_reads,
    sectors_touched,
    without_kernel_retries,
)

MIB = 1 << 20
DISK_SIZE = 8 * MIB

BAD = [
    (1 * MIB, SECTOR),                        # one lone sector
    (3 * MIB + 7 * SECTOR, 13 * SECTOR),      # odd-sized run, not 4 KiB aligned
    (5 * MIB - 3 * SECTOR, 6 * SECTOR),       # straddles a 64 KiB cluster boundary
    (6 * MIB + 64 * SECTOR, 200 * SECTOR),    # long enough to leave a middle for scraping
    (DISK_SIZE - SECTOR, SECTOR),             # the very last sector
]
SLOW = [(2 * MIB, 64 * 1024, 0.05), (5 * MIB + 3 * SECTOR, SECTOR, 0.05)]
FLAKY = [(4 * MIB + 3 * SECTOR, 5 * SECTOR, 2), (6 * MIB + 300 * SECTOR, 2 * SECTOR, 2)]
SI_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


# ---- helpers shared by the functional `rescue image` tests ----------------------------------


def map_blocks(path: Path) -> list[tuple[int, int, str]]:
    """The block lines of a mapfile (comment and status lines dropped), read independently of
    rescue's own parser, so a test never judges rescue by rescue."""
    lines = [line.split("#", 1)[0].split() for line in path.read_text().splitlines()]
    rows = [fields for fields in lines if fields][1:]
    return [(int(pos, 0), int(size, 0), status) for pos, size, status in rows]


def map_status(path: Path) -> tuple[int, str]:
    """(current_pos, current_status) of a mapfile."""
    lines = [line.split("#", 1)[0].split() for line in path.read_text().splitlines()]
    fields = next(fields for fields in lines if fields)
    return int(fields[0], 0), fields[1]


def listed_sectors(mapfile: Path, types: str) -> set[int]:
    """ddrescuelog's list of the 512-byte sectors in the given states."""
    listed = subprocess.run(["ddrescuelog", f"-l{types}", "-b", str(SECTOR), str(mapfile)],
                            check=True, capture_output=True, text=True).stdout
    return {int(line) for line in listed.split()}


def sectors_of(ranges: list[tuple[int, int]]) -> set[int]:
    return {s for start, length, *_ in ranges for s in sectors_touched(start, start + length)}


def mismatched_sectors(image: bytes, original: bytes, skip: set[int]) -> list[int]:
    """Sectors outside `skip` whose bytes differ between the image and the original."""
    return [s for s in range(len(original) // SECTOR) if s not in skip
            and image[s * SECTOR:(s + 1) * SECTOR] != original[s * SECTOR:(s + 1) * SECTOR]]


def ddrescuelog_status(mapfile: Path) -> dict[str, tuple[int, int, int]]:
    """`ddrescuelog -t` as {name: (value, SI unit, areas)}; it exits 0 only for a valid map."""
    shown = subprocess.run(["ddrescuelog", "-t", str(mapfile)], check=True,
                           capture_output=True, text=True).stdout
    found = re.findall(r"^\s*([\w-]+):\s+(\d+) (\w?B),\s+in\s+(\d+) area", shown, re.M)
    return {name: (int(value), SI_UNITS[unit], int(areas))
            for name, value, unit, areas in found}


# ---- the tests -------------------------------------------------------------------------------


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "backing.img"
    make_backing(str(path), DISK_SIZE, seed=11)
    return path


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("direction", [[], ["--reverse"]], ids=["forward", "reverse"])
def test_image_maps_exactly_the_bad_sectors_and_copies_the_rest(
        backing: Path, tmp_path: Path, direction: list[str]) -> None:
    log = tmp_path / "reads.log"
    image, mapfile = tmp_path / "out.img", tmp_path / "out.img.map"
    with faulty_device(str(backing), bad=BAD, slow=SLOW, flaky=FLAKY, log=str(log)) as device:
        result = rescue("image", device, str(image), "--retries", "1", "--json", *direction)
    assert result.returncode == 1, result.stderr
    final = summary(result)
    assert (final["outcome"], final["exit_code"], final["phase"]) == ("unreadable", 1, "finished")

    bad = sectors_of(BAD)
    assert {s for pos, size, state in map_blocks(mapfile) if state == "-"
            for s in range(pos // SECTOR, (pos + size) // SECTOR)} == bad
    assert {state for _, _, state in map_blocks(mapfile)} == {"+", "-"}
    assert listed_sectors(mapfile, "-") == bad
    assert listed_sectors(mapfile, "+") == set(range(DISK_SIZE // SECTOR)) - bad
    assert mismatched_sectors(image.read_bytes(), backing.read_bytes(), skip=bad) == []

    status = ddrescuelog_status(mapfile)
    states = [state for _, _, state in map_blocks(mapfile)]
    for name, exact, state in (("rescued", final["rescued"], "+"),
                               ("bad-sector", final["bad"], "-")):
        value, unit, areas = status[name]
        assert value * unit <= exact < (value + 1) * unit, (name, status[name], exact)
        assert areas == states.count(state)
    assert final["rescued"] == len(listed_sectors(mapfile, "+")) * SECTOR
    assert final["bad"] == len(bad) * SECTOR
    assert status["non-tried"][0] == status["non-trimmed"][0] == status["non-scraped"][0] == 0

    # the flaky sectors failed their two reads and were rescued by a later one
    reads = read_log(str(log))
    failures = sector_reads(reads, ok=False)
    assert all(failures[s] == 2 for s in sectors_of(FLAKY))
    assert sectors_of(FLAKY) <= listed_sectors(mapfile, "+")
    assert sector_reads(reads, ok=True)[SLOW[0][0] // SECTOR] >= 1


@pytest.mark.slow
@pytest.mark.root
def test_copy_passes_read_no_sector_more_than_twice(backing: Path, tmp_path: Path) -> None:
    log = tmp_path / "reads.log"
    image = tmp_path / "out.img"
    with faulty_device(str(backing), bad=BAD, flaky=FLAKY, log=str(log)) as device:
        result = rescue("image", device, str(image), "--no-trim", "--no-scrape", "--json")
    assert result.returncode == 1, result.stderr
    counts = sector_reads(without_kernel_retries(read_log(str(log))))
    assert set(counts) == set(range(DISK_SIZE // SECTOR))
    assert max(counts.values()) <= 2
    mapfile = Path(f"{image}.map")
    assert sectors_of(BAD) <= listed_sectors(mapfile, "*")
    assert listed_sectors(mapfile, "-/?") == set()
    assert summary(result)["non_trimmed"] == len(listed_sectors(mapfile, "*")) * SECTOR
