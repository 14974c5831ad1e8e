"""`rescue sim-map`: a simulated disk's truth as a GNU ddrescue mapfile, judged by ddrescuelog,
and read back by `ddrescue --test-mode`, which must fail exactly where the simulated disk does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rescue.sim.faulty import SECTOR, FaultySource, content
from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.judges import ddrescuelog_status, listed_sectors, mismatched_sectors

# The first two end in a readable sector: in test mode ddrescue ends its map before a bad end
MODELS = [
    "sim:size=8M,head=1/4,zones=4,band=64k-16k,scratch=5000000+4k/300k*4,scatter=20",
    "sim:size=6M,head=1/3,head=2/3,zones=3,bad=100+1000,seed=9,scatter=7@1M+1M",
    "sim:size=4195840,zones=5,head=1/2,band=40k",
]


@pytest.mark.parametrize("spec", MODELS)
def test_ddrescuelog_reads_the_truth_sector_for_sector(tmp_path: Path, spec: str) -> None:
    out = tmp_path / "truth.map"
    done = rescue("sim-map", spec, out)
    assert done.returncode == 0, done.stderr
    source = FaultySource(spec)
    assert listed_sectors(out, "-") == source.bad_sectors()
    assert listed_sectors(out, "+") | source.bad_sectors() == \
        set(range(-(-source.size // SECTOR)))
    totals = ddrescuelog_status(out)
    assert totals["bad-sector"][2] == len(source.bad_ranges())
    assert totals["non-tried"][0] == totals["non-trimmed"][0] == totals["non-scraped"][0] == 0


def test_a_terabyte_model_maps_a_quarter_bad_in_its_bands(tmp_path: Path) -> None:
    out = tmp_path / "truth.map"
    assert rescue("sim-map", "sim:size=1T,head=1/4", out).returncode == 0
    source = FaultySource("sim:size=1T,head=1/4")
    value, unit, areas = ddrescuelog_status(out)["bad-sector"]
    bad = sum(length for _, length in source.bad_ranges())
    assert (value, areas) == (bad // unit, len(source.bad_ranges()))
    assert bad == (1 << 40) - source.tally.good_bytes
    assert 0.24 < bad / (1 << 40) < 0.26


@pytest.mark.parametrize("spec", MODELS[:2])
def test_ddrescue_in_test_mode_fails_exactly_where_the_model_does(tmp_path: Path,
                                                                   spec: str) -> None:
    truth, infile = tmp_path / "truth.map", tmp_path / "disk.img"
    assert rescue("sim-map", spec, truth).returncode == 0
    source = FaultySource(spec)
    original = content(0, source.size)
    infile.write_bytes(original)
    image, mapfile = tmp_path / "out.img", tmp_path / "out.map"
    subprocess.run(["ddrescue", f"--test-mode={truth}", "-b", str(SECTOR), str(infile),
                    str(image), str(mapfile)], check=True, capture_output=True)
    bad = source.bad_sectors()
    assert listed_sectors(mapfile, "-") == bad
    assert mismatched_sectors(image.read_bytes(), original, bad) == []


@pytest.mark.parametrize(("args", "says"), [
    (["size=1M"], "must start with sim:"),
    (["sim:size=1M,head=2/2"], "heads are numbered 0 to 1"),
    (["sim:size=1M,scratch=0+4k/1k*2"], "overlap"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    done = rescue("sim-map", *args, tmp_path / "out.map")
    assert_clean_failure(done, 2, says)
    assert not (tmp_path / "out.map").exists()


def test_an_existing_map_is_kept_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "out.map"
    out.write_text("mine\n")
    assert_clean_failure(rescue("sim-map", "sim:size=1M", out), 2, "--force")
    assert out.read_text() == "mine\n"
    assert rescue("sim-map", "sim:size=1M,bad=0+512", out, "--force").returncode == 0
    assert listed_sectors(out, "-") == {0}


def test_a_map_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    done = rescue("sim-map", "sim:size=1M", tmp_path / "missing" / "out.map")
    assert_clean_failure(done, 3, "cannot write .*out.map: No such file")
