"""Used-block maps of real file systems, judged by partclone, fsck and the file systems' own
tools reading back every file of a used-mode image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.formats.manifest import read_sidecar
from rescue.fs.domain import plan_disk, used_map
from rescue.fs.partitions import DiskReader
from rescue.fs.used import normalize
from rescue.rangemap import FINISHED
from tests.fixtures.cli import rescue, run
from tests.fixtures.filesystems import (
    KINDS,
    MIB,
    build_fs,
    comparable,
    extracted_hashes,
    fsck_clean,
    partclone_used,
)
from tests.fixtures.loop import loop_device

pytestmark = [pytest.mark.slow, pytest.mark.root]
SIZE = 48 * MIB


@pytest.fixture(scope="module", params=KINDS)
def fs_image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, Path, dict[str, str]]:
    kind = request.param
    image = tmp_path_factory.mktemp(kind) / f"{kind}.img"
    hashes = build_fs(kind, image, SIZE, seed=len(kind))
    return kind, image, hashes


def test_covers_every_block_partclone_uses(fs_image: tuple[str, Path, dict[str, str]]) -> None:
    kind, image, _ = fs_image
    with DiskReader(str(image)) as reader:
        ours = used_map(reader)
    assert ours.method == "native" and ours.warnings == ()
    theirs = partclone_used(kind, image)
    covered = normalize([*ours.used], SIZE)
    missing = [(pos, length) for pos, length in theirs
               if not any(b <= pos and pos + length <= b + n for b, n in covered)]
    assert missing == [], f"{kind}: partclone marks used what we do not"
    # and a used map is worth having: far less than the whole file system
    assert ours.used_bytes < SIZE * 0.7
    assert all(any(b <= pos and pos + n <= b + m for b, m in ours.used)
               for pos, n in ours.metadata)


def test_used_mode_image_is_clean_and_complete(fs_image: tuple[str, Path, dict[str, str]],
                                               tmp_path: Path) -> None:
    kind, image, hashes = fs_image
    out = tmp_path / "used.img"
    result = rescue("image", str(image), str(out), "--mode", "used",
                        "--order", "metadata-first")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    with DiskReader(str(image)) as reader:
        plan = plan_disk(reader)
    # unused blocks were never read: they are holes, not copies of the stale data
    allocated = os.stat(out).st_blocks * 512
    assert allocated <= plan.used_bytes + 64 * 1024  # the writer may mark the last block
    original = image.read_bytes()
    copy = out.read_bytes()
    assert any(original[pos:pos + n] != copy[pos:pos + n]
               for pos, n, state in plan.used.areas() if state != FINISHED)
    clean, output = fsck_clean(kind, out)
    assert clean, output
    assert comparable(kind, extracted_hashes(kind, out)) == comparable(kind, hashes)
    manifest = read_sidecar(str(out))
    assert manifest is not None and manifest.mode == "used"


def test_partitioned_disk_used_mode(tmp_path: Path) -> None:
    """A GPT disk with ext4 and FAT partitions, imaged used-only from its loop device and
    checked partition by partition."""
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(80 * MIB)
    run("sgdisk", "-n1:1M:+40M", "-t1:8300", "-n2:0:+30M", "-t2:0700", str(disk))
    expected = {}
    with loop_device(str(disk), partitions=True) as device:
        for number, kind in ((1, "ext4"), (2, "vfat")):
            expected[number] = (kind, build_fs(kind, Path(f"{device}p{number}"), 0, number))
        out = tmp_path / "disk-used.img"
        result = rescue("image", device, str(out), "--mode", "used")
        assert result.returncode == 0, result.stderr
    with DiskReader(str(out)) as reader:
        plan = plan_disk(reader)
    assert plan.table_kind == "gpt" and plan.warnings == ()
    for area in plan.areas:
        assert area.partition is not None
        kind, hashes = expected[area.partition.number]
        part = tmp_path / f"p{area.partition.number}.img"
        run("dd", f"if={out}", f"of={part}", "bs=1M", f"skip={area.start // MIB}",
            f"count={area.partition.size // MIB}", "status=none")
        clean, output = fsck_clean(kind, part)
        assert clean, output
        assert comparable(kind, extracted_hashes(kind, part)) == comparable(kind, hashes)
