"""Our signature probe against `blkid -p`, on image files made by the real mkfs tools."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rescue.devices.probe import probe, probe_path
from rescue.fs.partitions import read_partition_table
from rescue.io.reader import Reader
from tests.fixtures.fuzz import BytesDisk

MiB = 1 << 20

# name → (image size, mkfs command with {img}); each sets a label where the tool can
MAKERS = {
    "ext2": (8 * MiB, ["mkfs.ext2", "-q", "-F", "-L", "two", "{img}"]),
    "ext3": (8 * MiB, ["mkfs.ext3", "-q", "-F", "-L", "three", "{img}"]),
    "ext4": (8 * MiB, ["mkfs.ext4", "-q", "-F", "-L", "four", "{img}"]),
    "fat12": (2 * MiB, ["mkfs.vfat", "-F", "12", "-n", "TWELVE", "{img}"]),
    "fat16": (20 * MiB, ["mkfs.vfat", "-F", "16", "-n", "SIXTEEN", "{img}"]),
    "fat32": (40 * MiB, ["mkfs.vfat", "-F", "32", "-n", "THIRTYTWO", "{img}"]),
    "fat-nolabel": (2 * MiB, ["mkfs.vfat", "{img}"]),
    "exfat": (8 * MiB, ["mkfs.exfat", "-L", "exlabel", "{img}"]),
    "ntfs": (8 * MiB, ["mkntfs", "-F", "-Q", "-q", "-L", "ntfslabel", "{img}"]),
    "swap": (4 * MiB, ["mkswap", "-L", "swaplabel", "{img}"]),
}


def blkid(path: str) -> dict[str, str]:
    result = subprocess.run(["blkid", "-p", "-o", "export", path], capture_output=True,
                            text=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_probe_agrees_with_blkid(kind: str, tmp_path: Path) -> None:
    size, command = MAKERS[kind]
    image = tmp_path / f"{kind}.img"
    with open(image, "wb") as handle:
        handle.truncate(size)
    subprocess.run([part.format(img=image) for part in command], check=True,
                   capture_output=True)
    found = probe_path(str(image))
    peer = blkid(str(image))
    assert found.filesystem is not None
    assert found.filesystem.fstype == peer["TYPE"]
    assert found.filesystem.label == peer.get("LABEL")
    assert found.filesystem.uuid == peer.get("UUID")
    if "VERSION" in peer and kind.startswith("fat"):
        assert found.filesystem.version == peer["VERSION"]
    assert found.table is None


@pytest.mark.parametrize("layout,table", [("label: gpt\n,1M\n", "gpt"),
                                          ("label: dos\n,1M\n", "dos")])
def test_partition_tables(layout: str, table: str, tmp_path: Path) -> None:
    image = tmp_path / "table.img"
    with open(image, "wb") as handle:
        handle.truncate(4 * MiB)
    subprocess.run(["sfdisk", "-q", str(image)], input=layout, text=True, check=True,
                   capture_output=True)
    found = probe_path(str(image))
    assert found.table == table == blkid(str(image))["PTTYPE"]
    assert found.filesystem is None


def test_damaged_and_truncated_input_is_not_a_signature() -> None:
    def reader(data: bytes) -> Reader:
        return BytesDisk(data)

    assert probe(reader(b"")).filesystem is None
    assert probe(reader(os.urandom(70000))).filesystem is None
    # An NTFS boot sector whose MFT lies beyond the end: the type is still known, no label.
    ntfs = bytearray(4096)
    ntfs[3:11] = b"NTFS    "
    ntfs[11:13] = (512).to_bytes(2, "little")
    ntfs[13] = 8
    ntfs[0x30:0x38] = (10**6).to_bytes(8, "little")
    ntfs[0x40] = 0xF6  # -10: 1 KiB MFT records
    found = probe(reader(bytes(ntfs))).filesystem
    assert found is not None and found.fstype == "ntfs" and found.label is None
    # An ext superblock magic with nothing else is still ext, never a crash.
    ext = bytearray(2048)
    ext[1024 + 56:1024 + 58] = (0xEF53).to_bytes(2, "little")
    assert probe(reader(bytes(ext))).filesystem.fstype == "ext2"  # type: ignore[union-attr]


@pytest.mark.parametrize("what", ["boot code", "no protective entry", "protective"])
def test_table_kind_agrees_with_the_partition_table_reader(what: str) -> None:
    """A GPT header alone does not make a table: blkid and the table reader both want the
    protective MBR, and boot code (a status byte neither 0x00 nor 0x80) is no table at all."""
    disk = bytearray(8192)
    disk[510:512] = b"\x55\xaa"
    disk[512:520] = b"EFI PART"
    if what == "boot code":
        disk[446] = 0x33
    elif what == "protective":
        disk[446 + 4] = 0xEE
    kind = read_partition_table(BytesDisk(bytes(disk))).kind
    assert kind == {"boot code": None, "no protective entry": "dos", "protective": "gpt"}[what]
    assert probe(BytesDisk(bytes(disk))).table == kind
