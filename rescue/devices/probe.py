"""Our own file-system and partition-table signature probe, for systems without a udev database.

Which signature lies where comes from the one table in `rescue.fs.signatures`; this module
adds what blkid reports besides the type: label, UUID and version. One read of the first 68 KiB
answers almost everything (the btrfs superblock at 64 KiB is the farthest); only the exFAT and
NTFS volume labels need one more small read. Reading little matters: the device may be dying.
Results match `blkid -p` names: TYPE, LABEL, UUID, PTTYPE.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rescue.fs.partitions import DiskReader, table_kind
from rescue.fs.signatures import LVM_LABEL_SECTORS, SIGNATURES, SWAP_PAGE_SIZES, Signature, in_bytes
from rescue.io.reader import Reader, Unreadable

HEAD_SIZE = 0x11000  # 68 KiB: up to and including the btrfs superblock


@dataclass(frozen=True)
class Identified:
    fstype: str  # blkid's TYPE: ext4, vfat, ntfs, swap, LVM2_member, crypto_LUKS, ...
    label: str | None = None
    uuid: str | None = None
    version: str | None = None  # e.g. FAT32, LUKS2


@dataclass(frozen=True)
class ProbeResult:
    filesystem: Identified | None
    table: str | None  # "gpt" or "dos", as blkid's PTTYPE


def probe_path(path: str) -> ProbeResult:
    """Probe a device or image file; raises SourceError or Unreadable when it cannot be read
    at all."""
    with DiskReader(path) as reader:
        return probe(reader)


def probe(reader: Reader) -> ProbeResult:
    """The file system or container, and the partition table unless a file system's boot
    sector takes its place; the table's kind is judged from the first sector, as
    `read_partition_table` judges it (a GPT disk keeps a protective MBR there)."""
    head = bytes(reader.read(0, HEAD_SIZE))
    found = _first_described(head, reader)
    if found is None:
        return ProbeResult(None, table_kind(head[:512]))
    signature, identified = found
    return ProbeResult(identified, None if signature.boot_sector else table_kind(head[:512]))


def _first_described(head: bytes, reader: Reader) -> tuple[Signature, Identified] | None:
    """The first signature found that blkid would report, in the table's order of trust."""
    read = in_bytes(head)
    for signature in SIGNATURES:
        describe = _DESCRIBE.get(signature.name)
        if describe is None or not signature.found(read):
            continue
        try:
            found = describe(head, reader)
        except (struct.error, IndexError, ValueError, Unreadable):
            found = None  # truncated or damaged metadata is not a signature
        if found is not None:
            return signature, found
    return None


def _text(raw: bytes) -> str | None:
    value = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return value or None


def _utf16(raw: bytes) -> str | None:
    value = raw.decode("utf-16-le", errors="replace").split("\0", 1)[0].strip()
    return value or None


def _uuid(raw: bytes) -> str | None:
    return None if raw == bytes(16) else str(uuid.UUID(bytes=raw))


def _u16(data: bytes | bytearray, offset: int) -> int:
    return struct.unpack_from("<H", data, offset)[0]


def _u32(data: bytes | bytearray, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def _luks(head: bytes, reader: Reader) -> Identified | None:
    version = struct.unpack_from(">H", head, 6)[0]
    label = _text(head[24:72]) if version == 2 else None
    return Identified("crypto_LUKS", label, _text(head[168:208]), f"LUKS{version}")


def _lvm2(head: bytes, reader: Reader) -> Identified | None:
    for sector in LVM_LABEL_SECTORS:
        base = sector * 512
        if head[base:base + 8] == b"LABELONE" and head[base + 24:base + 32] == b"LVM2 001":
            header = base + _u32(head, base + 20)
            raw = head[header:header + 32].decode("ascii", errors="replace")
            groups = (6, 4, 4, 4, 4, 4, 6)
            parts, position = [], 0
            for width in groups:
                parts.append(raw[position:position + width])
                position += width
            return Identified("LVM2_member", None, "-".join(parts), "LVM2 001")
    return None


def _iso9660(head: bytes, reader: Reader) -> Identified | None:
    base = 0x8000
    created = head[base + 813:base + 829].decode("ascii", errors="replace")
    identifier = None
    if created.isdigit() and created.strip("0"):
        identifier = "-".join((created[0:4], created[4:6], created[6:8], created[8:10],
                               created[10:12], created[12:14], created[14:16]))
    return Identified("iso9660", _text(head[base + 40:base + 72]), identifier)


def _xfs(head: bytes, reader: Reader) -> Identified | None:
    return Identified("xfs", _text(head[108:120]), _uuid(head[32:48]))


def _btrfs(head: bytes, reader: Reader) -> Identified | None:
    base = 0x10000
    return Identified("btrfs", _text(head[base + 0x12B:base + 0x22B]),
                      _uuid(head[base + 32:base + 48]))


# ext feature bits that ext2/ext3 understand; anything beyond them means ext4 (as blkid decides).
EXT_JOURNAL = 0x4
EXT3_INCOMPAT = 0x2 | 0x4 | 0x10  # filetype, recover, meta_bg
EXT3_RO_COMPAT = 0x1 | 0x2 | 0x4  # sparse_super, large_file, btree_dir
EXT_JOURNAL_DEV = 0x8


def _ext(head: bytes, reader: Reader) -> Identified | None:
    base = 1024
    compat, incompat, ro_compat = struct.unpack_from("<III", head, base + 92)
    if incompat & EXT_JOURNAL_DEV:
        fstype = "jbd"
    elif incompat & ~EXT3_INCOMPAT or ro_compat & ~EXT3_RO_COMPAT:
        fstype = "ext4"
    else:
        fstype = "ext3" if compat & EXT_JOURNAL else "ext2"
    return Identified(fstype, _text(head[base + 120:base + 136]),
                      _uuid(head[base + 104:base + 120]), "1.0")


def _serial32(value: int) -> str:
    return f"{value >> 16:04X}-{value & 0xFFFF:04X}"


def _exfat(head: bytes, reader: Reader) -> Identified | None:
    sector_shift, cluster_shift = head[108], head[109]
    sector = 1 << sector_shift
    heap, root_cluster = _u32(head, 88), _u32(head, 96)
    cluster = sector << cluster_shift
    root = bytes(reader.read(heap * sector + (root_cluster - 2) * cluster,
                             min(cluster, 64 * 1024)))
    label = None
    for offset in range(0, len(root) - 31, 32):
        if root[offset] == 0x83:  # volume label entry
            label = _utf16(root[offset + 2:offset + 2 + 2 * min(root[offset + 1], 11)])
            break
        if root[offset] == 0x00:
            break
    return Identified("exfat", label, _serial32(_u32(head, 100)), "1.0")


NTFS_VOLUME_RECORD = 3  # $Volume in the MFT
NTFS_VOLUME_NAME = 0x60


def _ntfs(head: bytes, reader: Reader) -> Identified | None:
    sector = _u16(head, 11)
    cluster = sector * _signed_shift(head[13])
    record_size = _ntfs_size(struct.unpack_from("<b", head, 0x40)[0], cluster)
    mft = struct.unpack_from("<Q", head, 0x30)[0] * cluster
    serial = struct.unpack_from("<Q", head, 0x48)[0]
    record = _fixup(bytearray(reader.read(mft + NTFS_VOLUME_RECORD * record_size, record_size)),
                    sector)
    return Identified("ntfs", _ntfs_volume_name(record), f"{serial:016X}")


def _signed_shift(value: int) -> int:
    """NTFS stores sectors per cluster as a count, or as a negative power of two above 0x80."""
    return 1 << (256 - value) if value > 0x80 else value


def _ntfs_size(value: int, cluster: int) -> int:
    return 1 << -value if value < 0 else value * cluster


def _fixup(record: bytearray, sector: int) -> bytes:
    """Put back the last two bytes of each sector that NTFS swapped for a check value."""
    if record[:4] != b"FILE":
        return b""
    offset, count = _u16(record, 4), _u16(record, 6)
    for index in range(1, count):
        end = index * sector - 2
        if end + 2 > len(record):
            break
        record[end:end + 2] = record[offset + 2 * index:offset + 2 * index + 2]
    return bytes(record)


def _ntfs_volume_name(record: bytes) -> str | None:
    if not record:
        return None
    position = _u16(record, 0x14)
    while position + 8 <= len(record):
        kind, length = struct.unpack_from("<II", record, position)
        if kind == 0xFFFFFFFF or length == 0:
            return None
        if kind == NTFS_VOLUME_NAME and record[position + 8] == 0:  # resident
            size, start = _u32(record, position + 0x10), _u16(record, position + 0x14)
            return _utf16(record[position + start:position + start + size])
        position += length
    return None


def _vfat(head: bytes, reader: Reader) -> Identified | None:
    if head[0] not in (0xEB, 0xE9):
        return None
    sector, per_cluster, reserved, fats = _u16(head, 11), head[13], _u16(head, 14), head[16]
    if (sector not in (512, 1024, 2048, 4096) or per_cluster == 0
            or per_cluster & (per_cluster - 1) or reserved == 0 or fats not in (1, 2)):
        return None
    fat16_length = _u16(head, 22)
    if fat16_length == 0:  # FAT32 keeps its extended block further on
        version, extended = "FAT32", 0x40
    else:
        total = _u16(head, 19) or _u32(head, 32)
        root_sectors = (_u16(head, 17) * 32 + sector - 1) // sector
        data = total - reserved - fats * fat16_length - root_sectors
        version = "FAT12" if data // per_cluster < 4085 else "FAT16"
        extended = 0x24
    if head[extended + 2] not in (0x28, 0x29):
        return Identified("vfat", None, None, version)
    label = _text(head[extended + 7:extended + 18])
    return Identified("vfat", None if label == "NO NAME" else label,
                      _serial32(_u32(head, extended + 3)), version)


def _swap(head: bytes, reader: Reader) -> Identified | None:
    for page in SWAP_PAGE_SIZES:
        magic = head[page - 10:page]
        if magic == b"SWAPSPACE2":
            return Identified("swap", _text(head[1052:1068]), _uuid(head[1036:1052]), "1")
        if magic == b"SWAP-SPACE":
            return Identified("swap", None, None, "0")
    return None


# What blkid reports of each signature it knows, by the table's names.
_DESCRIBE: dict[str, Callable[[bytes, Reader], Identified | None]] = {
    "crypto_LUKS": _luks, "LVM2_member": _lvm2, "iso9660": _iso9660, "xfs": _xfs,
    "btrfs": _btrfs, "ext": _ext, "exfat": _exfat, "ntfs": _ntfs, "fat": _vfat, "swap": _swap}
