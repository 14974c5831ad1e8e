"""`rescue image` when the source goes away part-way, on real parts: a file served by FUSE whose
server is killed (read directly, and through a direct-I/O loop device), a loop device that
starts answering EIO to everything, and one whose medium goes (size 0). The rescue must stop
within seconds with exit 4 and one `rescue:` line, record none of the failures of the vanished
source as bad, and a resume on the source once it is back must end with the image and map of
one uninterrupted rescue.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.engine.rescue import Outcome, Rescue
from rescue.errors import SourceLostError
from rescue.formats import mapfile
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.io.source import BlockSource
from rescue.rangemap import RangeMap
from tests.fixtures.cli import REPO_ROOT, run
from tests.fixtures.faultdisk import (
    DISK_NAME,
    SECTOR,
    failing_disk,
    make_backing,
    read_log,
    require_direct_io,
    stop_server,
    wait_until_served,
)
from tests.fixtures.loop import detach, loop_device

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1 << 20
SIZE = 96 * MIB
BAD = (8 * MIB + 3 * SECTOR, 16 * SECTOR)  # read before the source goes: stays bad
BAD_CLUSTER = (8 * MIB, 64 << 10)  # what the copy passes mark non-trimmed around it
GONE_AT = 32 * MIB  # bytes served before the source goes away
# the served disk's speed: slow enough that the rescue is still reading when the test, which
# polls the read log, kills the server at GONE_AT (at full speed it may read it all first)
RATE = 64 * MIB
EXIT_WITHIN = 10.0  # seconds from the source going away to the exit


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source-lost") / "source.disk"
    make_backing(str(path), SIZE, seed=23)
    return path


@pytest.fixture(scope="module")
def expected(backing: Path) -> bytes:
    """The image of an uninterrupted rescue: the disk, with zeros where it cannot be read."""
    data = bytearray(backing.read_bytes())
    start, length = BAD
    data[start:start + length] = bytes(length)
    return bytes(data)


class KillableServer:
    """A FUSE process serving `backing` as MOUNTPOINT/disk, failing reads in BAD, logging every
    read; it can be killed (the mount stays, answering ENOTCONN) and started again."""

    def __init__(self, backing: Path, folder: Path) -> None:
        self.backing, self.folder = backing, folder
        self.mountpoint = str(folder / "mnt")
        self.log = folder / "reads.log"
        self.process: subprocess.Popen[bytes] | None = None
        os.mkdir(self.mountpoint)

    @property
    def disk(self) -> str:
        return os.path.join(self.mountpoint, DISK_NAME)

    def start(self) -> None:
        stderr = self.folder / "stderr.txt"
        self.log.write_text("")
        with open(stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fixtures.faultdisk", str(self.backing),
                 self.mountpoint, f"sim:size={SIZE},bad={BAD[0]}+{BAD[1]},rate={RATE}", "--log",
                 str(self.log)],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        wait_until_served(self.process, self.mountpoint, stderr, 15.0)

    def served(self) -> int:
        return sum(read.size for read in read_log(str(self.log)) if read.ok)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Unmount (a dead server's mount too) and end the process."""
        if self.process is not None:
            stop_server(self.process, self.mountpoint)


@contextlib.contextmanager
def killable_server(backing: Path) -> Iterator[KillableServer]:
    folder = Path(tempfile.mkdtemp(prefix="killable-"))
    server = KillableServer(backing, folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def attach(file: str) -> str:
    """A read-only direct-I/O loop device over `file`."""
    device = run("losetup", "-f", "--show", "--direct-io=on", "--read-only", file).strip()
    require_direct_io(device)
    return device


def image_command(source: str, image: Path) -> list[str]:
    return [sys.executable, "-m", "rescue", "image", source, str(image), "--checkpoint", "1"]


@contextlib.contextmanager
def started(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """The command running, stderr piped; killed if still running on the way out, so it never
    holds a device the fixtures must detach."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def states_outside(map_path: Path, area: tuple[int, int]) -> set[str]:
    rmap = mapfile.load(str(map_path), SIZE).rmap
    rmap.set(*area, "+")
    return {state for _, _, state in rmap.areas()}


def assert_stopped_as_lost(process: subprocess.Popen[str], gone_at: float,
                           map_path: Path) -> float:
    """Exit 4 within EXIT_WITHIN seconds, one `rescue:` line, nothing recorded bad outside the
    cluster of BAD, which was read before the source went; returns the seconds it took."""
    _, stderr = process.communicate(timeout=EXIT_WITHIN + 5)
    seconds = time.monotonic() - gone_at
    assert process.returncode == 4, stderr
    assert seconds <= EXIT_WITHIN
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescue: "), stderr
    assert "run the same command again" in lines[0]
    states = states_outside(map_path, BAD_CLUSTER)
    assert "?" in states and not states & set("*/-"), states
    return seconds


def assert_resumes_to_uninterrupted(command: list[str], image: Path, expected: bytes) -> None:
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # BAD stays unreadable
    assert image.read_bytes() == expected
    bad = [(pos, length) for pos, length, state in
           mapfile.load(f"{image}.map", SIZE).rmap.areas() if state != "+"]
    assert bad == [BAD]
    assert states_outside(Path(f"{image}.map"), BAD) == {"+"}


@pytest.mark.parametrize(("through", "killed"), [
    ("file", "mid-rescue"), ("loop", "mid-rescue"),
    ("loop", "before-reading"),  # nothing read yet that a probe could read again
])
def test_a_killed_fuse_server_stops_the_rescue_and_it_resumes_once_back(
        backing: Path, expected: bytes, tmp_path: Path, through: str, killed: str) -> None:
    image = tmp_path / "out.img"
    with killable_server(backing) as server, contextlib.ExitStack() as loops:
        source = attach(server.disk) if through == "loop" else server.disk
        if through == "loop":
            loops.callback(detach, source)
        command = image_command(source, image)
        if killed == "before-reading":
            server.kill()
        with started(command) as process:
            while killed == "mid-rescue" and server.served() < GONE_AT:
                assert process.poll() is None, "the rescue ended before the server was killed"
                time.sleep(0.01)
            if killed == "mid-rescue":
                server.kill()
            assert_stopped_as_lost(process, time.monotonic(), Path(f"{image}.map"))
        if through == "file":  # run again while it is still gone: exit 4 again, map as it was
            saved = Path(f"{image}.map").read_bytes()
            again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                   timeout=60)
            assert again.returncode == 4, again.stderr
            assert "run the same command again" in again.stderr
            assert Path(f"{image}.map").read_bytes() == saved
        server.stop()
        server.start()
        if through == "loop":  # back under a new name, as a reconnected disk often is
            loops.callback(detach, source := attach(server.disk))
            command = image_command(source, image)
        assert_resumes_to_uninterrupted(command, image, expected)


def test_a_device_that_answers_eio_to_everything_is_not_scraped(
        backing: Path, tmp_path: Path) -> None:
    """The loop device stays and its backing file answers; only its reads fail, all of them.
    What tells it from a bad disk is that sectors it read before fail too."""
    writable = tmp_path / "source.disk"  # a disk without bad sectors
    shutil.copyfile(backing, writable)
    image = tmp_path / "out.img"
    with failing_disk(str(writable), f"sim:gone={GONE_AT}", error=errno.EIO) as disk:
        command = image_command(disk.device, image)
        with started(command) as process:
            while not disk.gone and process.poll() is None:
                time.sleep(0.01)
            assert_stopped_as_lost(process, time.monotonic(), Path(f"{image}.map"))
        disk.heal()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    assert image.read_bytes() == backing.read_bytes()


class EjectingWriter(RawWriter):
    """The image writer, which empties the source's medium once `after` bytes are written: the
    loop device's backing file is cut to nothing and the loop told, as a card reader whose card
    was pulled reports size 0."""

    def __init__(self, path: str, size: int, device: str, medium: Path, after: int) -> None:
        super().__init__(path, size)
        self.device, self.medium, self.after = device, medium, after

    def write(self, offset: int, data: bytes | memoryview) -> None:
        super().write(offset, data)
        self.after -= len(data)
        if 0 <= self.after < len(data):  # the write that crossed the mark
            os.truncate(self.medium, 0)
            run("losetup", "-c", self.device)


def test_a_device_whose_medium_goes_stops_without_bad_sectors(
        backing: Path, tmp_path: Path) -> None:
    medium, image = tmp_path / "medium.disk", tmp_path / "out.img"
    shutil.copyfile(backing, medium)
    with loop_device(str(medium)) as device:
        source = BlockSource(device)
        writer = EjectingWriter(str(image), SIZE, device, medium, GONE_AT)
        saved: list[Mapfile] = []
        rescue = Rescue(source, writer, Mapfile(RangeMap(SIZE)), saved.append)
        with pytest.raises(SourceLostError, match="its size is now 0"):
            rescue.run()
        writer.close()
        source.close()
        states = [state for _, _, state in saved[-1].rmap.areas()]
        assert states == ["+", "?"]

        shutil.copyfile(backing, medium)  # the card is back
        run("losetup", "-c", device)
        source = BlockSource(device)
        writer = RawWriter(str(image), SIZE)
        outcome = Rescue(source, writer, saved[-1], saved.append).run()
        writer.close()
        source.close()
    assert outcome is Outcome.RESCUED
    assert image.read_bytes() == backing.read_bytes()
