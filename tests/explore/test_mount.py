"""`rescue mount` of a qcow2 image: a raw disk through FUSE and the ext4 partition mounted
read-only; `rescue umount` leaves no mount, loop device or FUSE server behind. An image whose
partitions hold a set-user-ID root program and 0666 device nodes gives nobody anything."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
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
from tests.fixtures.cli import rescue
from tests.fixtures.explore import (
    HOSTILE_NODES,
    PART_START,
    SETUID_PROGRAM,
    make_gpt_disk,
    make_untrusted_filesystem,
)

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
    result = rescue("mount", gpt_ext4_qcow2, mount_dir, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert Path(shown["disk"]) == mount_dir / "disk"
    assert [(p["partition"], p["fstype"], Path(p["mount_dir"])) for p in shown["partitions"]] \
        == [(1, "ext4", mount_dir / "p1")]
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


# -- an untrusted image ------------------------------------------------------------------------

UNTRUSTED_KINDS = ("ext4", "ntfs", "vfat", "exfat")  # partitions 1, 2, 3, 4
UNTRUSTED = {"ro", "nosuid", "nodev", "noexec"}


@pytest.fixture(scope="module")
def untrusted_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("untrusted")
    parts = [work / f"{kind}.fs" for kind in UNTRUSTED_KINDS]
    for kind, part in zip(UNTRUSTED_KINDS, parts, strict=True):
        make_untrusted_filesystem(kind, part)
    make_gpt_disk(parts, work / "disk.raw")
    return work / "disk.raw"


@pytest.fixture
def open_mount_dir() -> Iterator[Path]:
    """An empty directory any user may reach (tmp_path is root's alone), cleaned up always."""
    directory = Path(tempfile.mkdtemp(prefix="rescue-mount-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))
        directory.rmdir()


def as_nobody(*command: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           *map(str, command)], capture_output=True, text=True, cwd="/")


def nobody_opens(path: Path, flags: int) -> bool:
    opening = as_nobody(sys.executable, "-c", "import os, sys; os.open(sys.argv[1], "
                        f"{flags})", path)
    return opening.returncode == 0


def our_mounts(directory: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Mount point → (its own flags, its file system's options), read from the kernel's
    table, for DIR and everything mounted below it (no mount point here needs unescaping)."""
    found = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            left, _, right = line.partition(" - ")
            mountpoint, flags = left.split()[4:6]
            if mountpoint == str(directory) or mountpoint.startswith(f"{directory}/"):
                found[mountpoint] = (set(flags.split(",")), set(right.split()[2].split(",")))
    return found


def test_an_untrusted_image_mounted_gives_nobody_a_program_or_a_device(
        untrusted_disk: Path, open_mount_dir: Path) -> None:
    assert as_nobody("stat", open_mount_dir).returncode == 0  # the path itself is open
    result = rescue("mount", untrusted_disk, open_mount_dir, "--allow-other", "--kernel")
    assert result.returncode == 0, result.stderr
    flags = our_mounts(open_mount_dir)
    partitions = {f"{open_mount_dir}/p{n}" for n in (1, 2, 4)}  # this kernel lacks vfat
    assert partitions | {str(open_mount_dir)} <= set(flags)
    for mountpoint, (own, _fs_options) in flags.items():
        assert own >= UNTRUSTED, (mountpoint, own)
    assert (open_mount_dir / "p1" / SETUID_PROGRAM).stat().st_mode & stat.S_ISUID
    nodes = 0
    for mountpoint in sorted(partitions | set(flags) - {str(open_mount_dir)}):
        program = Path(mountpoint) / SETUID_PROGRAM
        assert as_nobody("cmp", program, "/usr/bin/id").returncode == 0  # others get in
        ran = as_nobody(program)
        assert ran.returncode != 0 and "euid=0" not in ran.stdout, (mountpoint, ran)
        for name, (kind, _major, _minor) in HOSTILE_NODES.items():
            node = Path(mountpoint) / name
            if not os.path.lexists(node):
                continue
            nodes += 1
            flags_to_try = os.O_WRONLY if kind == "c" else os.O_RDONLY
            assert not nobody_opens(node, flags_to_try), node
            with pytest.raises(PermissionError):  # not even root reaches a device
                os.close(os.open(node, flags_to_try))
    assert nodes == 2 * len(HOSTILE_NODES)  # ext4 and NTFS hold them
    assert rescue("umount", open_mount_dir).returncode == 0
    assert leftovers(open_mount_dir) == []


def test_the_raw_disk_view_lets_only_its_owner_in_unless_asked(
        untrusted_disk: Path, open_mount_dir: Path) -> None:
    result = rescue("mount", untrusted_disk, open_mount_dir, "--raw-only")
    assert result.returncode == 0, result.stderr
    own, fs_options = our_mounts(open_mount_dir)[str(open_mount_dir)]
    assert own >= UNTRUSTED and "allow_other" not in fs_options, (own, fs_options)
    assert (open_mount_dir / "disk").read_bytes()[:512] == untrusted_disk.read_bytes()[:512]
    denied = as_nobody("stat", open_mount_dir / "disk")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
