"""`rescue mount` of a qcow2 image: a raw disk through FUSE and the ext4 partition mounted
read-only; `rescue umount` leaves no mount, loop device or FUSE server behind."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rescue.errors import UsageError
from rescue.explore.mount import (
    is_our_mount,
    loops_backed_by,
    mounts_below,
    server_pids,
    unmount_image,
)
from tests.explore.images import PART_START, rescue

pytestmark = [pytest.mark.slow, pytest.mark.root]


def leftovers(directory: Path) -> list[object]:
    path = str(directory.resolve())
    return [*mounts_below(path), *loops_backed_by(path), *server_pids(path),
            *(["fuse mount"] if is_our_mount(path) else [])]


@pytest.fixture
def mount_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty directory, cleaned of anything mounted there even when the test fails."""
    directory = tmp_path / "mnt"
    directory.mkdir()
    try:
        yield directory
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))


def test_mount_shows_the_ext4_partition_and_umount_cleans_up(
        gpt_ext4_qcow2: Path, mount_dir: Path, source_tree: Callable[[str], Path],
        explore_dir: Path) -> None:
    result = rescue("mount", gpt_ext4_qcow2, mount_dir)
    assert result.returncode == 0, result.stderr
    source = source_tree("ext4")
    partition = mount_dir / "p1"
    assert (partition / "readme.txt").read_bytes() == (source / "readme.txt").read_bytes()
    assert sorted(p.name for p in partition.iterdir()) == sorted(
        ["lost+found", *(p.name for p in source.iterdir())])
    with pytest.raises(OSError):
        (partition / "new-file").write_bytes(b"x")  # read-only
    raw = (explore_dir / "gpt-ext4.raw").read_bytes()
    disk = (mount_dir / "disk").read_bytes()
    assert hashlib.sha256(disk).digest() == hashlib.sha256(raw).digest()
    assert disk[PART_START + 1024 + 0x38:PART_START + 1024 + 0x3A] == b"\x53\xef"  # ext magic

    done = rescue("umount", mount_dir)
    assert done.returncode == 0, done.stderr
    assert leftovers(mount_dir) == []
    assert list(mount_dir.iterdir()) == []


def test_mount_raw_only_and_umount_of_nothing(gpt_ext4_qcow2: Path, mount_dir: Path) -> None:
    assert rescue("mount", gpt_ext4_qcow2, mount_dir, "--raw-only").returncode == 0
    assert sorted(p.name for p in mount_dir.iterdir()) == ["disk", "p1"]
    assert list((mount_dir / "p1").iterdir()) == []
    assert rescue("umount", mount_dir).returncode == 0
    assert leftovers(mount_dir) == []
    again = rescue("umount", mount_dir)
    assert again.returncode == 2 and "nothing of rescue is mounted" in again.stderr


def test_mount_refuses_a_directory_in_use(gpt_ext4_qcow2: Path, mount_dir: Path) -> None:
    (mount_dir / "something").write_bytes(b"")
    result = rescue("mount", gpt_ext4_qcow2, mount_dir)
    assert result.returncode == 2
    assert "not an empty, unmounted directory" in result.stderr
