"""`rescue image` whose mapfile lives on a file system that fills up part-way (a real, tiny tmpfs):
the previous map stays intact, no temp file is left, a copy of the current map goes to the first
folder with room (the working folder, else $HOME), and the one `rescue:` line names the copy and
what would be read again without it. Moved into place, the copy resumes the rescue."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from rescue.formats import mapfile
from rescue.rangemap import FINISHED
from rescue.sim.faulty import content
from rescue.units import human_size
from tests.fixtures.cli import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1 << 20
SIZE = 48 * MIB
SPEC = f"sim:size={SIZE},rate=12M,bad=30M+4k"  # about 4 s: checkpoints land on the way


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted again whatever happens."""
    mountpoint = tmp_path / "full"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(folder: Path) -> None:
    """Write zeros until the file system has no room left."""
    try:
        with open(folder / "filler", "wb", buffering=0) as f:
            while True:
                f.write(bytes(4096))
    except OSError as error:
        assert error.strerror == "No space left on device"


def finished(path: Path) -> int:
    return mapfile.load(str(path), SIZE).rmap.totals()[FINISHED]


@pytest.mark.parametrize("cwd", ["work", "full"])
def test_a_map_that_cannot_be_saved_goes_where_there_is_room(
        tmp_path: Path, full: Path, cwd: str) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    image, map_path = work / "disk.img", full / "disk.map"
    command = [sys.executable, "-m", "rescue", "image", SPEC, str(image), "--map", str(map_path),
               "--checkpoint", "0.2", "--order", "sequential"]
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    cwd_path = work if cwd == "work" else full
    process = subprocess.Popen(command, cwd=cwd_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        while not map_path.exists() or finished(map_path) < 8 * MIB:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        fill(full)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == ExitCode.DESTINATION, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescue: "), stderr
    found = re.search(r"saved it as (\S+) instead: move it to (\S+) before running again, or "
                      r"the (.+) finished since it was last saved will be read again", lines[0])
    assert found, lines[0]
    copy = Path(found[1])
    assert copy.parent == (work if cwd == "work" else home)
    assert found[2] == str(map_path)
    assert not [name for name in os.listdir(full) if name.endswith(".tmp")]
    before = finished(map_path)  # the previous map, intact
    assert finished(copy) > before
    assert found[3] == human_size(finished(copy) - before)

    (full / "filler").unlink()
    shutil.move(copy, map_path)
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == ExitCode.UNREADABLE, done.stderr
    data = image.read_bytes()
    bad = 30 * MIB
    assert data[:bad] == content(0, bad)
    assert data[bad + 4096:] == content(bad + 4096, SIZE - bad - 4096)
