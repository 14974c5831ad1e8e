"""`rescue restore` reads each target back while it is written, or after, and never early.

The target is a real block device over a FUSE file (tests/fixtures/faultdisk.py) whose process
journals every read, write and flush it serves, in order: the judge of when the read-back ran.
A chunk may be read back only once a flush made every write to it durable; reading back during
the writing must overlap the writes, reading back after must not; a spinning disk (its loop
device's queue/rotational set to 1, as the kernel lets root do) is read back after the writing
unless told otherwise. A disk that acknowledges writes and drops them is caught either way, at
the start, across the point where the writer syncs for the read-back, and at the very end.

Other programs may read any block device's first and last mebibytes at any moment (blkid,
lsblk and udev probing for signatures), so the journal is judged between them.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.engine.pipeline import CHUNK, FOLLOW_SYNC
from rescue.formats.fingerprint import chunk_digest
from rescue.io.blockdev import Watermark, read_chunks, rotational
from tests.fixtures.cli import assert_clean_failure, rescue, run
from tests.fixtures.faultdisk import FailingDisk, Served, failing_disk, make_backing
from tests.fixtures.loop import loop_device
from tests.fixtures.restore import MIB, blank, cmp, make_image, target

pytestmark = [pytest.mark.slow, pytest.mark.root]

SIZE = 2 * FOLLOW_SYNC + 4 * MIB  # the watermark moves twice before the end
PROBED = MIB  # what signature probes read, at each end of the disk


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A source disk of mixed content and its qcow2 image, made by `rescue image`."""
    folder = tmp_path_factory.mktemp("readback")
    make_backing(str(folder / "source.disk"), SIZE, seed=23)
    return folder / "source.disk", make_image(folder / "source.disk", folder / "source.qcow2")


def served_disk(stack: ExitStack, folder: Path, lose: str | None = None,
                spinning: bool | None = None) -> FailingDisk:
    """A journalled target holding stale bytes; `spinning` sets what the kernel says of it."""
    backing = blank(folder / "target", SIZE, fill=b"stale ")
    disk = stack.enter_context(failing_disk(str(backing), "sim:", lose_writes=lose))
    if spinning is not None:
        flag = Path("/sys/block", os.path.basename(disk.device), "queue", "rotational")
        flag.write_text("1" if spinning else "0")
    return disk


def restore(image: Path, folder: Path, device: str, *options: str) -> tuple[int, str]:
    result = rescue("restore", str(image), device, "--yes", "--map-dir", str(folder / "maps"),
                    *options)
    return result.returncode, result.stderr


def judged(journal: list[Served]) -> list[Served]:
    """The requests that touch the disk between its probed ends."""
    return [event for event in journal if event.kind == "fsync"
            or (event.offset + event.size > PROBED and event.offset < SIZE - PROBED)]


def read_before_durable(journal: list[Served]) -> list[Served]:
    """The reads (between the probed ends) that touched bytes written since the last flush
    before them."""
    unflushed: list[tuple[int, int]] = []
    early = []
    for event in judged(journal):
        if event.kind == "write":
            unflushed.append((event.offset, event.offset + event.size))
        elif event.kind == "fsync":
            unflushed.clear()
        elif any(start < event.offset + event.size and event.offset < end
                 for start, end in unflushed):
            early.append(event)
    return early


def reads_while_writing(journal: list[Served]) -> int:
    """How many reads (between the probed ends) came between the first write and the last."""
    events = judged(journal)
    writes = [i for i, event in enumerate(events) if event.kind == "write"]
    assert writes, "nothing was written"
    return sum(event.kind == "read" for event in events[writes[0]:writes[-1]])


@pytest.mark.parametrize(("option", "spinning", "overlaps"), [
    ("during", True, True), ("after", False, False),
    (None, False, True), (None, True, False)])
def test_read_back_runs_when_asked_and_only_over_durable_bytes(
        image: tuple[Path, Path], tmp_path: Path, stack: ExitStack,
        option: str | None, spinning: bool, overlaps: bool) -> None:
    disk, qcow2 = image
    target = served_disk(stack, tmp_path, spinning=spinning)
    assert rotational(target.device) is spinning
    code, stderr = restore(qcow2, tmp_path, target.device,
                           *(["--read-back", option] if option else []))
    assert code == 0, stderr
    cmp(disk, target.device, SIZE)
    journal = target.served()
    assert read_before_durable(journal) == []
    assert (reads_while_writing(journal) > 0) is overlaps
    # every byte was read back after the writing began
    first_write = next(i for i, event in enumerate(journal) if event.kind == "write")
    read_back = sorted((e.offset, e.offset + e.size) for e in journal[first_write:]
                       if e.kind == "read")
    covered = 0
    for start, end in read_back:
        if start <= covered:
            covered = max(covered, end)
    assert covered >= SIZE


@pytest.mark.parametrize("lost_at", [0, FOLLOW_SYNC - 4096, SIZE - 8192])
@pytest.mark.parametrize("option", ["during", "after"])
def test_a_disk_that_drops_writes_fails_the_read_back(
        image: tuple[Path, Path], tmp_path: Path, stack: ExitStack,
        option: str, lost_at: int) -> None:
    """Lost at the start, across the point the writer syncs at for the read-back, at the end:
    exactly those sectors are reported and given back to the map."""
    _, qcow2 = image
    lost = 8192
    liar = served_disk(stack, tmp_path, lose=f"{lost_at}+{lost}")
    maps = str(tmp_path / "maps")
    result = rescue("restore", str(qcow2), liar.device, "--yes", "--map-dir", maps,
                    "--read-back", option)
    assert_clean_failure(result, 1, rf"{liar.device}: verify found 1 differing ranges")
    assert f"{lost_at:#x}+{lost:#x}" in result.stderr
    assert read_before_durable(liar.served()) == []
    again = rescue("restore", str(qcow2), liar.device, "--yes", "--map-dir", maps, "--json")
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["outcome"] == "mismatch"
    assert [t["mismatches"] for t in summary["targets"]] == [[[lost_at, lost]]]


def test_the_read_back_ends_where_the_writer_stopped(tmp_path: Path, stack: ExitStack) -> None:
    """A writer that stops short (its disk failed) ends the watermark: the read-back yields the
    durable chunks and no more, instead of waiting for ever."""
    device = target(stack, tmp_path, "t", 6 * CHUNK, fill=b"data ")
    written = Watermark()
    got: list[int] = []

    def read_back() -> None:
        got.extend(offset for offset, _, _ in read_chunks(
            device, 6 * CHUNK, CHUNK, chunk_digest, written=written))

    reader = threading.Thread(target=read_back)
    reader.start()
    written.advance(2 * CHUNK + 512)  # two whole chunks, and part of the third
    written.end()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert got == [0, CHUNK]


def test_a_loop_device_over_memory_does_not_spin(tmp_path: Path, stack: ExitStack) -> None:
    """The kernel marks a loop device over a file system without a disk (tmpfs) as not
    rotational; a partition answers as its disk does; what is no block device counts as
    spinning."""
    backing = Path("/dev/shm") / f"readback-{os.getpid()}"
    stack.callback(backing.unlink, missing_ok=True)
    blank(backing, 8 * MIB)
    run("sfdisk", "-q", str(backing), stdin="label: gpt\n,4M,L\n")
    device = stack.enter_context(loop_device(str(backing), partitions=True))
    partition = f"{device}p1"
    assert rotational(device) is False and rotational(partition) is False
    Path("/sys/block", os.path.basename(device), "queue", "rotational").write_text("1")
    assert rotational(device) is True and rotational(partition) is True
    assert rotational(str(tmp_path)) is True


@pytest.mark.parametrize("gone_after", [FOLLOW_SYNC // 2, FOLLOW_SYNC + 6 * MIB, SIZE])
def test_a_disk_lost_while_read_back_during_the_writing_fails_cleanly_and_resumes(
        image: tuple[Path, Path], tmp_path: Path, stack: ExitStack, gone_after: int) -> None:
    """The disk stops answering part-way (its reads and writes count): the restore ends with
    one line, its map claims only what was synced, and once the disk is back the same command
    finishes it."""
    disk, qcow2 = image
    backing = blank(tmp_path / "target", SIZE, fill=b"stale ")
    lost = stack.enter_context(failing_disk(str(backing), f"sim:gone={gone_after}"))
    args = ("restore", str(qcow2), lost.device, "--yes", "--map-dir", str(tmp_path / "maps"),
            "--read-back", "during")
    result = rescue(*args)
    assert lost.gone
    assert_clean_failure(result, 3, rf"(cannot write to|cannot read back) {lost.device}: "
                                    "Input/output error")
    lost.heal()
    again = rescue(*args)
    assert again.returncode == 0, again.stderr
    assert "read back as written" in again.stdout
    cmp(disk, lost.device, SIZE)
