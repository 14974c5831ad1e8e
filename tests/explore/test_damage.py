"""A file over bad sectors: imaged from a device with real read errors, then extracted with
the holes zero-filled and a report that names exactly the lost byte ranges."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rescue.explore.damage import Run, lost_ranges
from rescue.explore.extract import extract
from rescue.explore.readers import open_filesystem
from rescue.explore.volumes import read_layout
from rescue.formats.base import DamagedData
from rescue.formats.qcow2 import Qcow2Reader
from rescue.rangemap import RangeMap
from tests.fixtures.cli import rescue
from tests.fixtures.explore import ext4_blocks, make_ext4
from tests.fixtures.faultdisk import faulty_device

BLOCK = 4096
BAD_IN_BLOCK = (1024, 2048)  # sectors 2 and 3 of the file's third block fail to read


@pytest.mark.slow
@pytest.mark.root
def test_file_over_bad_sectors_is_extracted_with_a_report(tmp_path: Path) -> None:
    content = os.urandom(64 * BLOCK)
    backing = tmp_path / "fs.img"
    make_ext4({"big.bin": content, "intact.txt": b"fine\n"}, backing, size=16 << 20,
              block=BLOCK)
    blocks = ext4_blocks(backing, "big.bin")  # debugfs is the judge of where the file lives
    bad_start = blocks[2] * BLOCK + BAD_IN_BLOCK[0]
    bad_length = BAD_IN_BLOCK[1] - BAD_IN_BLOCK[0]
    image = tmp_path / "fs.qcow2"
    with faulty_device(str(backing), f"sim:bad={bad_start}+{bad_length}") as device:
        imaging = rescue("image", device, image)
    assert imaging.returncode == 1, imaging.stderr  # finished with unreadable sectors

    listing = rescue("ls", image, "/")
    assert listing.returncode == 0, listing.stderr
    flags = {line.split()[-1]: line[0] for line in listing.stdout.splitlines()}
    assert flags["big.bin"] == "!" and flags["intact.txt"] == " "

    report_path = tmp_path / "report.json"
    result = rescue("extract", image, "/", tmp_path / "out", "--report", report_path)
    assert result.returncode == 1, result.stderr
    lost_at = 2 * BLOCK + BAD_IN_BLOCK[0]
    expected_span = (lost_at, lost_at + bad_length)
    report = json.loads(report_path.read_text())
    assert report["damaged"] == [{"path": "/big.bin", "lost": [list(expected_span)],
                                  "lost_bytes": bad_length}]
    assert f"DAMAGED  /big.bin: {bad_length} bytes lost (zero-filled) at bytes " \
           f"{expected_span[0]}-{expected_span[1]}" in result.stdout
    extracted = (tmp_path / "out" / "big.bin").read_bytes()
    hole = bytes(bad_length)
    assert extracted == content[:lost_at] + hole + content[lost_at + bad_length:]
    assert (tmp_path / "out" / "intact.txt").read_bytes() == b"fine\n"


def test_lost_ranges_maps_image_damage_back_to_file_offsets() -> None:
    rmap = RangeMap.from_areas(10_000, [(0, 1000, "+"), (1000, 100, "-"), (1100, 900, "+"),
                                        (2000, 50, "?"), (2050, 7950, "+")])
    runs = [Run(0, 500, 1000), Run(1000, 1900, 500)]  # file bytes 0-1000 at 500, then at 1900
    assert lost_ranges(runs, rmap) == ((500, 600), (1100, 1150))
    assert lost_ranges(runs, None) == ()
    assert lost_ranges([Run(0, 3000, 100)], rmap) == ()


class FailingReader:
    """An image reader with one damaged block, as a corrupt compressed cluster is: every
    read that touches it raises DamagedData."""

    def __init__(self, path: Path, damaged: int) -> None:
        self.data = path.read_bytes()
        self.size = len(self.data)
        self.damaged = damaged

    def read(self, offset: int, length: int) -> bytes:
        if offset < self.damaged + BLOCK and offset + length > self.damaged:
            raise DamagedData(offset, length, f"damaged compressed cluster at {offset}")
        return self.data[offset:offset + length]


def test_an_image_that_fails_to_read_skips_the_file_and_says_so(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    make_ext4({"big.bin": os.urandom(64 * BLOCK)}, image, size=8 << 20, block=BLOCK)
    blocks = ext4_blocks(image, "big.bin")
    reader = FailingReader(image, blocks[60] * BLOCK)  # far from what opening reads
    volume = read_layout(reader).volumes[0]
    fs = open_filesystem(reader, volume, None)
    report = extract(fs, fs.lookup("/"), str(tmp_path / "out"))
    assert [path for path, _ in report.missing] == ["/big.bin"]
    assert "cannot read /big.bin" in report.missing[0][1]
    assert not (tmp_path / "out" / "big.bin").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["lost+found"]


def test_a_damaged_cluster_where_the_file_system_starts_lists_the_volume_as_unknown(
        gpt_ext4_qcow2: Path, tmp_path: Path) -> None:
    image = tmp_path / "damaged.qcow2"
    shutil.copyfile(gpt_ext4_qcow2, image)
    with Qcow2Reader(str(image)) as reader:
        start = read_layout(reader).volumes[0].start
        cluster = reader.cluster_size
        host, length = reader._geometry.compressed_range(reader._entry((start + 1024) // cluster))
    with open(image, "r+b") as file:  # the cluster holding the ext superblock
        file.seek(host + length // 2)
        file.write(b"\xff\x00\xff\x00")
    listing = rescue("ls", image)
    assert listing.returncode != 2, listing.stderr
    assert listing.stdout.split()[:1] == ["1"] and "unknown" in listing.stdout
