"""`rescue image --first` on FAT and exFAT: one folder name in both partitions of a GPT disk
(their names ignore case), into a qcow2 image, judged by mtools and exfat-fuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.formats.raw import RawReader
from rescue.fs.chosen import FirstPath, resolve
from rescue.rangemap import FINISHED, RangeMap
from tests.fixtures.cli import rescue, run
from tests.fixtures.disks import disk_with
from tests.fixtures.faultdisk import faulty_device
from tests.fixtures.filesystems import MIB, build_fs
from tests.fixtures.first import lost_ranges, read_out

pytestmark = [pytest.mark.slow, pytest.mark.root]
PARTS = {1: ("vfat", 1 * MIB), 2: ("exfat", 17 * MIB)}
PART_SIZE = 16 * MIB
LAYOUT = "label: gpt\n" + "".join(f"start={start // 512}, size={PART_SIZE // 512}\n"
                                  for _, start in PARTS.values())


def extract(image: Path, number: int, path: str, folder: Path) -> bytes:
    """One file of partition `number` of a raw disk image, read by mtools or exfat-fuse."""
    kind, start = PARTS[number]
    return read_out(image, kind, start, PART_SIZE, path, folder)


def test_one_folder_in_fat_and_exfat_into_qcow2(tmp_path: Path) -> None:
    images = []
    for number, (kind, start) in PARTS.items():
        fs_image = tmp_path / f"{kind}.img"
        build_fs(kind, fs_image, PART_SIZE, seed=number)
        images.append((start, fs_image))
    disk = disk_with(tmp_path / "disk.img", 34 * MIB, LAYOUT, images)
    reader = RawReader(str(disk))
    try:
        clean = RangeMap(reader.size)
        clean.set(0, reader.size, FINISHED)
        files = resolve(reader, clean, [FirstPath.parse("/DIR 1")]).files
    finally:
        reader.close()
    big = [f for f in files if f.size and f.size > 8192]
    hit = [big[0], next(f for f in big if f.name[0] != big[0].name[0])]  # one in each fs
    spec = ",".join(f"bad={f.pieces[0][1] + 4096}+512" for f in hit)
    image = tmp_path / "out.qcow2"
    with faulty_device(str(disk), f"sim:{spec}") as device:
        result = rescue("image", device, image, "--first", "/DIR 1", "--json")
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    bad = {e["path"]: [tuple(r) for r in e["bad"]] for e in events if e["type"] == "first"}
    assert set(bad) == {f.name for f in files}
    assert {name for name, ranges in bad.items() if ranges} == {f.name for f in hit}
    raw = tmp_path / "out.img"
    run("qemu-img", "convert", "-O", "raw", str(image), str(raw))
    for name, ranges in bad.items():
        number, path = name.split(":", 1)
        original = extract(disk, int(number), path, tmp_path)
        assert ranges == lost_ranges(original, extract(raw, int(number), path, tmp_path)), name
