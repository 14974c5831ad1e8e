"""Hotplug events from real loop devices, and how a burst is coalesced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rescue.devices.hotplug import HotplugEvent, HotplugMonitor, coalesce
from tests.fixtures.disks import GPT_LAYOUT, partitioned_disk


def event(action: str, name: str) -> HotplugEvent:
    return HotplugEvent(action, name, f"/dev/{name}", "partition")


def test_coalesce_keeps_one_event_per_device() -> None:
    burst = [event("add", "sdb"), event("change", "sdb"), event("add", "sdb1"),
             event("remove", "sdb1"), event("remove", "sdc"), event("add", "sdc"),
             event("change", "sdd"), event("remove", "sdd")]
    assert [(item.action, item.name) for item in coalesce(burst)] == [
        ("add", "sdb"), ("change", "sdc"), ("remove", "sdd")]


@pytest.mark.slow
@pytest.mark.root
def test_attaching_a_partitioned_loop_device_is_heard(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, list[HotplugEvent]]:
        async with HotplugMonitor(debounce=0.2) as monitor:
            assert monitor.source in ("udev", "kernel")
            with partitioned_disk(tmp_path / "hot.img", GPT_LAYOUT, {}) as disk:
                device = disk.device
                seen: list[HotplugEvent] = []
                wanted = {f"{device}p{number}" for number in range(1, 5)}
                while not wanted <= {item.path for item in seen if item.action == "add"}:
                    seen.append(await asyncio.wait_for(anext(monitor), 5))
            while not any(item.action == "remove" for item in seen):
                seen.append(await asyncio.wait_for(anext(monitor), 5))
            return device, seen

    device, seen = asyncio.run(scenario())
    names = {item.name for item in seen}
    assert Path(device).name in names
    added = [item for item in seen if item.action == "add"]
    assert all(item.devtype == "partition" for item in added)
    assert any(item.action == "remove" and item.devtype == "partition" for item in seen)


def test_stream_raises_nothing_when_quiet() -> None:
    async def scenario() -> None:
        async with HotplugMonitor(debounce=0.05) as monitor:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(monitor), 0.3)

    asyncio.run(scenario())
