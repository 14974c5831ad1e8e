"""Partition tables made by sfdisk, read back and compared with sfdisk's own JSON dump."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rescue.errors import FormatError
from rescue.formats.base import DamagedData
from rescue.fs.partitions import DiskReader, SliceReader, read_partition_table
from rescue.io.reader import Unreadable

MIB = 1 << 20


def make_disk(path: Path, script: str, size: int = 64 * MIB) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True,
                   capture_output=True)
    return path


def sfdisk_dump(path: Path) -> dict:
    out = subprocess.run(["sfdisk", "-J", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["partitiontable"]


def assert_matches_sfdisk(path: Path) -> None:
    table = read_partition_table(DiskReader(str(path)))
    dump = sfdisk_dump(path)
    assert table.kind == dump["label"]
    assert table.warnings == ()
    expected = {int(p["node"].rsplit(path.name, 1)[1]): p for p in dump["partitions"]}
    assert {p.number for p in table.partitions} == set(expected)
    for part in table.partitions:
        want = expected[part.number]
        assert part.start == want["start"] * 512
        if not part.is_container:  # sfdisk shows an extended container's own size
            assert part.size == want["size"] * 512
        assert part.type_id == want["type"].lower() if table.kind == "gpt" else \
            int(part.type_id, 16) == int(want["type"], 16)
        assert part.bootable == bool(want.get("bootable", False))
        if table.kind == "gpt":
            assert part.uuid == want["uuid"].lower()
            assert part.name == want.get("name", "")


def test_dos_with_logical_partitions(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "dos.img", "label: dos\n"
                     "start=2048, size=8MiB, type=83, bootable\n"
                     "size=8MiB, type=7\n"
                     "type=5\n"
                     "size=4MiB, type=83\n"
                     "size=4MiB, type=b\n"
                     "size=4MiB, type=82\n")
    assert_matches_sfdisk(disk)
    table = read_partition_table(DiskReader(str(disk)))
    assert [p.number for p in table.partitions if p.logical] == [5, 6, 7]
    assert table.disk_id == sfdisk_dump(disk)["id"]
    assert table.find(6).type_id == "0x0b"
    with pytest.raises(FormatError):
        table.find(9)
    # The MBR and the three EBRs are table areas the used map must always keep.
    assert len(table.table_areas) == 4


def test_gpt_and_damaged_primary(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "gpt.img", "label: gpt\n"
                     "size=8MiB, type=linux, name=root\n"
                     "size=8MiB, type=uefi, name=\"EFI system\"\n"
                     "size=4MiB, type=swap\n")
    assert_matches_sfdisk(disk)
    good = read_partition_table(DiskReader(str(disk)))
    assert good.disk_id == sfdisk_dump(disk)["id"].lower()
    with open(disk, "r+b") as f:  # scribble over the primary header
        f.seek(512 + 24)
        f.write(b"\xff" * 8)
    damaged = read_partition_table(DiskReader(str(disk)))
    assert damaged.partitions == good.partitions
    assert damaged.warnings == ("primary GPT header damaged; using the backup",)
    with open(disk, "r+b") as f:  # and now the backup's entry array too
        f.seek(disk.stat().st_size - 33 * 512)
        f.write(b"\xff" * 512)
    lost = read_partition_table(DiskReader(str(disk)))
    assert lost.kind == "gpt" and lost.partitions == ()
    assert "both GPT headers are damaged" in lost.warnings[0]


def test_partition_outside_the_disk(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "big.img", "label: dos\nstart=2048, size=16MiB, type=83\n"
                     "size=32MiB, type=83\n", size=64 * MIB)
    with open(disk, "r+b") as f:  # shrink the disk under the second partition
        f.truncate(40 * MIB)
    table = read_partition_table(DiskReader(str(disk)))
    assert [p.size for p in table.partitions] == [16 * MIB, 40 * MIB - 17 * MIB]
    assert "clipped" in table.warnings[0]
    with open(disk, "r+b") as f:
        f.truncate(12 * MIB)
    table = read_partition_table(DiskReader(str(disk)))
    assert [p.number for p in table.partitions] == [1]
    assert any("skipped" in w for w in table.warnings)


def test_looping_ebr_chain(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "loop.img", "label: dos\ntype=5\nsize=4MiB, type=83\n"
                     "size=4MiB, type=83\n")
    table = read_partition_table(DiskReader(str(disk)))
    second_ebr = table.table_areas[2][0]
    with open(disk, "r+b") as f:  # point the second EBR's link back at the first EBR
        f.seek(second_ebr + 446 + 16 + 4)
        f.write(b"\x05")
        f.seek(second_ebr + 446 + 16 + 8)
        f.write((0).to_bytes(4, "little") + (2048).to_bytes(4, "little"))
    looped = read_partition_table(DiskReader(str(disk)))
    assert [p.number for p in looped.partitions] == [1, 5, 6]
    assert any("loops back" in w for w in looped.warnings)


def test_bare_file_system_and_blank_disk(tmp_path: Path) -> None:
    fat = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-C", str(fat), "8192"], check=True, capture_output=True)
    assert read_partition_table(DiskReader(str(fat))).kind is None
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    table = read_partition_table(DiskReader(str(blank)))
    assert (table.kind, table.partitions, table.warnings) == (None, (), ())
    assert read_partition_table(DiskReader(str(tmp_path / "fat.img"))).disk_size == 8192 * 1024


@pytest.mark.parametrize(("offset", "length"), [
    (-512, 1024), (-1, 1), (4096, 1), (4095, 100), (1 << 63, 16), ((1 << 64) + 5, 1), (0, -1)])
def test_a_slice_never_reads_outside_its_window(offset: int, length: int,
                                                 tmp_path: Path) -> None:
    """Offsets that damaged metadata makes up (negative, past the end, past what pread
    takes) read nothing outside the partition: nothing at all for a start outside it, the
    part inside otherwise, and never an error."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"A" * 4096 + b"B" * 4096 + b"C" * 4096)
    with DiskReader(str(disk)) as reader:
        window = SliceReader(reader, 4096, 4096)
        inside = min(length, 4096 - offset) if 0 <= offset < 4096 and length > 0 else 0
        assert window.read(offset, length) == b"B" * inside


class _FailingDisk:
    """A GPT disk whose every read past the MBR raises `error`."""

    def __init__(self, mbr: bytes, error: BaseException) -> None:
        self.size, self.mbr, self.error = 1 << 20, mbr, error

    def read(self, offset: int, length: int) -> bytes:
        if offset < 512:
            return self.mbr[offset:offset + length]
        raise self.error


@pytest.mark.parametrize("error", [
    DamagedData(512, 512, "cannot read image at 0x200: Input/output error"),
    Unreadable(512, 512, "bad"), DamagedData(512, 512, "damaged cluster")])
def test_an_unreadable_table_is_a_warning(error: Exception) -> None:
    """What a bad sector or a damaged image cluster raises becomes a warning."""
    table = read_partition_table(_FailingDisk(_protective_mbr(), error))
    assert any("cannot read partition table" in w for w in table.warnings)


@pytest.mark.parametrize("error", [MemoryError(), KeyError("bug"), ZeroDivisionError()])
def test_other_failures_are_not_taken_for_bad_sectors(error: Exception) -> None:
    """Running out of memory or a bug shows as itself, not as a damaged table."""
    with pytest.raises(type(error)):
        read_partition_table(_FailingDisk(_protective_mbr(), error))


def _protective_mbr() -> bytes:
    mbr = bytearray(512)
    mbr[446 + 4] = 0xEE
    mbr[446 + 8:446 + 16] = (1).to_bytes(4, "little") + (2047).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)
