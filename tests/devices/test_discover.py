"""Discovery on real loop devices, judged by blkid -p and lsblk."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import pyudev

from rescue.devices import discover as discovery
from rescue.devices.discover import Disk, Partition, discover, find
from tests.fixtures.cli import run
from tests.fixtures.disks import GPT_LAYOUT, LoopDisk, mounted, partitioned_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]


def blkid(device: str) -> dict[str, str]:
    result = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True,
                            text=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def lsblk(device: str) -> dict[str, dict[str, object]]:
    columns = "NAME,PATH,SIZE,LOG-SEC,PHY-SEC,RO,RM,ROTA,TRAN,START,PTTYPE,MOUNTPOINTS"
    tree = json.loads(run("lsblk", "-J", "-b", "-o", columns, device))["blockdevices"]
    found = {}
    for node in tree:
        found[node["path"]] = node
        for child in node.get("children", []):
            found[child["path"]] = child
    return found


def the_disk(device: str) -> Disk:
    found = find(device)
    assert isinstance(found, Disk), f"{device} not discovered"
    return found


@pytest.mark.parametrize("fixture", ["gpt_disk", "mbr_disk"])
def test_every_field_matches_blkid_and_lsblk(fixture: str, request: pytest.FixtureRequest
                                            ) -> None:
    loop: LoopDisk = request.getfixturevalue(fixture)
    disk = the_disk(loop.device)
    peers = lsblk(loop.device)
    whole = peers[loop.device]
    assert disk.size == whole["size"] == loop.image.stat().st_size
    assert disk.logical_sector_size == whole["log-sec"]
    assert disk.physical_sector_size == whole["phy-sec"]
    assert disk.read_only is whole["ro"] is False
    assert disk.removable is whole["rm"]
    assert disk.rotational is whole["rota"]
    assert disk.transport == "loop"
    assert disk.backing_file == str(loop.image)
    assert disk.table_type == loop.table == blkid(loop.device)["PTTYPE"]
    assert disk.system_roles == () and not disk.running_system
    assert [part.number for part in disk.partitions] == sorted(
        int(node["path"].removeprefix(f"{loop.device}p")) for path, node in peers.items()
        if path != loop.device)
    for part in disk.partitions:
        node, peer = peers[part.path], blkid(part.path)
        assert part.disk == loop.device
        assert part.start == node["start"] * 512
        assert part.size == node["size"]
        assert part.fstype == peer.get("TYPE"), part.path
        assert part.label == peer.get("LABEL") == loop.labels.get(part.number), part.path
        assert part.uuid == peer.get("UUID"), part.path
        assert part.mountpoints == () and part.holders == ()


def test_logical_partitions_are_found(mbr_disk: LoopDisk) -> None:
    disk = the_disk(mbr_disk.device)
    numbers = [part.number for part in disk.partitions]
    assert numbers[:2] == [1, 2] and {5, 6, 7} <= set(numbers)
    assert {part.fstype for part in disk.partitions if part.number >= 5} == {
        "vfat", "ntfs", "swap"}


def test_mount_points_and_find(gpt_disk: LoopDisk, tmp_path: Path) -> None:
    with mounted(gpt_disk.partition(1), tmp_path / "mnt"):
        part = find(gpt_disk.partition(1))
        assert isinstance(part, Partition)
        assert part.mountpoints == (str(tmp_path / "mnt"),)
        assert part.system_roles == ()
    assert find("/dev/nonexistent") is None


def test_running_system_disk_is_marked() -> None:
    disks = {disk.path: disk for disk in discover()}
    assert "root" in disks["/dev/vda"].system_roles
    assert "/" in disks["/dev/vda"].mountpoints


def test_without_probing_nothing_is_read_but_the_kernel_facts_remain(gpt_disk: LoopDisk
                                                                     ) -> None:
    disk = next(d for d in discover(probe_signatures=False) if d.path == gpt_disk.device)
    assert disk.size == gpt_disk.image.stat().st_size
    assert len(disk.partitions) == 4
    assert {part.fstype for part in disk.partitions} == {None}


def test_device_vanishing_mid_enumeration(gpt_disk: LoopDisk, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with partitioned_disk(tmp_path / "doomed.img", GPT_LAYOUT, {}) as doomed:
        listed = discovery.list_block_devices()

        def list_then_vanish() -> list[pyudev.Device]:
            subprocess.run(["partx", "-d", doomed.device], capture_output=True)
            subprocess.run(["losetup", "-d", doomed.device], capture_output=True)
            return listed

        monkeypatch.setattr(discovery, "list_block_devices", list_then_vanish)
        disks = {disk.path: disk for disk in discover()}
    assert doomed.device not in disks
    assert len(disks[gpt_disk.device].partitions) == 4


def test_unreadable_sysfs_attribute_gives_none(gpt_disk: LoopDisk,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_read_attr = discovery.read_attr

    def failing(path: str) -> str | None:
        if path.endswith(("/queue/rotational", "/removable", "/serial")):
            return real_read_attr("/proc/self/nonexistent")
        return real_read_attr(path)

    monkeypatch.setattr(discovery, "read_attr", failing)
    disk = the_disk(gpt_disk.device)
    assert disk.rotational is None and disk.removable is None and disk.serial is None
    assert disk.size == gpt_disk.image.stat().st_size
