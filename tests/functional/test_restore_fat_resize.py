"""`rescue restore` onto a smaller and a larger disk, a FAT32 data partition resized too.

The source is the PC disk of test_restore_resize.py (FAT32 EFI system partition, ext4 and NTFS
about 30 % full) with a FAT32 data partition after them, 30 % full. The judges are the tools:
fsck.vfat, the FAT's own boot sector (it stays FAT32, its cluster size kept), sgdisk, and
every file's SHA-256 read back (mtools for FAT, read-only mounts for the others).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.fixtures.cli import rescue, run
from tests.fixtures.loop import loop_device
from tests.fixtures.resize import FAT_DATA, WITH_FAT, build, file_hashes
from tests.fixtures.restore import MIB, digest, target

pytestmark = pytest.mark.slow
GIB = 1 << 30


@pytest.fixture(scope="module")
def pc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pcfat")
    disk, image, hashes = build(folder, *WITH_FAT)
    return {"disk": disk, "image": image, "hashes": hashes, "image_sha": digest(image)}


@pytest.fixture
def targets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def boot_sector(device: str) -> tuple[str, int, int]:
    """The FAT's type, cluster size and size in bytes, as its boot sector says."""
    with open(device, "rb") as disk:
        sector = disk.read(512)
    per_sector, per_cluster = struct.unpack_from("<HB", sector, 11)
    total = struct.unpack_from("<H", sector, 19)[0] or struct.unpack_from("<I", sector, 32)[0]
    kind = "FAT32" if sector[82:87] == b"FAT32" else sector[54:59].decode()
    return kind, per_sector * per_cluster, total * per_sector


@pytest.mark.parametrize(("size", "action"), [(4 * GIB, "grow"), (1536 * MIB, "shrink")])
def test_a_fat32_data_partition_is_resized_with_the_others(
        pc: dict[str, object], tmp_path: Path, targets: ExitStack, size: int, action: str
) -> None:
    with loop_device(str(pc["disk"]), partitions=True, read_only=True) as loop:
        source = boot_sector(f"{loop}p{FAT_DATA}")
    assert source[0] == "FAT32"
    device = target(targets, tmp_path, "t", size, fill=b"stale ")
    planned = rescue("restore", str(pc["image"]), device, "--dry-run", "--json", timeout=900)
    parts = json.loads(planned.stdout.splitlines()[0])["targets"][0]["plan"]["partitions"]
    assert [p["action"] for p in parts] == ["keep", action, action, action]
    fat = parts[FAT_DATA - 1]
    # at its cluster size, FAT32 needs 65525 clusters: the floor, whatever its files need
    assert 65525 * source[1] < fat["min_size"] < 65525 * source[1] + 16 * MIB
    assert fat["new_size"] >= fat["min_size"]
    result = rescue("restore", str(pc["image"]), device, "--yes", "--json",
                    "--map-dir", str(tmp_path / "maps"), timeout=1800)
    assert result.returncode == 0, result.stderr
    compared = json.loads(result.stdout.splitlines()[-1])["targets"][0]["files_compared"]
    assert compared["listed"] == compared["hashed"] == sum(
        number > 1 for number, _ in pc["hashes"])  # type: ignore[attr-defined]
    assert "No problems found" in run("sgdisk", "-v", device)
    layout = [(int(s), int(n)) for s, n in re.findall(r"start=\s*(\d+), size=\s*(\d+)",
                                                       run("sfdisk", "--dump", device))]
    assert all(start * 512 % MIB == 0 for start, _ in layout)
    assert layout[FAT_DATA - 1] == (fat["new_start"] // 512, fat["new_size"] // 512)
    with loop_device(device, partitions=True, read_only=True) as loop:
        for number in (1, FAT_DATA):
            checked = subprocess.run(["fsck.vfat", "-n", f"{loop}p{number}"],
                                     capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout
        kind, cluster, made = boot_sector(f"{loop}p{FAT_DATA}")
    assert (kind, cluster) == source[:2]  # still FAT32, its clusters as they were
    assert fat["new_size"] - 2 * MIB <= made <= fat["new_size"]  # it fills its partition
    assert file_hashes(device, tmp_path) == pc["hashes"]
    assert digest(pc["image"]) == pc["image_sha"]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fat16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 512 MiB disk: a 300 MiB FAT16 data partition (8 KiB clusters: it holds at most
    65524 of them, 512 MiB) with 8 MiB of files, then ext4 30 % full."""
    folder = tmp_path_factory.mktemp("fat16")
    layout = ("label: gpt\nstart=2048,size=300M,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
              "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
    disk, image, hashes = build(folder, 512 * MIB, layout,
                                {1: ("mkfs.vfat", "-F", "16"), 2: ("mkfs.ext4", "-q", "-F")})
    return {"disk": disk, "image": image, "hashes": hashes, "image_sha": digest(image)}


@pytest.mark.parametrize(("size", "action"), [(2 * GIB, "grow"), (320 * MIB, "shrink")])
def test_a_fat16_is_resized_within_what_fat16_holds(
        fat16: dict[str, object], tmp_path: Path, targets: ExitStack, size: int, action: str
) -> None:
    with loop_device(str(fat16["disk"]), partitions=True, read_only=True) as loop:
        source = boot_sector(f"{loop}p1")
    assert source[0] == "FAT16" and source[1] == 8192
    device = target(targets, tmp_path, "t", size, fill=b"stale ")
    result = rescue("restore", str(fat16["image"]), device, "--yes", "--json",
                    "--map-dir", str(tmp_path / "maps"), timeout=900)
    assert result.returncode == 0, result.stderr
    with loop_device(device, partitions=True, read_only=True) as loop:
        kind, _, made = boot_sector(f"{loop}p1")
        partition = int(run("blockdev", "--getsize64", f"{loop}p1"))
        checked = subprocess.run(["fsck.vfat", "-n", f"{loop}p1"], capture_output=True,
                                 text=True)
    assert checked.returncode == 0, checked.stdout
    assert kind == "FAT16"
    if action == "grow":  # no further than 65524 clusters of 8 KiB, though the disk has room
        assert 500 * MIB < partition <= 65524 * 8192
    else:
        assert partition < 300 * MIB
    assert partition - 2 * MIB <= made <= partition
    assert file_hashes(device, tmp_path) == fat16["hashes"]
    assert "No problems found" in run("sgdisk", "-v", device)
    assert digest(fat16["image"]) == fat16["image_sha"]  # type: ignore[arg-type]
