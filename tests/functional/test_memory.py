"""Memory stays bounded whatever the device size: the map, not the disk, is what we keep."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rescue.formats import mapfile
from tests.fixtures.loop import loop_device

pytestmark = [pytest.mark.slow, pytest.mark.root]


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def rescued_so_far(map_path: str) -> int:
    """Bytes the last map saved counts as rescued; 0 before the first save."""
    return mapfile.load(map_path, 1 << 40).rmap.totals()["+"] if os.path.exists(map_path) else 0


def test_imaging_a_1_tib_device_stays_small_and_stops_cleanly(tmp_path):
    disk = tmp_path / "huge.disk"
    with open(disk, "wb") as f:
        f.truncate(1 << 40)
    image = tmp_path / "huge.img"
    with loop_device(str(disk)) as device:
        proc = subprocess.Popen([sys.executable, "-m", "rescue", "image", device, str(image),
                                 "--json", "--checkpoint", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:  # at least 8 s and 64 MiB in: a slow start under load must not pass as small
            started = time.monotonic()
            while time.monotonic() - started < 8 or rescued_so_far(f"{image}.map") < 64 << 20:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() - started < 120, "not 64 MiB rescued in two minutes"
                time.sleep(0.2)
            peak = peak_rss_kib(proc.pid)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert peak < 150 * 1024, f"peak RSS {peak} KiB"
    assert proc.returncode == 130, err
    saved = mapfile.load(f"{image}.map", 1 << 40)
    rescued = saved.rmap.totals()["+"]
    assert 0 < rescued < 1 << 40
    assert os.path.getsize(image) == 1 << 40
    assert os.stat(image).st_blocks == 0  # zeros stay holes
