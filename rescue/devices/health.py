"""Drive health from `smartctl -j -a`, boiled down to what a user should do next.

smartctl is optional and many devices have no SMART at all (loop, virtio, device-mapper); both
cases are an answer ("no SMART data"), never an error. Whatever smartctl prints is treated as
untrusted input: anything we cannot read becomes "unknown", not a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

SMARTCTL_TIMEOUT = 60.0
HOT_CELSIUS = 60
# smartctl exit status bits (smartctl(8), RETURN VALUES)
EXIT_PARSE_ERROR = 0x01
EXIT_OPEN_FAILED = 0x02
EXIT_DISK_FAILING = 0x08
EXIT_PREFAIL_BELOW_THRESHOLD = 0x10
# ATA attribute ids
REALLOCATED = 5
PENDING = 197
OFFLINE_UNCORRECTABLE = 198
# Kernel devices with no drive of their own behind them, so no SMART to ask.
VIRTUAL_PREFIXES = {"loop": "loop devices", "dm-": "device-mapper devices", "md": "md arrays",
                    "zram": "zram devices", "ram": "RAM disks", "nbd": "network block devices"}


@dataclass(frozen=True)
class Health:
    device: str
    status: str  # "good", "warning", "failing", "unsupported", "unavailable" or "unknown"
    summary: str  # one plain sentence, e.g. "failing: image it now with rescue settings"
    smart_passed: bool | None = None
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    offline_uncorrectable: int | None = None
    media_errors: int | None = None  # NVMe's count of unrecoverable errors
    power_on_hours: int | None = None
    temperature: int | None = None  # °C


def check_health(device: str, *, timeout: float = SMARTCTL_TIMEOUT) -> Health:
    name = os.path.basename(os.path.realpath(device))
    for prefix, kind in VIRTUAL_PREFIXES.items():
        if name.startswith(prefix):
            return Health(device, "unsupported", f"no SMART data: {kind} have none")
    smartctl = shutil.which("smartctl")
    if smartctl is None:
        return Health(device, "unavailable", "health unknown: smartctl (smartmontools) is not "
                      "installed")
    try:
        result = subprocess.run([smartctl, "-j", "-a", device], capture_output=True, text=True,
                                errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return Health(device, "unknown", f"health unknown: smartctl did not answer within "
                      f"{timeout:.0f} s")
    except OSError as error:
        return Health(device, "unknown", f"health unknown: smartctl failed to run "
                      f"({error.strerror})")
    return summarise(device, result.stdout, result.returncode)


def summarise(device: str, output: str, exit_status: int) -> Health:
    """Turn smartctl's JSON and exit status into a verdict."""
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Health(device, "unknown", "health unknown: smartctl's answer could not be read")
    if exit_status & (EXIT_PARSE_ERROR | EXIT_OPEN_FAILED):
        return Health(device, "unsupported", f"no SMART data: {_first_message(data)}")
    nvme = _dict(data, "nvme_smart_health_information_log")
    attributes = _ata_attributes(data)
    health = Health(
        device=device, status="good", summary="",
        smart_passed=_bool(_dict(data, "smart_status").get("passed")),
        reallocated_sectors=attributes.get(REALLOCATED),
        pending_sectors=attributes.get(PENDING),
        offline_uncorrectable=attributes.get(OFFLINE_UNCORRECTABLE),
        media_errors=_int(nvme.get("media_errors")),
        power_on_hours=_int(_dict(data, "power_on_time").get("hours"))
        or _int(nvme.get("power_on_hours")),
        temperature=_int(_dict(data, "temperature").get("current")),
    )
    status, summary = _verdict(health, exit_status, _int(nvme.get("critical_warning")))
    return dataclasses.replace(health, status=status, summary=summary)


def _verdict(health: Health, exit_status: int, critical_warning: int | None) -> tuple[str, str]:
    failing = []
    if health.smart_passed is False or exit_status & EXIT_DISK_FAILING:
        failing.append("SMART says the drive is failing")
    elif exit_status & EXIT_PREFAIL_BELOW_THRESHOLD:
        failing.append("pre-failure attributes past their threshold")
    for count, what in ((health.pending_sectors, "pending"),
                        (health.offline_uncorrectable, "uncorrectable"),
                        (health.media_errors, "media errors")):
        if count:
            failing.append(f"{count} {what}")
    if critical_warning:
        failing.append(f"NVMe critical warning 0x{critical_warning:02x}")
    if failing:
        return "failing", f"failing: image it now with rescue settings ({', '.join(failing)})"
    warnings = []
    if health.reallocated_sectors:
        warnings.append(f"{health.reallocated_sectors} reallocated sectors")
    if health.temperature is not None and health.temperature >= HOT_CELSIUS:
        warnings.append(f"running hot at {health.temperature} °C")
    if warnings:
        return "warning", f"worn: image it soon ({', '.join(warnings)})"
    if health.smart_passed is None:
        return "unknown", "health unknown: the drive reports no overall SMART verdict"
    return "good", "healthy: SMART reports no problems"


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _ata_attributes(data: dict[str, Any]) -> dict[int, int]:
    """ATA attribute id → raw value, for entries that look sane."""
    table = _dict(data, "ata_smart_attributes").get("table")
    found: dict[int, int] = {}
    for entry in table if isinstance(table, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("raw"), dict):
            continue
        identifier, raw = _int(entry.get("id")), _int(entry["raw"].get("value"))
        if identifier is not None and raw is not None:
            # Some drives pack extra counters into the upper bytes; the low 32 bits count.
            found[identifier] = raw & 0xFFFFFFFF
    return found


def _first_message(data: dict[str, Any]) -> str:
    messages = _dict(data, "smartctl").get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and isinstance(message.get("string"), str):
            return message["string"]
    return "smartctl cannot read this device"
