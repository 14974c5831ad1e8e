"""`rescue image` of a real block device with real read errors, judged by GNU ddrescuelog.

The device is /dev/loopN over a FUSE file that answers EIO, stalls or fails a few times exactly
where told (tests/fixtures/faultdisk.py); the FUSE process logs every read it serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.sim.faulty import FaultySpec
from tests.fixtures.cli import rescue, summary
from tests.fixtures.faultdisk import (
    SECTOR,
    faulty_device,
    make_backing,
    read_log,
    sector_reads,
    without_kernel_retries,
)
from tests.fixtures.image_disk import BAD, DISK_SIZE, IMAGE_DISK
from tests.fixtures.judges import (
    ddrescuelog_status,
    listed_sectors,
    map_blocks,
    mismatched_sectors,
    sectors_of,
)

# in sectors: 2 MiB, 128 long; 5 MiB + 3, 1 long (right after a bad area)
SLOW_SPEC = "slow=2M+64k@0.05,slow=0x500600+512@0.05"
# in sectors: 4 MiB + 3, 5 long; 6 MiB + 300, 2 long (36 sectors after a bad area)
FLAKY_SPEC = "flaky=0x400600+0xa00*2,flaky=0x625800+0x400*2"
SLOW = FaultySpec.parse(f"{IMAGE_DISK},{SLOW_SPEC}").slow
FLAKY = FaultySpec.parse(f"{IMAGE_DISK},{FLAKY_SPEC}").flaky



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
    with faulty_device(str(backing), f"{IMAGE_DISK},{SLOW_SPEC},{FLAKY_SPEC}",
                       log=str(log)) as device:
        # two retry passes: a flaky sector past the failing point of a large failed read was
        # never reached by that read, so it may come to the retries with one read fewer
        result = rescue("image", device, str(image), "--retries", "2", "--json", *direction)
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
    with faulty_device(str(backing), f"{IMAGE_DISK},{FLAKY_SPEC}", log=str(log)) as device:
        result = rescue("image", device, str(image), "--no-trim", "--no-scrape", "--json")
    assert result.returncode == 1, result.stderr
    counts = sector_reads(without_kernel_retries(read_log(str(log))))
    assert set(counts) == set(range(DISK_SIZE // SECTOR))
    assert max(counts.values()) <= 2
    mapfile = Path(f"{image}.map")
    assert sectors_of(BAD) <= listed_sectors(mapfile, "*")
    assert listed_sectors(mapfile, "-/?") == set()
    assert summary(result)["non_trimmed"] == len(listed_sectors(mapfile, "*")) * SECTOR


def test_json_summary_counts_time_since_the_last_good_read_while_running(
        tmp_path: Path) -> None:
    """A bad area at the very end, slow to fail: the last good read came before it, so the
    summary's time since it is shorter than the job, not the whole job."""
    bad = "4032k+64k"
    result = rescue("image", f"sim:size=4M,rate=8M,bad={bad},slow={bad}@0.005",
                    str(tmp_path / "out.img"), "--json")
    assert result.returncode == 1, result.stderr
    final = summary(result)
    assert final["phase"] == "finished" and final["eta"] is None
    assert 0 < final["since_last_good"] < final["elapsed"]
