"""An NTFS volume whose $MFT is so fragmented that its runs continue in extension records,
made by ntfs-3g and judged by ntfsinfo, partclone, ntfsfix, qemu-img and ntfs-3g itself."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.fs.domain import used_map
from rescue.fs.partitions import DiskReader
from rescue.fs.used import normalize
from rescue.fs.used.ntfs import NtfsFS
from tests.fixtures.cli import rescue, run
from tests.fixtures.faultdisk import faulty_device
from tests.fixtures.filesystems import extracted_hashes, fsck_clean, partclone_used
from tests.fixtures.ntfs import (
    SPARSE_NAME,
    MftRecords,
    attribute_offset,
    attribute_sections,
    build_fragmented_mft,
    data_runs,
    inodes,
    mft_pieces,
    mft_runs,
    split_mft_piece,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]
SECTOR = 512


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    image = tmp_path_factory.mktemp("ntfs-mft") / "fragmented.img"
    hashes = build_fragmented_mft(image, seed=11)
    return image, hashes


@pytest.fixture
def copy(volume: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    """A copy of the volume that a test may edit."""
    return Path(shutil.copy(volume[0], tmp_path / "edited.img"))


def tail_inodes(image: Path) -> dict[str, tuple[int, int]]:
    """The growth files whose MFT records lie only in runs an extension record holds."""
    extension_vcn = min(vcn for record, piece in mft_pieces(image).items() if record != 0
                        for vcn, _, _ in piece)
    records = MftRecords(image)
    per_record = records.record_size // records.cluster
    return {name: (inode, size) for name, (inode, size) in inodes(image, "/growth").items()
            if inode * per_record >= extension_vcn}


def whole_area_warning(image: Path) -> str:
    with DiskReader(str(image)) as reader:
        result = used_map(reader)
    assert result.method == "whole" and result.used == ((0, image.stat().st_size),)
    (warning,) = result.warnings
    return warning


def test_the_mft_really_continues_in_an_extension_record(
        volume: tuple[Path, dict[str, str]]) -> None:
    image, _ = volume
    homes = [(name, record) for name, record, _ in attribute_sections(image, 0)]
    assert ("$ATTRIBUTE_LIST", 0) in homes and ("$DATA", 0) in homes
    assert any(name == "$DATA" and record != 0 for name, record in homes)
    assert tail_inodes(image), "no file record lies in the extension record's runs"
    clean, output = fsck_clean("ntfs", image)
    assert clean, output


def test_complete_mft_runs_and_every_file_named(volume: tuple[Path, dict[str, str]]) -> None:
    image, hashes = volume
    with DiskReader(str(image)) as reader:
        fs = NtfsFS(reader)
        assert fs.mft_runs == mft_runs(image)
        files = {record.path: record for record in fs.files()}
    assert {f"/{name}" for name in hashes} <= set(files)
    assert all(f"/growth/{name}" in files for name in tail_inodes(image))
    # a file's own $DATA pieces from several records, joined in VCN order
    sparse = files[f"/{SPARSE_NAME}"]
    assert len({record for kind, record, _ in attribute_sections(image, f"/{SPARSE_NAME}")
                if kind == "$DATA"}) > 1
    assert sparse.complete
    assert list(sparse.data) == [(lcn * SECTOR, count * SECTOR)
                                 for _, lcn, count in data_runs(image, f"/{SPARSE_NAME}")]


def test_used_map_covers_every_cluster_partclone_uses(
        volume: tuple[Path, dict[str, str]]) -> None:
    image, _ = volume
    size = image.stat().st_size
    with DiskReader(str(image)) as reader:
        ours = used_map(reader)
    assert ours.method == "native" and ours.warnings == ()
    covered = normalize(ours.used, size)
    missing = [(pos, length) for pos, length in partclone_used("ntfs", image)
               if not any(b <= pos and pos + length <= b + n for b, n in covered)]
    assert missing == []
    # the MFT's tail, known only from the extension record, is read first
    metadata = normalize(ours.metadata, size)
    for lcn, count in mft_runs(image)[-3:]:
        assert any(b <= lcn * SECTOR and (lcn + count) * SECTOR <= b + n for b, n in metadata)


def test_used_mode_image_restores_clean_and_complete(volume: tuple[Path, dict[str, str]],
                                                     tmp_path: Path) -> None:
    image, hashes = volume
    out = tmp_path / "used.qcow2"
    result = rescue("image", str(image), str(out), "--mode", "used",
                        "--order", "metadata-first")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    raw = tmp_path / "restored.img"
    run("qemu-img", "convert", "-O", "raw", str(out), str(raw))
    clean, output = fsck_clean("ntfs", raw)
    assert clean, output
    assert extracted_hashes("ntfs", raw) == hashes


def test_report_names_the_files_and_the_record_hit(volume: tuple[Path, dict[str, str]],
                                                   tmp_path: Path) -> None:
    """Bad sectors in the data of a file whose record lies in the MFT's tail, on the record
    of another such file, and in the last piece of the sparse file's runs."""
    image, _ = volume
    tail = sorted(tail_inodes(image).items(), key=lambda item: item[1][0])
    victim = f"/growth/{next(name for name, (_, size) in tail if size > 0)}"
    records = MftRecords(image)
    lost_inode = next(inode for _, (inode, _) in reversed(tail)
                      if len(records.record_extents(inode)) == 1)
    bad = [data_runs(image, victim)[0][1] * SECTOR,
           records.record_extents(lost_inode)[0][0],
           data_runs(image, f"/{SPARSE_NAME}")[-1][1] * SECTOR]
    out = tmp_path / "out.qcow2"
    spec = "sim:" + ",".join(f"bad={offset}+{SECTOR}" for offset in bad)
    with faulty_device(str(image), spec) as device:
        result = rescue("image", device, str(out), "--mode", "used")
    assert result.returncode == 1, result.stderr
    result = rescue("report", str(out), "--json")
    assert result.returncode in (0, 1), result.stderr
    found = {f["path"]: f for f in json.loads(result.stdout)["files"]}
    assert set(found) == {victim, f"/{SPARSE_NAME}", f"<MFT record {lost_inode}>"}
    assert found[victim]["lost"] == found[f"/{SPARSE_NAME}"]["lost"] == SECTOR
    assert found[f"<MFT record {lost_inode}>"]["size"] is None


def test_extension_record_found_through_another_extension(
        volume: tuple[Path, dict[str, str]], copy: Path) -> None:
    """The second half of the MFT's runs moved into a record that only the first half's runs
    reach: ntfs-3g resolves it step by step, and so must we."""
    record = split_mft_piece(copy, beyond=False)
    clean, output = fsck_clean("ntfs", copy)
    assert clean, output
    assert record in mft_pieces(copy)
    with DiskReader(str(copy)) as reader:
        fs = NtfsFS(reader)
        assert fs.mft_runs == mft_runs(volume[0])
        assert used_map(reader).method == "native"
        paths = {file.path for file in fs.files()}
    assert {f"/growth/{name}" for name in inodes(copy, "/growth")} <= paths


def test_extension_record_nobody_can_reach(copy: Path) -> None:
    """Runs held in a record that lies inside those very runs: ntfsfix gives up, and the
    whole partition is imaged."""
    record = split_mft_piece(copy, beyond=True)
    assert not fsck_clean("ntfs", copy)[0]
    assert f"extension record {record} lies beyond" in whole_area_warning(copy)


def _extension(image: Path) -> tuple[MftRecords, int, bytearray]:
    (number,) = (record for record in mft_pieces(image) if record != 0)
    records = MftRecords(image)
    return records, number, records.record(number)


def _shift_piece(image: Path) -> None:
    records, number, raw = _extension(image)
    pos = attribute_offset(raw, 0x80) + 16
    first, last = struct.unpack_from("<qq", raw, pos)
    struct.pack_into("<qq", raw, pos, first + 1, last + 1)
    records.put_record(number, raw)


def _reuse_record(image: Path) -> None:
    records, number, raw = _extension(image)
    struct.pack_into("<H", raw, 16, struct.unpack_from("<H", raw, 16)[0] + 1)
    records.put_record(number, raw)


@pytest.mark.parametrize(("damage", "message"), [
    (_shift_piece, "$MFT data runs break off at VCN"),
    (_reuse_record, "extension record"),
])
def test_inconsistent_extension_images_the_whole_partition(
        copy: Path, damage: Callable[[Path], None], message: str) -> None:
    damage(copy)
    assert message in whole_area_warning(copy)
