"""`rescue report` on images of a device with real bad sectors placed in known files and in
the inode table; where those sit is asked of debugfs and mtools, not of our own parsers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rescue.fs.affected import Damage, affected_files
from rescue.fs.partitions import DiskReader
from rescue.rangemap import RangeMap
from tests.fixtures.cli import rescue, run
from tests.fixtures.faultdisk import faulty_device
from tests.fixtures.filesystems import MIB, build_fs, debugfs, ext_first_block
from tests.fixtures.mapfiles import write_map

pytestmark = [pytest.mark.slow, pytest.mark.root]
SECTOR = 512


def ext_inode_location(image: Path, path: str) -> int:
    match = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)",
                      debugfs(image, f'imap "{path}"'))
    assert match, path
    block_size = int(re.search(r"Block size:\s+(\d+)", debugfs(image, "stats"))[1])
    return int(match[1]) * block_size + int(match[2], 16)


def report(image: Path) -> dict:
    result = rescue("report", str(image), "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_ext4_bad_sectors_name_exactly_the_hit_files(tmp_path: Path) -> None:
    image = tmp_path / "ext4.img"
    hashes = build_fs("ext4", image, 48 * MIB, seed=3)
    files = sorted(f"/{name}" for name in hashes)
    data_victim, inode_victim = files[0], files[-1]
    data_bad = ext_first_block(image, data_victim) + 2 * SECTOR
    inode_bad = ext_inode_location(image, inode_victim) // SECTOR * SECTOR
    # every file whose inode shares the bad sector loses its metadata, per debugfs
    sharing = {f for f in files
               if ext_inode_location(image, f) // SECTOR * SECTOR == inode_bad}
    out = tmp_path / "out.img"
    with faulty_device(str(image), f"sim:bad={data_bad}+{SECTOR},bad={inode_bad}+{SECTOR}"
                       ) as device:
        result = rescue("image", device, str(out), "--mode", "used")
    assert result.returncode == 1, result.stderr
    found = report(out)
    assert found["bad"] == 2 * SECTOR
    named = {f["path"] for f in found["files"]}
    assert named == {data_victim} | sharing
    by_path = {f["path"]: f for f in found["files"]}
    assert by_path[data_victim]["lost"] == SECTOR
    assert all(by_path[f]["size"] is None and by_path[f]["lost"] is None for f in sharing)


def test_fat_bad_cluster_and_directory(tmp_path: Path) -> None:
    image = tmp_path / "fat.img"
    hashes = build_fs("vfat", image, 32 * MIB, seed=4)
    victim = sorted(name for name in hashes if "sub" not in name)[0]
    clusters = run("mshowfat", "-i", str(image), f"::/{victim}")
    first = int(re.search(r"<(\d+)", clusters)[1])
    boot = image.read_bytes()[:512]
    sector = int.from_bytes(boot[11:13], "little")
    per_cluster = boot[13]
    reserved = int.from_bytes(boot[14:16], "little")
    fats = boot[16]
    root_entries = int.from_bytes(boot[17:19], "little")
    fat_sectors = int.from_bytes(boot[22:24], "little") or int.from_bytes(boot[36:40], "little")
    data = (reserved + fats * fat_sectors) * sector + root_entries * 32
    bad = data + (first - 2) * per_cluster * sector
    out = tmp_path / "out.img"
    with faulty_device(str(image), f"sim:bad={bad}+{SECTOR}") as device:
        result = rescue("image", device, str(out), "--order", "metadata-first")
    assert result.returncode == 1, result.stderr
    found = report(out)
    assert [(f["path"], f["lost"]) for f in found["files"]] == [(f"/{victim}", SECTOR)]


def test_clean_image_reports_nothing(tmp_path: Path) -> None:
    image = tmp_path / "ext4.img"
    build_fs("ext4", image, 16 * MIB, seed=5)
    with DiskReader(str(image)) as reader:
        rmap = RangeMap(reader.size, "+")
        assert affected_files(reader, rmap).files == ()
        rmap.set(0, 1024, "?")  # the boot area: no file lives there
        assert affected_files(reader, rmap).files == ()
    assert Damage(rmap).overlap(512, 1024) == 512


def test_damage_not_mapped_to_files_is_not_called_harmless(tmp_path: Path) -> None:
    """Bad sectors in an area whose file system cannot be read hit files nobody can name:
    saying no file is affected would send the user away from data they may still save."""
    image = tmp_path / "blank.img"
    image.write_bytes(bytes(4 * MIB))
    write_map(tmp_path / "blank.img.map",
              [(0, MIB, "+"), (MIB, SECTOR, "-"), (MIB + SECTOR, 3 * MIB - SECTOR, "+")])
    shown = rescue("report", str(image))
    assert "not mapped to files" in shown.stdout and "no file is affected" not in shown.stdout
    assert re.search(r"affected files are not known(.|\n)*rescue image", shown.stdout)
    assert report(image)["files_known"] is False
    assert shown.returncode == 1  # a script must not take unknown for clean


def test_a_file_system_rescue_cannot_list_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A GPT disk: a Minix partition (recognised, not listed) with a bad sector, an ext4 one
    intact. The report names the Minix partition, says the files are not known and how to
    check them, and never that none is affected; the intact ext4 partition raises nothing."""
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(32 * MIB)
    run("sgdisk", "-o", "-n1:2048:+12M", "-n2:0:+12M", image)
    for number, mkfs, offset in ((1, ["mkfs.minix"], MIB), (2, ["mkfs.ext4", "-q", "-F"],
                                                              13 * MIB)):
        part = tmp_path / f"p{number}.img"
        with part.open("wb") as f:
            f.truncate(12 * MIB)
        run(*mkfs, part)
        with image.open("r+b") as f:
            f.seek(offset)
            f.write(part.read_bytes())
    write_map(tmp_path / "disk.img.map", [(0, 2 * MIB, "+"), (2 * MIB, 8 * SECTOR, "-"),
                                          (2 * MIB + 8 * SECTOR, 30 * MIB - 8 * SECTOR, "+")])
    shown = rescue("report", str(image))
    assert shown.returncode == 1, shown.stderr
    assert re.search(r"partition 1: .*minix.*4096 damaged bytes", shown.stdout)
    assert "partition 2" not in shown.stdout and "no file is affected" not in shown.stdout
    assert "affected files are not known" in shown.stdout
    assert f"rescue mount {image} DIR" in shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines()
               if not line.startswith("warning:") and str(image) not in line)
