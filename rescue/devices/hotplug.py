"""Disks coming and going, as a debounced async stream of events.

When udevd runs we listen to its events (they arrive after udev has probed the device and carry
ID_* properties); without udevd we listen to the kernel's own uevents, which carry only the
kernel's names (DEVNAME, DEVTYPE) — consumers re-run discovery for the details either way.
A burst (attach a disk, its partitions appear, udev re-reads them) comes out as one event per
device once things have been quiet for a moment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import pyudev

UDEV_CONTROL = "/run/udev/control"  # the socket udevd listens on while it runs
ACTIONS = {"add": "add", "remove": "remove", "change": "change", "move": "change"}


@dataclass(frozen=True)
class HotplugEvent:
    action: str  # "add", "remove" or "change"
    name: str  # kernel name, e.g. "sdb1"
    path: str | None  # device node, e.g. "/dev/sdb1"
    devtype: str | None  # "disk" or "partition"


def udev_running() -> bool:
    return os.path.exists(UDEV_CONTROL)


def coalesce(events: list[HotplugEvent]) -> list[HotplugEvent]:
    """One event per device for a burst, in order of first appearance: a device that came and
    went is dropped, one that went and came back is reported changed."""
    latest: dict[str, HotplugEvent] = {}
    for event in events:
        previous = latest.get(event.name)
        if previous is None:
            latest[event.name] = event
        elif previous.action == "add" and event.action == "remove":
            del latest[event.name]
        elif previous.action == "add":
            latest[event.name] = event.__class__("add", event.name, event.path, event.devtype)
        elif previous.action == "remove" and event.action == "add":
            latest[event.name] = event.__class__("change", event.name, event.path, event.devtype)
        else:
            latest[event.name] = event
    return list(latest.values())


class HotplugMonitor:
    """`async with HotplugMonitor() as monitor: async for event in monitor: ...`

    Listening starts on entering, so nothing that happens after that is missed.
    """

    def __init__(self, *, debounce: float = 0.25, source: str | None = None) -> None:
        self.debounce = debounce
        self.source = source or ("udev" if udev_running() else "kernel")
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self.source)
        self._monitor.filter_by("block")
        self._queue: asyncio.Queue[HotplugEvent] = asyncio.Queue()
        self._ready: list[HotplugEvent] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> HotplugMonitor:
        self._monitor.start()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.fileno(), self._drain)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
        # pyudev has no explicit close; dropping the monitor closes its netlink socket.
        del self._monitor

    def _drain(self) -> None:
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except pyudev.DeviceNotFoundError:
                continue  # a message about a device that is already gone
            except OSError:
                return  # e.g. ENOBUFS after a flood: events were lost, later ones still come
            if device is None:
                return
            action = ACTIONS.get(device.action or "")
            if action is not None:
                self._queue.put_nowait(HotplugEvent(action, device.sys_name, device.device_node,
                                                    device.device_type))

    def __aiter__(self) -> AsyncIterator[HotplugEvent]:
        return self

    async def __anext__(self) -> HotplugEvent:
        while not self._ready:
            burst = [await self._queue.get()]
            while True:
                try:
                    burst.append(await asyncio.wait_for(self._queue.get(), self.debounce))
                except TimeoutError:
                    break
            self._ready = coalesce(burst)
        return self._ready.pop(0)
