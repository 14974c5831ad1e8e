"""The write-safety policy on real devices: it refuses what must not be written, and says why."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rescue.devices.discover import Partition, find
from rescue.devices.safety import (
    Reason,
    Verdict,
    check_write_target,
    protect,
    require_writable,
)
from rescue.errors import ExitCode, RefusedError
from tests.fixtures.disks import GPT_LAYOUT, LoopDisk, mounted, partitioned_disk
from tests.fixtures.loop import loop_device

MiB = 1 << 20


def codes(verdict: Verdict) -> set[str]:
    return {reason.code for reason in verdict.reasons}


def test_verdict_force_overrides_only_overridable_reasons() -> None:
    soft = Reason("mounted", "/dev/x1 is mounted on /mnt", True)
    hard = Reason("running-system", "/dev/x holds the running system (root)", False)
    assert Verdict("/dev/x", ()).allowed()
    assert not Verdict("/dev/x", (soft,)).allowed()
    assert Verdict("/dev/x", (soft,)).allowed(force=True)
    assert not Verdict("/dev/x", (soft, hard)).allowed(force=True)
    assert Verdict("/dev/x", (soft, hard)).blocking(force=True) == (hard,)


def test_running_system_disk_is_refused_even_with_force() -> None:
    verdict = check_write_target("/dev/vda")
    assert "running-system" in codes(verdict)
    assert not verdict.allowed(force=True)
    with pytest.raises(RefusedError) as raised:
        require_writable("/dev/vda", force=True)
    assert raised.value.exit_code == ExitCode.REFUSED
    message = str(raised.value)
    assert "\n" not in message and "running system" in message and "cannot override" in message


def test_missing_device_and_directory() -> None:
    assert codes(check_write_target("/dev/no-such-disk")) == {"missing"}
    assert codes(check_write_target("/no/such/dir/image.qcow2")) == {"missing"}
    assert codes(check_write_target("/dev")) == {"not-writable"}


@pytest.mark.slow
@pytest.mark.root
def test_unmounted_loop_is_allowed_and_too_small_refused(tmp_path: Path) -> None:
    with partitioned_disk(tmp_path / "free.img", GPT_LAYOUT, {}) as disk:
        assert check_write_target(disk.device).allowed()
        assert check_write_target(disk.partition(1)).allowed()
        too_small = check_write_target(disk.device, needed_size=64 * MiB)
        assert codes(too_small) == {"too-small"} and not too_small.allowed(force=True)


@pytest.mark.slow
@pytest.mark.root
def test_mounted_partition_refuses_its_disk_which_stays_untouched(gpt_disk: LoopDisk,
                                                                  tmp_path: Path) -> None:
    with mounted(gpt_disk.partition(1), tmp_path / "mnt"):
        # The mounted file system itself writes (journal, mount count); all else must not change.
        before = outside_partition_one(gpt_disk)
        for target in (gpt_disk.device, gpt_disk.partition(1)):
            verdict = check_write_target(target)
            assert "mounted" in codes(verdict)
            assert any(str(tmp_path / "mnt") in reason.message for reason in verdict.reasons)
            with pytest.raises(RefusedError, match=r"mounted on .*--force to override"):
                guarded_wipe(target)
            assert verdict.allowed(force=True)
        sibling = check_write_target(gpt_disk.partition(2))
        assert sibling.allowed(), sibling
        assert outside_partition_one(gpt_disk) == before


def outside_partition_one(disk: LoopDisk) -> str:
    part = find(disk.partition(1))
    assert isinstance(part, Partition)
    data = disk.image.read_bytes()
    return hashlib.sha256(data[:part.start] + data[part.start + part.size:]).hexdigest()


def guarded_wipe(target: str) -> None:
    """What every writer does: ask the policy, then write."""
    require_writable(target)
    with open(target, "r+b") as device:
        device.write(bytes(MiB))


@pytest.mark.slow
@pytest.mark.root
def test_active_swap_is_never_overridable(gpt_disk: LoopDisk) -> None:
    swap = gpt_disk.partition(4)
    os.system(f"swapon {swap} 2>/dev/null")
    try:
        if swap not in Path("/proc/swaps").read_text():
            pytest.skip("swapon is not permitted here")
        verdict = check_write_target(gpt_disk.device)
        assert "swap" in codes(verdict) and not verdict.allowed(force=True)
    finally:
        os.system(f"swapoff {swap} 2>/dev/null")


@pytest.mark.slow
@pytest.mark.root
def test_read_only_loop_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "ro.img"
    image.write_bytes(bytes(MiB))
    with loop_device(str(image), read_only=True) as device:
        verdict = check_write_target(device)
        assert codes(verdict) == {"read-only"} and not verdict.allowed(force=True)


@pytest.mark.slow
@pytest.mark.root
def test_source_and_its_sectors_are_never_written(gpt_disk: LoopDisk) -> None:
    disk, part = gpt_disk.device, gpt_disk.partition(1)
    for target, source in ((disk, disk), (disk, part), (part, disk)):
        verdict = check_write_target(target, protected=[source])
        assert "is-source" in codes(verdict) and not verdict.allowed(force=True), (target, source)
    sibling = check_write_target(gpt_disk.partition(2), protected=[part])
    assert codes(sibling) == {"same-disk"} and sibling.allowed(force=True)


@pytest.mark.slow
@pytest.mark.root
def test_image_file_on_a_partition_of_the_source(gpt_disk: LoopDisk, tmp_path: Path) -> None:
    with mounted(gpt_disk.partition(1), tmp_path / "mnt") as mountpoint:
        target = str(mountpoint / "image.qcow2")
        inside = check_write_target(target, protected=[gpt_disk.device])
        assert "is-source" in codes(inside) and not inside.allowed(force=True)
        beside = check_write_target(target, protected=[gpt_disk.partition(3)])
        assert codes(beside) == {"same-disk"} and beside.allowed(force=True)


def test_image_file_same_inode_and_a_job_reading_it(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    link = tmp_path / "again.img"
    os.link(image, link)
    verdict = check_write_target(str(link), protected=[str(image)])
    assert codes(verdict) == {"is-source"} and not verdict.allowed(force=True)
    assert check_write_target(str(link)).allowed()
    with protect(str(image)):
        verdict = check_write_target(str(link))
        assert codes(verdict) == {"job-source"} and not verdict.allowed(force=True)
        assert f"being read by PID {os.getpid()}" in verdict.reasons[0].message
    assert check_write_target(str(image)).allowed()


def test_free_space_shortfall_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    verdict = check_write_target(str(tmp_path / "big.img"), needed_size=1 << 60)
    assert verdict.allowed()
    assert [warning.code for warning in verdict.warnings] == ["free-space"]


@pytest.mark.slow
@pytest.mark.root
def test_read_only_mount_and_unwritable_file(gpt_disk: LoopDisk, tmp_path: Path) -> None:
    with mounted(gpt_disk.partition(1), tmp_path / "ro", ("mount", "-o", "ro")) as mountpoint:
        assert codes(check_write_target(str(mountpoint / "new.img"))) == {"read-only"}
