"""A bootable disk restored onto a smaller and a larger disk still boots, and the booted system
sees its root file system at the size of its resized partition.

The source is a 2.5 GiB GPT disk, a FAT32 EFI system partition with GRUB and an ext4 root with
a minimal Debian (tests/fixtures/bootable.py), imaged with `--mode used` to qcow2. Each
restored target boots under QEMU with OVMF; every step's time is printed (`-s` shows them)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bootable import ESP_SIZE, boot, bootable_disk, debian_root
from tests.fixtures.cli import rescue, run
from tests.fixtures.loop import loop_device
from tests.fixtures.restore import MIB, target

pytestmark = pytest.mark.slow
GIB = 1 << 30
SOURCE_SIZE = 2560 * MIB
MARGIN = 64 * MIB  # free room on the shrunk root, for a system that writes as it boots


def timed(step: str, started: float) -> None:
    print(f"boot test: {step} took {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="session")
def bootable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Debian root built once a session; the disk made from it and its qcow2 image."""
    folder = tmp_path_factory.mktemp("bootable")
    started = time.monotonic()
    root = debian_root(folder)
    timed("mmdebstrap", started)
    started = time.monotonic()
    disk = bootable_disk(root, folder, SOURCE_SIZE)
    shutil.rmtree(root)  # 600 MB the disk now holds
    timed("disk", started)
    started = time.monotonic()
    image = folder / "bootable.qcow2"
    with loop_device(str(disk), read_only=True) as device:
        done = rescue("image", device, str(image), "--mode", "used", timeout=900)
        assert done.returncode == 0, done.stderr
    timed("image --mode used", started)
    ext4 = superblock(disk)
    return {"disk": disk, "image": image, "root_bytes": ext4["Block count"] * ext4["Block size"]}


@pytest.fixture
def targets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def planned_root(image: Path, device: str) -> dict:
    result = rescue("restore", str(image), device, "--dry-run", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[0])["targets"][0]["plan"]["partitions"][1]


@pytest.mark.parametrize("grow", [False, True], ids=["smaller", "larger"])
def test_a_resized_restore_boots(bootable: dict[str, Any], tmp_path: Path, targets: ExitStack,
                                 grow: bool) -> None:
    image = bootable["image"]
    started = time.monotonic()
    probe = target(targets, tmp_path, "probe", 4 * GIB)
    minimum = planned_root(image, probe)["min_size"]
    timed("plan", started)
    esp_end = MIB + ESP_SIZE
    size = 4 * GIB if grow else esp_end + -(-minimum // MIB) * MIB + MARGIN + MIB
    assert size < SOURCE_SIZE or grow
    device = target(targets, tmp_path, "t", size, fill=b"stale ")
    plan = planned_root(image, device)
    assert plan["action"] == ("grow" if grow else "shrink")
    started = time.monotonic()
    result = rescue("restore", str(image), device, "--yes", "--map-dir", str(tmp_path / "maps"),
                    timeout=900)
    assert result.returncode == 0, result.stderr
    timed(f"restore onto {size // MIB} MiB", started)
    targets.close()  # the loop devices detached: QEMU gets the backing file alone
    booted = boot(tmp_path / "t.target", tmp_path)
    print(f"boot test: boot of the {size // MIB} MiB disk took {booted.seconds:.1f} s")
    assert booted.partition_bytes == plan["new_size"]
    assert booted.esp_device == "/dev/vda1"
    ext4 = superblock(tmp_path / "t.target")
    assert booted.root_bytes == ext4["Block count"] * ext4["Block size"]
    # resize2fs leaves out a last block group too small for its own metadata, nothing more
    group = ext4["Blocks per group"] * ext4["Block size"]
    assert plan["new_size"] - group < booted.root_bytes <= plan["new_size"]
    assert booted.root_bytes != bootable["root_bytes"]


def superblock(disk: Path) -> dict[str, int]:
    """The root file system's numbers as dumpe2fs reads them on the host."""
    with loop_device(str(disk), partitions=True, read_only=True) as device:
        shown = run("dumpe2fs", "-h", f"{device}p2")
    return {key: int(value) for key, value in
            re.findall(r"^(Block count|Block size|Blocks per group):\s+(\d+)$", shown, re.M)}
