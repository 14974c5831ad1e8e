"""Loop-device disks with real partition tables and file systems, torn down even on failure."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.loop import loop_device

MiB = 1 << 20

# sfdisk scripts: GPT with four partitions; MBR with a primary, an extended and logicals.
GPT_LAYOUT = "label: gpt\n,8M\n,8M\n,8M\n,4M\n"
MBR_LAYOUT = "label: dos\n,8M,83\n,,5\n,8M,83\n,8M,7\n,4M,82\n"
# partition number → (mkfs command, file-system label); {dev} is the partition node
GPT_FILESYSTEMS = {1: (["mkfs.ext4", "-q", "-F", "-L", "gptroot", "{dev}"], "gptroot"),
                   2: (["mkfs.vfat", "-n", "GPTFAT", "{dev}"], "GPTFAT"),
                   3: (["mkntfs", "-F", "-Q", "-q", "-L", "gptntfs", "{dev}"], "gptntfs"),
                   4: (["mkswap", "-L", "gptswap", "{dev}"], "gptswap")}
MBR_FILESYSTEMS = {1: (["mkfs.ext4", "-q", "-F", "-L", "mbrroot", "{dev}"], "mbrroot"),
                   5: (["mkfs.vfat", "-F", "32", "-n", "MBRFAT", "{dev}"], "MBRFAT"),
                   6: (["mkntfs", "-F", "-Q", "-q", "-L", "mbrntfs", "{dev}"], "mbrntfs"),
                   7: (["mkswap", "-L", "mbrswap", "{dev}"], "mbrswap")}


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class LoopDisk:
    device: str
    image: Path
    table: str
    labels: dict[int, str]  # partition number → file-system label

    def partition(self, number: int) -> str:
        return f"{self.device}p{number}"


@contextlib.contextmanager
def partitioned_disk(image: Path, layout: str, filesystems: dict[int, tuple[list[str], str]],
                     size: int = 48 * MiB) -> Iterator[LoopDisk]:
    image.write_bytes(b"")
    with open(image, "r+b") as handle:
        handle.truncate(size)
    subprocess.run(["sfdisk", "-q", str(image)], input=layout, text=True, check=True,
                   capture_output=True)
    with loop_device(str(image), partitions=True) as device:
        for number, (command, _) in filesystems.items():
            run(*(part.format(dev=f"{device}p{number}") for part in command))
        table = "gpt" if layout.startswith("label: gpt") else "dos"
        yield LoopDisk(device, image, table,
                       {number: label for number, (_, label) in filesystems.items()})


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    with partitioned_disk(tmp_path_factory.mktemp("gpt") / "gpt.img", GPT_LAYOUT,
                          GPT_FILESYSTEMS) as disk:
        yield disk


@pytest.fixture(scope="module")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    with partitioned_disk(tmp_path_factory.mktemp("mbr") / "mbr.img", MBR_LAYOUT,
                          MBR_FILESYSTEMS) as disk:
        yield disk


@contextlib.contextmanager
def mounted(device: str, mountpoint: Path, *options: str) -> Iterator[Path]:
    mountpoint.mkdir(exist_ok=True)
    run("mount", *options, device, str(mountpoint))
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
