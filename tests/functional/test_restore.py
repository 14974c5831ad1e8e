"""`rescue restore` onto real loop devices, judged by cmp, partx, fsck, sgdisk and sfdisk.

Source disks are files holding a real partition table and real file systems (ext4, vfat),
imaged with `rescue image`; targets are loop devices over fresh backing files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process, summary
from tests.fixtures.loop import loop_device
from tests.fixtures.restore import (
    DISK,
    DOS_LAYOUT,
    GPT_LAYOUT,
    MIB,
    blank,
    cmp,
    digest,
    imaged_disk,
    mounted_here,
    partitions,
    run,
    target,
)

pytestmark = pytest.mark.slow
LOCAL_USE_MAJOR = 60  # block major reserved for local use: no driver answers it


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A GPT and a DOS disk (with logical partitions), and their images in every format."""
    folder = tmp_path_factory.mktemp("restore-sources")
    return {**imaged_disk(folder, "gpt", DISK, GPT_LAYOUT, 1, "qcow2", "img.zst", "img"),
            **imaged_disk(folder, "dos", 64 * MIB, DOS_LAYOUT, 2, "qcow2")}


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def restore(*args: str) -> subprocess.CompletedProcess[str]:
    return rescue("restore", *args, "--yes")


def test_three_targets_at_once_equal_the_source(sources: dict[str, Path], tmp_path: Path,
                                                targets: ExitStack) -> None:
    devices = [target(targets, tmp_path, f"t{i}", DISK, fill=b"old data ") for i in range(3)]
    result = restore(str(sources["gpt.qcow2"]), *devices, "--json",
                     "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    done = summary(result)
    assert done["outcome"] == "restored"
    assert (done["image"], done["format"]) == (str(sources["gpt.qcow2"]), "qcow2")
    assert [t["phase"] for t in done["targets"]] == ["done"] * 3
    assert all(t["verified"] == DISK and not t["mismatches"] for t in done["targets"])
    for device in devices:
        cmp(sources["gpt"], device, DISK)
    assert not list((tmp_path / "maps").iterdir())  # finished: no map left to resume from


@pytest.mark.parametrize("fmt", ["gpt.img.zst", "gpt.img"])
def test_other_formats_and_skip_holes(sources: dict[str, Path], tmp_path: Path,
                                      targets: ExitStack, fmt: str) -> None:
    """Holes skipped by letting the device zero them still read as zeros: the target had
    other data everywhere before."""
    device = target(targets, tmp_path, "t", DISK, fill=b"\xff\x17")
    result = restore(str(sources[fmt]), device, "--skip-holes",
                     "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    cmp(sources["gpt"], device, DISK)


def test_single_partition_onto_a_partition(sources: dict[str, Path], tmp_path: Path,
                                           targets: ExitStack) -> None:
    """Logical partition 6 (vfat) of a DOS image onto partition 2 of another disk; partition 1
    of that disk is left alone."""
    backing = blank(tmp_path / "disk.target", DISK, fill=b"keep me ")
    run("sfdisk", "-q", str(backing), stdin="label: gpt\n,8M,L\n,12M,L\n")
    device = targets.enter_context(loop_device(str(backing), partitions=True))
    before = digest(f"{device}p1")
    with loop_device(str(sources["dos"]), partitions=True, read_only=True) as source:
        expected = digest(f"{source}p6")
        layout = partitions(source)
    result = restore(str(sources["dos.qcow2"]), f"{device}p2", "--partition", "6",
                     "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    _, _, sectors = next(p for p in layout if p[0] == 6)
    assert digest(f"{device}p2", 0, sectors * 512) == expected
    assert digest(f"{device}p1") == before
    assert [p[0] for p in partitions(device)] == [1, 2]  # the target's own table is intact
    fsck = subprocess.run(["fsck.vfat", "-n", f"{device}p2"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_partition_of_an_image_onto_a_whole_disk(sources: dict[str, Path], tmp_path: Path,
                                                 targets: ExitStack) -> None:
    with loop_device(str(sources["gpt"]), partitions=True, read_only=True) as source:
        _, start, sectors = partitions(source)[0]
    device = target(targets, tmp_path, "t", 24 * MIB)
    result = restore(str(sources["gpt.qcow2"]), device, "--partition", "1",
                     "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    assert digest(device, 0, sectors * 512) == digest(sources["gpt"], start * 512, sectors * 512)
    fsck = subprocess.run(["fsck.ext4", "-n", "-f", device], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def assert_partitions_equal(source: Path, device: str) -> None:
    """Every partition of the source disk is on the target, at its place, byte for byte; fsck
    finds the file systems clean."""
    with loop_device(str(source), partitions=True, read_only=True) as original:
        layout = partitions(original)
        for number, start, sectors in layout:
            if sectors > 2:
                assert digest(f"{original}p{number}") == digest(device, start * 512,
                                                                 sectors * 512), number
    subprocess.run(["partx", "-a", device], capture_output=True)
    assert partitions(device) == layout
    first = subprocess.run(["fsck.ext4", "-n", "-f", f"{device}p1"], capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stdout


def test_gpt_image_onto_a_larger_disk(sources: dict[str, Path], tmp_path: Path,
                                      targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", 80 * MIB)
    result = restore(str(sources["gpt.qcow2"]), device, "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    assert "No problems found" in run("sgdisk", "-v", device)
    run("sfdisk", "--verify", device)
    with open(device, "rb") as disk:  # the backup header now sits in the target's last sector
        disk.seek(80 * MIB - 512)
        assert disk.read(8) == b"EFI PART"
    assert_partitions_equal(sources["gpt"], device)


@pytest.mark.parametrize("kind", ["gpt", "dos"])
def test_smaller_disk_gets_the_partitions_and_a_fitting_table(
        sources: dict[str, Path], tmp_path: Path, targets: ExitStack, kind: str) -> None:
    device = target(targets, tmp_path, "t", 40 * MIB if kind == "gpt" else 48 * MIB)
    result = restore(str(sources[f"{kind}.qcow2"]), device, "--json",
                     "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    assert summary(result)["targets"][0]["size"] < (DISK if kind == "gpt" else 64 * MIB)
    run("sfdisk", "--verify", device)
    if kind == "gpt":
        assert "No problems found" in run("sgdisk", "-v", device)
    assert_partitions_equal(sources[kind], device)


def test_too_small_target_is_refused_with_sizes(sources: dict[str, Path], tmp_path: Path,
                                               targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", 16 * MIB, fill=b"untouched")
    before = digest(device)
    result = restore(str(sources["gpt.qcow2"]), device, "--map-dir", str(tmp_path / "maps"))
    assert_clean_failure(result, 5, rf"{device} is too small: it holds 16 MiB \(16777216 "
                         rf"bytes\), the image needs 48 MiB \(50331648 bytes\)")
    assert digest(device) == before


def test_mounted_target_is_refused_and_untouched(sources: dict[str, Path], tmp_path: Path,
                                                targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", DISK)
    run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
    with mounted_here(device) as mountpoint:
        (mountpoint / "precious.txt").write_text("still here\n")
        run("sync")
        before = digest(tmp_path / "t.target")  # the backing file: no stale device cache
        result = restore(str(sources["gpt.qcow2"]), device, "--map-dir", str(tmp_path / "maps"))
        assert_clean_failure(result, 5, rf"refusing to write to {device}: .*mounted")
        run("sync")
        assert digest(tmp_path / "t.target") == before
        assert (mountpoint / "precious.txt").read_text() == "still here\n"


def test_kill_9_then_the_same_command_completes(sources: dict[str, Path], tmp_path: Path,
                                                targets: ExitStack) -> None:
    devices = [target(targets, tmp_path, f"t{i}", DISK, fill=b"stale ") for i in range(2)]
    maps = tmp_path / "maps"
    args = ("restore", str(sources["gpt.qcow2"]), *devices, "--yes", "--map-dir", str(maps),
            "--checkpoint", "0")
    process = rescue_process(*args)
    try:
        partial = wait_for_partial_map(maps, process)
    finally:
        process.kill()
        process.wait()
    assert partial, "the restore finished before it could be interrupted"
    result = rescue(*args)
    assert result.returncode == 0, result.stderr
    for device in devices:
        cmp(sources["gpt"], device, DISK)
    assert not list(maps.glob("*.map"))


def wait_for_partial_map(maps: Path, process: subprocess.Popen[str]) -> bool:
    """Wait until some target's map records written data, but not all of it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for path in maps.glob("*.map"):
            blocks = [line.split() for line in path.read_text().splitlines()
                      if line and not line.startswith("#")][1:]
            if any(b[2] == "+" for b in blocks) and any(b[2] == "?" for b in blocks):
                return True
        time.sleep(0.005)
    return False


def test_no_terminal_and_no_yes_is_refused(sources: dict[str, Path], tmp_path: Path,
                                          targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", DISK, fill=b"untouched")
    before = digest(device)
    result = rescue("restore", str(sources["gpt.qcow2"]), device)
    assert_clean_failure(result, 5, "stdin is not a terminal; pass --yes")
    assert digest(device) == before


def test_read_only_and_vanished_targets(sources: dict[str, Path], tmp_path: Path,
                                        targets: ExitStack) -> None:
    read_only = target(targets, tmp_path, "ro", DISK, read_only=True)
    result = restore(str(sources["gpt.qcow2"]), read_only, "--map-dir", str(tmp_path / "m"))
    assert_clean_failure(result, 5, rf"{read_only} is read-only")
    # A device node whose device is gone. Not a detached loop device: another process may
    # attach that loop number before the restore runs, and the restore would write onto it.
    gone = tmp_path / "gone"
    os.mknod(gone, stat.S_IFBLK | 0o600, os.makedev(LOCAL_USE_MAJOR, 0))
    result = restore(str(sources["gpt.qcow2"]), str(gone), "--map-dir", str(tmp_path / "m"))
    assert result.returncode == 5 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
