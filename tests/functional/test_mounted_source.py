"""Imaging a source with a file system on it mounted read-write (the device itself, or a
partition of the disk) warns that the image may be inconsistent; mounted read-only, it does not
warn; either way the image is made."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import rescue, run
from tests.fixtures.disks import partitioned_disk

MIB = 1 << 20

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[str]:
    """A loop disk with one ext4 partition filling it."""
    with partitioned_disk(tmp_path / "disk.bin", "label: dos\n,,83\n",
                          {1: (["mkfs.ext4", "-q", "{dev}"], "")}, size=24 * MIB) as loop:
        yield loop.device


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "mnt"
    folder.mkdir()
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.mark.parametrize("whole", [False, True], ids=["partition", "disk"])
def test_a_source_mounted_read_write_is_named(disk: str, mount_point: Path, tmp_path: Path,
                                              whole: bool) -> None:
    partition = f"{disk}p1"
    run("mount", partition, str(mount_point))
    source = disk if whole else partition
    done = rescue("image", source, str(tmp_path / "out.img"))
    assert done.returncode == ExitCode.OK, done.stderr
    assert (f"warning: {partition} is mounted read-write on {mount_point}: the image may be "
            "inconsistent") in done.stderr


def test_a_source_mounted_read_only_is_not_warned_about(disk: str, mount_point: Path,
                                                        tmp_path: Path) -> None:
    run("mount", "-o", "ro", f"{disk}p1", str(mount_point))
    done = rescue("image", disk, str(tmp_path / "out.img"))
    assert done.returncode == ExitCode.OK, done.stderr
    assert "warning" not in done.stderr


def test_a_source_claimed_where_no_mount_shows_is_named(disk: str, tmp_path: Path) -> None:
    """Another program holds the device exclusively, as a mount in another namespace would."""
    claim = os.open(disk, os.O_RDONLY | os.O_EXCL)
    try:
        done = rescue("image", disk, str(tmp_path / "out.img"))
    finally:
        os.close(claim)
    assert done.returncode == ExitCode.OK, done.stderr
    assert f"warning: {disk} is in use by the kernel" in done.stderr
