"""Resume only from the same source: an image and map of disk A, continued with disk B of the
same size (loop devices or files alike), with A seen through other sector sizes, or from a
GNU ddrescue map that records no identity, is refused with one line and left untouched."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from rescue.formats import mapfile
from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.faultdisk import make_backing
from tests.fixtures.loop import detach, loop_device

SIZE = 32 << 20

pytestmark = [pytest.mark.slow, pytest.mark.root]


def state(*paths: Path) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]


@pytest.fixture
def backings(tmp_path: Path) -> tuple[str, str]:
    """Two disks' contents of one size."""
    first, second = str(tmp_path / "a.bin"), str(tmp_path / "b.bin")
    make_backing(first, SIZE, seed=1)
    make_backing(second, SIZE, seed=2)
    return first, second


@pytest.fixture(params=["loop", "file"])
def sources(request: pytest.FixtureRequest, backings: tuple[str, str]) -> Iterator[list[str]]:
    if request.param == "file":
        yield list(backings)
        return
    with ExitStack() as stack:
        yield [stack.enter_context(loop_device(backing)) for backing in backings]


@pytest.mark.parametrize("partial", [False, True], ids=["complete", "partial"])
def test_resuming_with_another_source_of_the_same_size_is_refused(
        sources: list[str], tmp_path: Path, partial: bool) -> None:
    first, second = sources
    image, map_path = tmp_path / "a.qcow2", tmp_path / "a.qcow2.map"
    if partial:  # a map with half rescued and half never tried
        domain = tmp_path / "half.map"
        domain.write_text(f"0 +\n0 {SIZE // 2:#x} +\n{SIZE // 2:#x} {SIZE // 2:#x} ?\n")
        done = rescue("image", first, str(image), "--domain", str(domain))
    else:
        done = rescue("image", first, str(image))
    assert done.returncode == ExitCode.OK, done.stderr
    assert subprocess.run(["ddrescuelog", "-t", str(map_path)], capture_output=True,
                          text=True).returncode == 0  # the identity line is a comment to it
    before = state(image, map_path)
    resumed = rescue("image", second, str(image))
    assert_clean_failure(resumed, ExitCode.REFUSED,
                         rf"{second} is not the source of {image}: its bytes at 0x\w+ differ")
    assert state(image, map_path) == before
    again = rescue("image", first, str(image))  # the right source still continues
    assert again.returncode == ExitCode.OK, again.stderr
    assert mapfile.load(str(map_path)).rmap.totals()["+"] == SIZE


def attach(backing: str, sector_size: int) -> str:
    return subprocess.run(["losetup", "-f", "--show", "-b", str(sector_size), backing],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_the_same_bytes_with_another_sector_size_is_refused(backings: tuple[str, str],
                                                            tmp_path: Path) -> None:
    image, map_path = tmp_path / "a.img", tmp_path / "a.img.map"
    with ExitStack() as stack:
        small, large = (attach(backings[0], size) for size in (512, 4096))
        stack.callback(detach, small)
        stack.callback(detach, large)
        assert rescue("image", small, str(image)).returncode == ExitCode.OK
        before = state(image, map_path)
        resumed = rescue("image", large, str(image))
        assert_clean_failure(resumed, ExitCode.REFUSED,
                             rf"{large} is not the source of {map_path} "
                             r"\(logical_sector_size 512 recorded, 4096 now\)")
        assert state(image, map_path) == before


def test_a_ddrescue_map_continues_from_its_own_source_only(backings: tuple[str, str],
                                                          tmp_path: Path) -> None:
    first, second = backings
    image, map_path = tmp_path / "a.img", tmp_path / "ddrescue.map"
    subprocess.run(["ddrescue", "-s", "8MiB", first, str(image), str(map_path)], check=True,
                   capture_output=True)
    before = state(image, map_path)
    resumed = rescue("image", second, str(image), "--map", str(map_path))
    assert_clean_failure(resumed, ExitCode.REFUSED, rf"{second} is not the source of {image}")
    assert state(image, map_path) == before
    assert mapfile.load(str(map_path)).source is None
    taken_over = rescue("image", first, str(image), "--map", str(map_path))
    assert taken_over.returncode == ExitCode.OK, taken_over.stderr
    assert image.read_bytes() == Path(first).read_bytes()
    assert mapfile.load(str(map_path)).source == {
        "size": SIZE, "logical_sector_size": 512, "physical_sector_size": 512,
        "model": None, "serial": None}
