"""Bad input to `rescue image`: one clear `rescue:` line, the documented exit code, no traceback,
and the job it was aimed at stays valid and resumable."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.faultdisk import is_mounted
from tests.fixtures.judges import ddrescuelog_status, listed_sectors, map_blocks, map_status

MIB = 1 << 20
SOURCE_SIZE = 4 * MIB


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_random(path: Path, size: int, seed: int) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A half-done job in tmp_path: src.bin, out.img and out.img.map with the first half
    rescued (a --domain run), the rest non-tried."""
    write_random(tmp_path / "src.bin", SOURCE_SIZE, seed=1)
    half = SOURCE_SIZE // 2
    (tmp_path / "half.map").write_text(f"0 +\n0 {half:#x} +\n{half:#x} {half:#x} ?\n")
    first = rescue("image", "src.bin", "out.img", "--domain", "half.map", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert listed_sectors(tmp_path / "out.img.map", "?") == set(range(half // 512,
                                                                      SOURCE_SIZE // 512))
    return tmp_path


def make_inputs(folder: Path) -> None:
    """The broken pieces the cases below point at."""
    (folder / "folder").mkdir()
    os.link(folder / "src.bin", folder / "hard-link.bin")
    (folder / "sym-link.bin").symlink_to("src.bin")
    (folder / "bigger.map").write_text(f"0 +\n0 {8 * MIB:#x} +\n")
    (folder / "garbage.map").write_text("this is not a mapfile\nat all\n")
    (folder / "binary.map").write_bytes(random.Random(2).randbytes(600))
    (folder / "gap.map").write_text("0 ? 1\n0 0x1000 +\n0x2000 0x1000 -\n")
    (folder / "overlap.map").write_text("0 ? 1\n0 0x1000 +\n0x800 0x1000 -\n")
    (folder / "bad-state.map").write_text("0 ? 1\n0 0x1000 x\n")
    (folder / "existing.img").write_bytes(b"precious data, not a rescue image\n" * 100)


CASES = [
    ("missing-source", ["nowhere.bin", "out.img"], ExitCode.USAGE, r"nowhere\.bin does not exist"),
    ("directory-source", ["folder", "out.img"], ExitCode.USAGE, r"folder is a directory"),
    ("dest-is-source", ["src.bin", "src.bin"], ExitCode.REFUSED, r"being read"),
    ("dest-hard-link", ["src.bin", "hard-link.bin"], ExitCode.REFUSED, r"being read"),
    ("dest-symlink", ["src.bin", "sym-link.bin"], ExitCode.REFUSED, r"being read"),
    ("dest-folder-missing", ["src.bin", "no/such/dir/out.img"], ExitCode.USAGE,
     r"no/such/dir does not exist"),
    ("map-of-bigger-source", ["src.bin", "out.img", "--map", "bigger.map"], ExitCode.USAGE,
     r"bigger\.map.*different source"),
    ("garbage-map", ["src.bin", "out.img", "--map", "garbage.map"], ExitCode.USAGE,
     r"garbage\.map:1: not a ddrescue mapfile"),
    ("binary-map", ["src.bin", "out.img", "--map", "binary.map"], ExitCode.USAGE,
     r"binary\.map.*binary"),
    ("map-with-gap", ["src.bin", "out.img", "--map", "gap.map"], ExitCode.USAGE,
     r"gap\.map:3: .*gap"),
    ("map-with-overlap", ["src.bin", "out.img", "--map", "overlap.map"], ExitCode.USAGE,
     r"overlap\.map:3: .*overlap"),
    ("map-bad-state", ["src.bin", "out.img", "--map", "bad-state.map"], ExitCode.USAGE,
     r"bad-state\.map:2: not a mapfile block line"),
    ("dest-exists-without-map", ["src.bin", "existing.img"], ExitCode.USAGE, r"--force"),
    ("domain-is-garbage", ["src.bin", "out.img", "--domain", "garbage.map"], ExitCode.USAGE,
     r"garbage\.map:1"),
    ("negative-retries", ["src.bin", "out.img", "--retries", "-1"], ExitCode.USAGE,
     r"--retries"),
]
MAP_IS_DEST = pytest.param(
    ["src.bin", "other.img", "--map", "other.img"], ExitCode.USAGE, r"map", id="map-is-dest")


@pytest.mark.parametrize(("args", "code", "pattern"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES] + [MAP_IS_DEST])
def test_bad_input_fails_cleanly_and_the_job_resumes(job: Path, args: list[str], code: int,
                                                     pattern: str) -> None:
    make_inputs(job)
    files = sorted(p for p in job.rglob("*") if p.is_file() and not p.is_symlink())
    before = {path: digest(path) for path in files}

    assert_clean_failure(rescue("image", *args, cwd=job), code, pattern)

    assert {path: digest(path) for path in files} == before
    leftovers = {p.name for p in job.rglob("*")} - {p.name for p in files} - {
        "folder", "sym-link.bin"}
    assert leftovers == set()

    resumed = rescue("image", "src.bin", "out.img", cwd=job)
    assert resumed.returncode == 0, resumed.stderr
    assert (job / "out.img").read_bytes() == (job / "src.bin").read_bytes()
    assert map_blocks(job / "out.img.map") == [(0, SOURCE_SIZE, "+")]


def test_existing_dest_is_overwritten_with_force(job: Path) -> None:
    make_inputs(job)
    result = rescue("image", "src.bin", "existing.img", "--force", cwd=job)
    assert result.returncode == 0, result.stderr
    assert (job / "existing.img").read_bytes() == (job / "src.bin").read_bytes()


# ---- a destination that fills up --------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Callable[[str], None]]:
    """Mount a tmpfs of `size`; yields a function that resizes it. Always unmounted."""
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                   check=True, capture_output=True)

    def resize(new_size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(mountpoint)],
                       check=True, capture_output=True)

    try:
        yield resize
    finally:
        for _ in range(20):
            if not is_mounted(str(mountpoint)):
                break
            subprocess.run(["umount", str(mountpoint)], capture_output=True)


@pytest.fixture
def full_destination(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """8 MiB of random data to image into a 1 MiB file system."""
    write_random(tmp_path / "src.bin", 8 * MIB, seed=3)
    with small_tmpfs(tmp_path / "small", "1M") as resize:
        yield tmp_path, resize


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("map_inside", [True, False], ids=["map-on-full-fs", "map-elsewhere"])
def test_full_destination_stops_and_resumes_after_freeing_space(
        full_destination: tuple[Path, Callable[[str], None]], map_inside: bool) -> None:
    folder, resize = full_destination
    image = folder / "small" / "out.img"
    mapfile = folder / "small" / "out.img.map" if map_inside else folder / "out.map"
    command = ["image", "src.bin", str(image), "--map", str(mapfile), "--checkpoint", "0.2"]
    assert rescue(*command, cwd=folder).returncode != 0

    ddrescuelog_status(mapfile)  # raises unless ddrescuelog accepts the map
    source, data = (folder / "src.bin").read_bytes(), image.read_bytes()
    claimed = [(pos, size) for pos, size, state in map_blocks(mapfile) if state == "+"]
    assert all(data[pos:pos + size] == source[pos:pos + size] for pos, size in claimed)
    assert map_status(mapfile)[1] != "+"

    resize("16M")
    resumed = rescue(*command, cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    assert image.read_bytes() == source
    assert map_blocks(mapfile) == [(0, 8 * MIB, "+")]


@pytest.mark.slow
@pytest.mark.root
def test_full_destination_is_one_line_and_exit_3(
        full_destination: tuple[Path, Callable[[str], None]]) -> None:
    folder, _ = full_destination
    result = rescue("image", "src.bin", "small/out.img", "--checkpoint", "0.2", cwd=folder)
    assert_clean_failure(result, ExitCode.DESTINATION, r"small/out\.img.*No space left")


# ---- option values -----------------------------------------------------------------------------

def assert_usage_error(result: subprocess.CompletedProcess[str], option: str) -> None:
    """What argparse says of a value it cannot read: one `rescue:` line naming the option,
    exit 2, as for every option value of every command; never a traceback."""
    assert_clean_failure(result, ExitCode.USAGE, rf"argument {option}\b")


UNREADABLE_VALUES = [
    ("image", "--cluster-size", "foo"), ("image", "--skip-size", "-5"),
    ("image", "--max-skip-size", "1Q"), ("image", "--min-read-rate", "-1"),
    ("image", "--retries", "foo"), ("image", "--timeout", "soon"),
    ("image", "--checkpoint", "x"), ("image", "--level", "high"),
    ("convert", "--level", "x"),
    ("restore", "--checkpoint", "x"), ("restore", "--partition", "two"),
    ("image", "--threads", "many"), ("convert", "--threads", "1.5"),
    ("restore", "--threads", "two"),
]


@pytest.mark.parametrize(("command", "option", "value"), UNREADABLE_VALUES)
def test_an_unreadable_option_value_is_a_usage_error(tmp_path: Path, command: str, option: str,
                                                     value: str) -> None:
    operands = {"image": ["/dev/null", "x.img"], "convert": ["s.img", "o.qcow2"],
                "restore": ["s.img", "/dev/null"]}[command]
    assert_usage_error(rescue(command, *operands, f"{option}={value}", cwd=tmp_path), option)
    assert list(tmp_path.iterdir()) == []


MISTYPED = [
    (["imgae", "x", "y"], r"unknown command 'imgae'.*did you mean 'image'"),
    (["--bogus"], r"unrecognized arguments: --bogus.*rescue --help"),
    (["image", "/dev/null", "x.img", "--retires", "2"],
     r"unrecognized arguments: --retires.*did you mean --retries.*rescue image --help"),
    (["image", "/dev/null"], r"required: dest.*rescue image --help"),
    (["info"], r"required: image.*rescue info --help"),
    # a mistyped option is named, not the operands argparse then missed
    (["image", "--bogus"], r"unrecognized arguments: --bogus.*rescue image --help"),
    (["image", "/dev/null", "--retires", "2"],
     r"unrecognized arguments: --retires.*did you mean --retries"),
    (["info", "--jsn"], r"unrecognized arguments: --jsn.*did you mean --json"),
    (["restore", "x.img", "--fore"], r"unrecognized arguments: --fore.*did you mean --force"),
]


@pytest.mark.parametrize(("args", "pattern"), MISTYPED)
def test_a_mistyped_command_line_is_one_line_with_a_hint(tmp_path: Path, args: list[str],
                                                          pattern: str) -> None:
    """A mistyped command or option is one `rescue:` line naming it and saying where to look,
    exit 2: not argparse's usage block."""
    assert_clean_failure(rescue(*args, cwd=tmp_path), ExitCode.USAGE, pattern)
    assert list(tmp_path.iterdir()) == []


REFUSED_VALUES = [
    ("image", ["--timeout", "0"], r"the timeout must be at least 1"),
    ("image", ["--timeout=-3"], r"the timeout must be at least 1"),
    ("image", ["--checkpoint=-1"], r"--checkpoint must not be negative"),
    ("image", ["--skip-size", "100"], r"--skip-size must be at least 512"),
    ("image", ["--max-skip-size", "4k"], r"--max-skip-size must be at least --skip-size"),
    ("image", ["--cluster-size", "1000"], r"--cluster-size must be a multiple of 512"),
    ("image", ["--format", "qcow2", "--level", "0"], r"the level must be between 1 and 19"),
    ("convert", ["--level", "99"], r"the level must be between 1 and 19"),
    ("restore", ["--checkpoint=-1"], r"--checkpoint must not be negative"),
    ("image", ["--threads", "0"], r"--threads must be between 1 and 256, got 0"),
    ("image", ["--threads=-2"], r"--threads must be between 1 and 256, got -2"),
    ("convert", ["--threads", "0"], r"--threads must be between 1 and 256, got 0"),
    ("convert", ["--threads", "257"], r"--threads must be between 1 and 256, got 257"),
    ("restore", ["--threads", "0"], r"--threads must be between 1 and 256, got 0"),
    ("restore", ["--layout", "2=lots"], r"--layout '2=lots': 'lots' is not a size"),
    ("restore", ["--layout", "2=0%"], r"a percentage is over 0 and at most 100"),
    ("restore", ["--layout", "2=rest", "--layout", "3=rest"], r"only one partition can take"),
    ("restore", ["--layout", "2=10G"], r"--layout needs a whole-disk image with a partition"),
]


@pytest.mark.parametrize(("command", "options", "pattern"), REFUSED_VALUES)
def test_an_option_value_no_job_could_use_is_one_line(tmp_path: Path, command: str,
                                                      options: list[str], pattern: str) -> None:
    write_random(tmp_path / "src.img", 64 * 1024, seed=3)
    dest = {"image": "out.img", "convert": "out.img.zst", "restore": "/dev/null"}[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_failure(rescue(command, "src.img", dest, *options, cwd=tmp_path),
                         ExitCode.USAGE, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_raw_image_takes_any_level(tmp_path: Path) -> None:
    """A raw image compresses nothing: the level is not its business."""
    write_random(tmp_path / "src.img", 64 * 1024, seed=4)
    done = rescue("image", "src.img", "out.img", "--level", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = rescue("convert", "src.img", "copy.img", "--level", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "copy.img").read_bytes() == (tmp_path / "src.img").read_bytes()


# ---- --timeout --------------------------------------------------------------------------------

SPEC = "sim:size=4M,seed=8,bad=2M+256k"


@pytest.mark.slow
def test_timeout_stops_with_a_valid_map_and_the_job_resumes(tmp_path: Path) -> None:
    """Scraping 510 bad sectors at 5 ms each reads nothing good for 2.5 seconds: --timeout 1
    (the shortest there is) stops there."""
    slow_spec = f"{SPEC},slow=2M+256k@0.005"
    stopped = rescue("image", slow_spec, "out.img", "--timeout", "1", "--checkpoint", "0.2",
                     cwd=tmp_path)
    assert stopped.returncode == ExitCode.TIMEOUT, stopped.stderr
    assert "Traceback" not in stopped.stderr
    mapfile = tmp_path / "out.img.map"
    assert ddrescuelog_status(mapfile)["non-scraped"][0] > 0
    assert map_status(mapfile)[1] == "/"

    resumed = rescue("image", slow_spec, "out.img", cwd=tmp_path)
    reference = rescue("image", SPEC, "reference.img", cwd=tmp_path)
    assert (resumed.returncode, reference.returncode) == (1, 1), resumed.stderr
    assert map_blocks(mapfile) == map_blocks(tmp_path / "reference.img.map")
    assert (tmp_path / "out.img").read_bytes() == (tmp_path / "reference.img").read_bytes()
