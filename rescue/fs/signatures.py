"""The one table of file-system and container signatures: which magic bytes lie where.

Discovery and the explorer (`devices.probe`), used-block planning (`fs.domain`), the
partclone fallback, the partition-table reader and the ext backup-superblock search all judge
a volume by this table, so they cannot disagree about what it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Bytes at an offset of the volume; fewer (or none) where they cannot be read.
Read = Callable[[int, int], bytes]
MBR_SIGNATURE = b"\x55\xaa"  # at byte 510 of a PC boot sector, and of a partition table


@dataclass(frozen=True)
class Signature:
    # What rescue calls it: blkid's TYPE, or for ext and FAT the family that several of
    # blkid's TYPEs share (ext2/ext3/ext4, vfat's FAT12/16/32).
    name: str
    marks: tuple[tuple[int, bytes], ...]  # (offset, magic): any one of them is the signature
    check: Callable[[Read], bool] | None = None  # what must hold besides a mark
    partclone: str | None = None  # partclone's program suffix, for those we do not parse
    container: bool = False  # put in place of a file system: encryption, LVM, swap, RAID
    boot_sector: bool = False  # lives in a PC boot sector, which ends in 55 AA like an MBR

    def found(self, read: Read) -> bool:
        return (any(read(offset, len(magic)) == magic for offset, magic in self.marks)
                and (self.check is None or self.check(read)))


LVM_LABEL_SECTORS = range(4)  # the label may sit in any of the first four sectors
SWAP_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)  # the magic ends the first page


def _lvm_label(read: Read) -> bool:
    return any(read(512 * sector, 8) == b"LABELONE" and read(512 * sector + 24, 8) == b"LVM2 001"
               for sector in LVM_LABEL_SECTORS)


def _ends_like_boot_sector(read: Read) -> bool:
    return read(510, 2) == MBR_SIGNATURE


# In the order they are trusted when several are present, as blkid trusts them: containers
# first (what they replaced may still show through), then the file systems.
SIGNATURES = (
    Signature("crypto_LUKS", ((0, b"LUKS\xba\xbe"),), container=True),
    Signature("LVM2_member", tuple((512 * sector, b"LABELONE") for sector in LVM_LABEL_SECTORS),
              _lvm_label, container=True),
    Signature("BitLocker", ((3, b"-FVE-FS-"),), container=True),
    Signature("linux_raid_member", ((0, b"\xfcN+\xa9"), (4096, b"\xfcN+\xa9")), container=True),
    Signature("iso9660", ((0x8001, b"CD001"),), lambda read: read(0x8000, 1) == b"\x01"),
    Signature("xfs", ((0, b"XFSB"),), partclone="xfs"),
    Signature("btrfs", ((0x10040, b"_BHRfS_M"),), partclone="btrfs"),
    Signature("ext", ((0x438, b"\x53\xef"),)),
    Signature("exfat", ((3, b"EXFAT   "),), boot_sector=True),
    Signature("ntfs", ((3, b"NTFS    "),), boot_sector=True),
    Signature("fat", ((0x36, b"FAT"), (0x52, b"FAT32")), _ends_like_boot_sector,
              boot_sector=True),
    Signature("swap", tuple((page - 10, magic) for page in SWAP_PAGE_SIZES
                            for magic in (b"SWAPSPACE2", b"SWAP-SPACE")), container=True),
    Signature("f2fs", ((0x400, b"\x10\x20\xf5\xf2"),), partclone="f2fs"),
    Signature("hfsplus", ((0x400, b"H+\x00\x04"), (0x400, b"HX\x00\x05")), partclone="hfsp"),
    Signature("reiser4", ((0x10034, b"ReIsEr4"),), partclone="reiser4"),
    Signature("minix", ((0x410, b"\x7f\x13"), (0x410, b"\x8f\x13"), (0x410, b"\x68\x24"),
                        (0x410, b"\x78\x24"), (0x418, b"\x5a\x4d")), partclone="minix"),
)
BY_NAME = {signature.name: signature for signature in SIGNATURES}


def in_bytes(data: bytes) -> Read:
    """Read from bytes already in hand (a volume's first sectors)."""
    return lambda offset, length: data[offset:offset + length]

