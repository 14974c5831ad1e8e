"""The fault device is a real block device: ddrescue, the judge, must see exactly its faults."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import time
from pathlib import Path

import pytest

from rescue.sim.faulty import FaultySource
from tests.fixtures.faultdisk import (
    SECTOR,
    faulty_device,
    is_mounted,
    make_backing,
    parse_args,
    read_log,
    sector_reads,
)
from tests.fixtures.judges import listed_sectors, mismatched_sectors, sectors_of

MIB = 1 << 20
DISK_SIZE = 8 * MIB


def ddrescue(device: str, workdir: Path, *options: str) -> tuple[Path, Path]:
    image, mapfile = workdir / "out.img", workdir / "out.map"
    subprocess.run(["ddrescue", "-d", "-b", str(SECTOR), *options, device, str(image),
                    str(mapfile)], check=True, capture_output=True)
    return image, mapfile


def read_sector(fd: int, sector: int) -> bytes:
    """One O_DIRECT sector read; the aligned buffer comes from mmap."""
    with mmap.mmap(-1, SECTOR) as buffer:
        assert os.preadv(fd, [buffer], sector * SECTOR) == SECTOR
        return bytes(buffer)


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "backing.img"
    make_backing(str(path), DISK_SIZE, seed=7)
    return path


def test_fault_specs_accept_decimal_and_hex() -> None:
    """The fault disk reads rescue's own `sim:` spec."""
    args = parse_args(["b", "m", "sim:size=8M,bad=0x100000+512,slow=4096+0x200@0.25,"
                                 "flaky=0+1024*3,bad=10+20"])
    assert [(start, length) for start, length, _ in args.faults.bad] == [(0x100000, 512),
                                                                         (10, 20)]
    assert args.faults.slow == [(4096, 512, 0.25)]
    assert args.faults.flaky == [(0, 1024, 3)]


def test_a_seed_is_taken_only_where_it_places_sectors() -> None:
    """Over a backing file the seed cannot change the bytes; it places scattered and weak
    sectors, as on the simulated disk."""
    args = parse_args(["b", "m", "sim:size=8M,scatter=3,weak=0+64k,seed=2"])
    assert (args.faults.seed, args.faults.scatter) == (2, [(3, 0, 8 * MIB)])
    with pytest.raises(SystemExit):
        parse_args(["b", "m", "sim:size=8M,bad=0+512,seed=2"])


@pytest.mark.parametrize("spec", ["1+2+3", "x+512", "0+0", "-1+512"])
def test_fault_specs_reject_malformed_ranges(spec: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["b", "m", f"sim:size=8M,bad={spec}"])


@pytest.mark.slow
@pytest.mark.root
def test_direct_reads_fail_exactly_at_bad_sectors(backing: Path, tmp_path: Path) -> None:
    """A 512-byte O_DIRECT read of the loop device reaches FUSE: the bad sector fails alone."""
    data = backing.read_bytes()
    bad, slow = 2048, 4096
    log = tmp_path / "reads.log"
    with faulty_device(str(backing), f"sim:bad={bad * SECTOR}+{SECTOR},"
                                     f"slow={slow * SECTOR}+{SECTOR}@0.2", log=str(log)) as device:
        name = os.path.basename(device)
        assert Path(f"/sys/block/{name}/loop/dio").read_text().strip() == "1"
        assert Path(f"/sys/block/{name}/queue/logical_block_size").read_text().strip() == "512"
        fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
        try:
            for sector in (bad - 1, bad + 1):
                assert read_sector(fd, sector) == data[sector * SECTOR:(sector + 1) * SECTOR]
            for _ in range(2):
                with pytest.raises(OSError) as failure:
                    read_sector(fd, bad)
                assert failure.value.errno == errno.EIO
            started = time.monotonic()
            assert read_sector(fd, slow) == data[slow * SECTOR:(slow + 1) * SECTOR]
            assert time.monotonic() - started >= 0.2
        finally:
            os.close(fd)
    reads = read_log(str(log))
    assert sector_reads(reads, ok=False)[bad] == 2
    assert sector_reads(reads, ok=True)[bad - 1] >= 1
    assert sector_reads(reads, ok=True)[slow] >= 1


@pytest.mark.slow
@pytest.mark.root
def test_ddrescue_maps_exactly_the_bad_ranges(backing: Path, tmp_path: Path) -> None:
    bad = [
        (1 * MIB, SECTOR),                       # one lone sector
        (3 * MIB + 7 * SECTOR, 13 * SECTOR),     # odd-sized run, not 4 KiB aligned
        (5 * MIB - 3 * SECTOR, 6 * SECTOR),      # straddles a 64 KiB cluster boundary
        (DISK_SIZE - SECTOR, SECTOR),            # the very last sector
    ]
    log = tmp_path / "reads.log"
    spec = "sim:" + ",".join(f"bad={start}+{length}" for start, length in bad)
    with faulty_device(str(backing), spec, log=str(log)) as device:
        image, mapfile = ddrescue(device, tmp_path)
    expected_bad = sectors_of(bad)
    assert listed_sectors(mapfile, "-") == expected_bad
    assert expected_bad <= set(sector_reads(read_log(str(log)), ok=False))

    original, rescued = backing.read_bytes(), image.read_bytes()
    good = [sector for sector in range(DISK_SIZE // SECTOR) if sector not in expected_bad]
    mismatched = [sector for sector in good
                  if rescued[sector * SECTOR:(sector + 1) * SECTOR]
                  != original[sector * SECTOR:(sector + 1) * SECTOR]]
    assert mismatched == []


@pytest.mark.slow
@pytest.mark.root
def test_flaky_sectors_are_rescued_by_retries(backing: Path, tmp_path: Path) -> None:
    times = 2
    flaky = (2 * MIB + 3 * SECTOR, 5 * SECTOR, times)
    log = tmp_path / "reads.log"
    with faulty_device(str(backing), "sim:flaky={}+{}*{}".format(*flaky), log=str(log)
                       ) as device:
        image, mapfile = ddrescue(device, tmp_path, "-r3")
    assert listed_sectors(mapfile, "-") == set()
    assert image.read_bytes() == backing.read_bytes()

    reads = read_log(str(log))
    failures = sector_reads(reads, ok=False)
    for sector in sectors_of([flaky[:2]]):
        assert failures[sector] >= 1
        assert sector_reads(reads)[sector] > times


def fuse_processes(mountpoint: str) -> list[int]:
    """PIDs whose command line names `mountpoint` (read from /proc, changes nothing)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if mountpoint.encode() in arguments:
                pids.append(int(entry.name))
    return pids


def served_file(device: str) -> str:
    """The FUSE file behind `device`, after checking its mount and process are live."""
    disk = Path(f"/sys/block/{os.path.basename(device)}/loop/backing_file").read_text().strip()
    mountpoint = os.path.dirname(disk)
    assert is_mounted(mountpoint)
    assert fuse_processes(mountpoint)
    return disk


def assert_gone(disk: str) -> None:
    mountpoint = os.path.dirname(disk)
    attached = subprocess.run(["losetup", "-a"], check=True, capture_output=True,
                              text=True).stdout
    assert disk not in attached
    assert not is_mounted(mountpoint)
    assert fuse_processes(mountpoint) == []
    assert not os.path.exists(os.path.dirname(mountpoint))


@pytest.mark.slow
@pytest.mark.root
def test_cleans_up_after_exit_and_after_an_exception(backing: Path) -> None:
    """Devices used one after another: nothing may outlive either, however the body ends."""
    with faulty_device(str(backing), f"sim:bad=0+{SECTOR}") as device:
        first = served_file(device)
    assert_gone(first)

    with pytest.raises(RuntimeError, match="body failed"), \
            faulty_device(str(backing), f"sim:bad=0+{SECTOR}") as device:
        second = served_file(device)
        raise RuntimeError("body failed")
    assert_gone(second)


@pytest.mark.slow
@pytest.mark.root
def test_ddrescue_finds_exactly_a_dead_heads_bands_and_a_scratch(backing: Path,
                                                                 tmp_path: Path) -> None:
    """The failure patterns on a real block device: ddrescue maps the simulated disk's own
    truth, sector for sector, and rescues the weak zone's sectors by retrying them."""
    patterns = ("head=5/8,zones=4,band=32k-8k,scratch=1000000+2k/700k*6,scatter=9,"
                "weak=6M+256k@0,seed=3")
    truth = FaultySource(f"sim:size={DISK_SIZE},{patterns}")
    bad = truth.bad_sectors()
    assert len(truth.bad_ranges()) > 50
    log = tmp_path / "reads.log"
    with faulty_device(str(backing), f"sim:{patterns}", log=str(log)) as device:
        image, mapfile = ddrescue(device, tmp_path, "-r2")
    assert listed_sectors(mapfile, "-") == bad
    assert mismatched_sectors(image.read_bytes(), backing.read_bytes(), bad) == []
    weak = range(6 * MIB // SECTOR, (6 * MIB + 256 * 1024) // SECTOR)
    retried = {s for s, times in sector_reads(read_log(str(log)), ok=False).items()
               if s in weak}
    assert len(retried) >= 256 * 1024 // SECTOR // 16  # one in 16 failed before it read
