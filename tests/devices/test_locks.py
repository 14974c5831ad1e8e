"""Locks between rescue jobs, held by real processes: a write meets every other use of what it
touches (the same file, a partition of the disk), readers share, and a killed holder frees its
locks at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.devices import locks as locks_module
from rescue.devices.locks import Locks, _file_keys, lock_dir, users
from rescue.devices.safety import check_write_target
from rescue.errors import RefusedError
from tests.fixtures.disks import GPT_LAYOUT, LoopDisk, partitioned_disk

HOLD = """
import sys, time
from rescue.devices.locks import Locks
held = Locks()
for mode, path in zip(sys.argv[1::2], sys.argv[2::2]):
    held.write(path) if mode == "write" else held.read(path)
print("held", flush=True)
time.sleep(600)
"""


class Holder:
    """Another process holding locks, as another rescue job would."""

    def __init__(self, *uses: tuple[str, str]) -> None:
        arguments = [word for use in uses for word in use]
        self.process = subprocess.Popen([sys.executable, "-c", HOLD, *arguments],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "held\n", self.process.stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


def refusal(use: str, path: str) -> str:
    locks = Locks()
    with pytest.raises(RefusedError) as refused:
        locks.write(path) if use == "write" else locks.read(path)
    locks.release()
    return str(refused.value)


def test_a_writer_is_named_and_its_kill_frees_the_lock(tmp_path: Path,
                                                      holders: list[Holder]) -> None:
    image = str(tmp_path / "disk.qcow2")
    holder = Holder(("write", image))
    holders.append(holder)
    for use in ("write", "read"):
        message = refusal(use, image)
        assert message.startswith(f"{image} is being written by PID {holder.pid} (")
        assert "-c" in message
    os.kill(holder.pid, signal.SIGKILL)
    holder.process.wait()
    with Locks() as locks:  # nothing stale is left behind by kill -9
        locks.write(image)
        assert [use.holder.pid for use in users(image)] == [os.getpid()]
    assert users(image) == []


def test_readers_share_and_keep_writers_out(tmp_path: Path, holders: list[Holder]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    holders.append(Holder(("read", str(image))))
    with Locks() as locks:
        locks.read(str(image))
    link = tmp_path / "link.img"
    os.link(image, link)
    for name in (image, link, tmp_path / "." / "disk.img"):  # any name of the same file
        assert f"is being read by PID {holders[0].pid}" in refusal("write", str(name))


def test_a_failed_use_takes_nothing(tmp_path: Path, holders: list[Holder]) -> None:
    free, taken = str(tmp_path / "free.img"), str(tmp_path / "taken.img")
    holders.append(Holder(("write", taken)))
    locks = Locks()
    locks.write(free)
    with pytest.raises(RefusedError):
        locks.write(taken)
    locks.release()
    assert users(free) == [] and len(users(taken)) == 1


@pytest.fixture(scope="module")
def bare_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    with partitioned_disk(tmp_path_factory.mktemp("locks") / "disk.img", GPT_LAYOUT,
                          {}) as disk:
        yield disk


@pytest.fixture
def first_read(bare_disk: LoopDisk, holders: list[Holder]) -> Holder:
    """Another process reading the disk's first partition."""
    holders.append(Holder(("read", bare_disk.partition(1))))
    return holders[-1]


@pytest.mark.slow
@pytest.mark.root
def test_devices_conflict_where_they_share_sectors(bare_disk: LoopDisk, first_read: Holder,
                                                   holders: list[Holder]) -> None:
    disk, first, second = bare_disk.device, bare_disk.partition(1), bare_disk.partition(2)
    reader = first_read
    assert refusal("write", disk) == (f"{disk}: {first} is being read by PID {reader.pid} "
                                      f"({reader_command(reader)})")
    assert f"{first} is being read by PID {reader.pid}" in refusal("write", first)
    with Locks() as locks:  # another partition of the disk: no shared sectors
        locks.write(second)
    with Locks() as locks:  # readers share, by any name of the device
        locks.read(disk.replace("/dev/", "/dev/../dev/"))
    reader.kill()
    writer = Holder(("write", disk))
    holders.append(writer)
    for use, path in (("read", first), ("write", second), ("read", disk)):
        assert f"being written by PID {writer.pid}" in refusal(use, path)


def reader_command(holder: Holder) -> str:
    with open(f"/proc/{holder.pid}/cmdline", "rb") as f:
        return " ".join(word.decode() for word in f.read().split(b"\0") if word)


def test_the_last_holder_removes_the_lock_files(tmp_path: Path) -> None:
    image = tmp_path / "image.img"
    image.write_bytes(b"x")
    with Locks() as first, Locks() as second:
        first.read(str(image))
        second.read(str(image))
        files = [os.path.join(lock_dir(), key) for key in _file_keys(str(image))]
        assert len(files) == 2 and all(os.path.exists(name) for name in files)
        first.release()
        assert all(os.path.exists(name) for name in files)  # still held by the second
    assert not any(os.path.exists(name) for name in files)


@pytest.mark.slow
@pytest.mark.root
def test_the_safety_policy_sees_jobs_of_other_processes(bare_disk: LoopDisk,
                                                        first_read: Holder) -> None:
    disk, first, second = bare_disk.device, bare_disk.partition(1), bare_disk.partition(2)
    reader = first_read
    whole = check_write_target(disk)
    assert not whole.allowed(force=True)
    assert (f"{disk} shares sectors with {first}, which is being read by PID {reader.pid}"
            in whole.reasons[0].message)
    beside = check_write_target(second)
    assert {reason.code for reason in beside.reasons} == {"same-disk"}
    assert beside.allowed(force=True) and not beside.allowed()


def test_without_run_the_locks_live_in_the_users_own_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks_module, "RUN_DIR", "/proc/rescue/locks")  # cannot be created
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert lock_dir() == str(tmp_path / "rescue" / "locks")
    image = str(tmp_path / "disk.img")
    with Locks() as locks:
        locks.write(image)
        assert [use.holder.pid for use in users(image)] == [os.getpid()]
        assert os.listdir(tmp_path / "rescue" / "locks")


def test_a_new_file_on_a_freed_inode_number_is_not_the_old_one(tmp_path: Path,
                                                               holders: list[Holder]) -> None:
    """A job holds the map it has since replaced (a save renames a new file over it) or a
    file it has deleted; a file later given the same inode number is free to use."""
    old = tmp_path / "old.map"
    old.write_bytes(b"x")
    number = old.stat().st_ino
    holders.append(Holder(("write", str(old))))
    old.unlink()
    reused = None
    for attempt in range(2000):  # the file system hands out the freed number again soon
        candidate = tmp_path / f"new-{attempt}.img"
        candidate.write_bytes(b"y")
        if candidate.stat().st_ino == number:
            reused = candidate
            break
    assert reused is not None, "no new file was given the freed inode number"
    with Locks() as locks:
        locks.write(str(reused))
        assert [use.holder.pid for use in users(str(reused))] == [os.getpid()]
    os.link(reused, tmp_path / "other-name.img")  # and another name still meets the lock
    holders.append(Holder(("write", str(reused))))
    assert f"being written by PID {holders[1].pid}" in refusal("read",
                                                               str(tmp_path / "other-name.img"))
