"""A `sim:` spec is user input (the demo, `rescue image sim:...`): every malformed setting is
refused with one `rescue:` line, never a traceback or a disk that misbehaves silently."""

from pathlib import Path

import pytest

from rescue.errors import UsageError
from rescue.sim.faulty import FaultySpec
from rescue.units import parse_size
from tests.fixtures.cli import assert_clean_failure, rescue

MALFORMED = [
    "sim:size=1M,bad=-1+512",      # a negative position
    "sim:size=1M,bad=0+0",         # an empty range
    "sim:size=1M,bad=0",           # no length
    "sim:size=1M,slow=0+512@-1",   # a negative delay
    "sim:size=1M,slow=0+512@nan",  # not a number
    "sim:size=1M,flaky=0+512*0",   # fails zero times
    "sim:size=1M,flaky=0+512*x",
    "sim:size=1M,gone=-5",
    "sim:size=1M,rate=-1",
    "sim:size=1M,seed=x",
    "sim:size=infM",
    "sim:size=0",
    "sim:size=1M,colour=red",
    "sim:bad=0+512",               # no size
]


@pytest.mark.parametrize("spec", MALFORMED)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        FaultySpec.parse(spec)


def test_a_well_formed_spec_reads_as_written() -> None:
    spec = FaultySpec.parse("sim:size=1M,bad=4k+512,slow=8k+1k@0.5,flaky=16k+512*3,seed=4,"
                            "gone=512k,rate=2M")
    assert (spec.size, spec.bad, spec.slow, spec.flaky) == (
        1 << 20, [(4096, 512, 0.0)], [(8192, 1024, 0.5)], [(16384, 512, 3.0)])
    assert (spec.seed, spec.gone, spec.rate) == (4, 512 << 10, 2 << 20)


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("0x1000", 4096), ("64k", 65536),
                                            ("1.5M", 3 << 19), ("0", 0)])
def test_sizes_read_as_users_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_the_cli_refuses_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    done = rescue("image", "sim:size=1M,seed=x", tmp_path / "out.img")
    assert_clean_failure(done, 2, "seed")
    assert not (tmp_path / "out.img").exists()
