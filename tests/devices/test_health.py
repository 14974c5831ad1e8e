"""Health verdicts from smartctl's JSON, and sane answers when smartctl misbehaves.

A fake `smartctl` first on PATH stands in for a drive we do not have; it is a real process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.devices.health import check_health, summarise

HEALTHY = {"smart_status": {"passed": True}, "power_on_time": {"hours": 1234},
           "temperature": {"current": 35},
           "ata_smart_attributes": {"table": [
               {"id": 5, "name": "Reallocated_Sector_Ct", "raw": {"value": 0}},
               {"id": 197, "name": "Current_Pending_Sector", "raw": {"value": 0}},
               {"id": 198, "name": "Offline_Uncorrectable", "raw": {"value": 0}}]}}

FakeSmartctl = Callable[..., None]


def with_attributes(reallocated: int, pending: int, offline: int) -> dict[str, object]:
    table = [{"id": 5, "raw": {"value": reallocated}}, {"id": 197, "raw": {"value": pending}},
             {"id": 198, "raw": {"value": offline}}]
    return {**HEALTHY, "ata_smart_attributes": {"table": table}}


@pytest.fixture
def fake_smartctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmartctl:
    """Install a `smartctl` that prints `output` and exits with `status`."""
    def install(output: str, status: int = 0) -> None:
        (tmp_path / "output").write_text(output)
        script = tmp_path / "smartctl"
        script.write_text(f"#!/bin/sh\ncat {tmp_path / 'output'}\nexit {status}\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return install


def test_healthy_drive(fake_smartctl: FakeSmartctl) -> None:
    fake_smartctl(json.dumps(HEALTHY))
    health = check_health("/dev/sdz")
    assert health.status == "good" and health.summary.startswith("healthy")
    assert (health.power_on_hours, health.temperature) == (1234, 35)
    assert (health.reallocated_sectors, health.pending_sectors,
            health.offline_uncorrectable) == (0, 0, 0)


def test_pending_sectors_mean_image_it_now(fake_smartctl: FakeSmartctl) -> None:
    fake_smartctl(json.dumps(with_attributes(8, 3, 1)), status=0x40)
    health = check_health("/dev/sdz")
    assert health.status == "failing"
    assert health.summary.startswith("failing: image it now with rescue settings")
    assert "3 pending" in health.summary and health.reallocated_sectors == 8


def test_reallocated_only_is_a_warning() -> None:
    health = summarise("/dev/sdz", json.dumps(with_attributes(12, 0, 0)), 0)
    assert health.status == "warning" and "12 reallocated" in health.summary


def test_smart_failed_and_nvme() -> None:
    failed = {**HEALTHY, "smart_status": {"passed": False}}
    assert summarise("/dev/sdz", json.dumps(failed), 0x08).status == "failing"
    nvme = {"smart_status": {"passed": True},
            "nvme_smart_health_information_log": {"critical_warning": 0, "media_errors": 2,
                                                  "power_on_hours": 77}}
    health = summarise("/dev/nvme0n1", json.dumps(nvme), 0)
    assert health.status == "failing" and health.media_errors == 2
    assert health.power_on_hours == 77


@pytest.mark.parametrize("garbage", ["", "not json at all\n\x00\xff", "[1, 2, 3]",
                                     json.dumps({"smart_status": "yes",
                                                 "ata_smart_attributes": {"table": [
                                                     None, {"id": "5", "raw": 7},
                                                     {"id": 197, "raw": {"value": "x"}}]},
                                                 "temperature": {"current": True}})])
def test_garbage_gives_a_sane_answer(fake_smartctl: FakeSmartctl, garbage: str) -> None:
    fake_smartctl(garbage, status=0)
    health = check_health("/dev/sdz")
    assert health.status == "unknown"
    assert health.summary.startswith("health unknown")
    assert health.temperature is None and health.pending_sectors is None


def test_unsupported_and_missing_smartctl(fake_smartctl: FakeSmartctl,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    message = {"smartctl": {"messages": [{"string": "/dev/vdz: Unable to detect device type",
                                          "severity": "error"}]}}
    fake_smartctl(json.dumps(message), status=0x01)
    health = check_health("/dev/vdz")
    assert health.status == "unsupported" and "Unable to detect" in health.summary
    assert check_health("/dev/loop0").status == "unsupported"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert check_health("/dev/sdz").status == "unavailable"


def test_real_smartctl_on_the_virtio_disk() -> None:
    health = check_health("/dev/vda")
    assert health.status in ("unsupported", "unavailable")
    assert health.summary
