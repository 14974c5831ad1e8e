"""The qcow2 header (QEMU's docs/interop/qcow2.txt "Header"): its fields and extensions, the
sizes its cluster_bits implies, and reading it with every check, for the reader and the writer
of rescue.formats.qcow2 alike."""

from __future__ import annotations

import os
import struct
import sys
from array import array
from dataclasses import dataclass

from rescue.errors import FormatError

MAGIC = b"QFI\xfb"
VERSION = 3
SUPPORTED_VERSIONS = (2, 3)

# Header fields, big-endian (qcow2.txt "Header").
HEADER_V2 = struct.Struct(
    ">4sI"  # magic, version
    "QI"  # backing_file_offset u64, backing_file_size u32
    "IQ"  # cluster_bits u32, size u64
    "II"  # crypt_method u32, l1_size u32
    "QQ"  # l1_table_offset u64, refcount_table_offset u64
    "II"  # refcount_table_clusters u32, nb_snapshots u32
    "Q"  # snapshots_offset u64
)
HEADER_V3 = struct.Struct(
    ">QQQ"  # incompatible, compatible, autoclear feature bits
    "II"  # refcount_order u32, header_length u32
)
V3_HEADER_LENGTH = HEADER_V2.size + HEADER_V3.size  # 104
COMPRESSION_TYPE_OFFSET = V3_HEADER_LENGTH  # one byte, then padding to a multiple of 8
HEADER_LENGTH = V3_HEADER_LENGTH + 8  # 112, as QEMU writes it
EXTENSION = struct.Struct(">II")  # type u32, data length u32; data padded to 8 bytes
EXT_END = 0
RESCUE_EXT_MAGIC = 0x52534355  # "RSCU": ours; QEMU keeps unknown extensions as they are
RESCUE_EXT = struct.Struct(
    ">HH"  # format version u16, flags u16
    "QQ"  # manifest logical offset u64 (past the disk end), manifest length u64
    "I4x"  # manifest CRC-32 u32, padding
)
RESCUE_EXT_VERSION = 1
BACKING_FORMAT_EXT = 0xE2792ACA  # the backing file's format name, as QEMU writes it
MAX_BACKING_NAME = 1023  # QEMU's limit on the backing file name
FLAG_DEFLATE_CRC = 1  # deflate streams are followed by a big-endian CRC-32 of the cluster

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTENDED_L2 = 1 << 4
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}  # header codes; they never change
COMPRESSION_CODES = {name: code for code, name in COMPRESSION_TYPES.items()}

OFLAG_COPIED = 1 << 63  # L1/L2: refcount is exactly one
OFLAG_COMPRESSED = 1 << 62  # L2: compressed cluster descriptor
OFLAG_ZERO = 1  # L2 (v3): reads as zeros
OFFSET_MASK = 0x00FFFFFFFFFFFE00  # L1/L2 standard entries: bits 9-55
L1_RESERVED = 0x7F000000000001FF  # L1 entries: bits 0-8 and 56-62 must be zero
L2_RESERVED = 0x3F000000000001FE  # standard L2 entries: bits 1-8 and 56-61 must be zero
REFCOUNT_ORDER = 4  # 16-bit refcounts
MAX_REFCOUNT = 0xFFFF
SECTOR = 512
MIN_CLUSTER_BITS = 12  # 4 KiB; QEMU accepts 512 bytes, which only wastes metadata
MAX_CLUSTER_BITS = 21  # 2 MiB, QEMU's limit, compressed clusters included
MAX_SNAPSHOTS = 65536  # QEMU's limit: a header claiming more is damaged
DEFAULT_CLUSTER_SIZE = 65536
MAX_L1_ENTRIES = 32 * 1024 * 1024 // 8  # QEMU's QCOW_MAX_L1_SIZE

_BIG_ENDIAN_HOST = sys.byteorder == "big"


def to_host(raw: bytes, typecode: str) -> array:
    """Big-endian table bytes as a native array."""
    table = array(typecode, raw)
    if not _BIG_ENDIAN_HOST:
        table.byteswap()
    return table


def to_disk(table: array) -> bytes:
    if _BIG_ENDIAN_HOST:
        return table.tobytes()
    swapped = array(table.typecode, table)
    swapped.byteswap()
    return swapped.tobytes()


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    """Sizes derived from cluster_bits, shared by every table computation."""

    cluster_bits: int

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // 8

    @property
    def l2_coverage(self) -> int:
        """Logical bytes one L2 table maps."""
        return self.cluster_size * self.l2_entries

    @property
    def refblock_entries(self) -> int:
        return self.cluster_size * 8 >> REFCOUNT_ORDER

    @property
    def csize_shift(self) -> int:
        """Compressed descriptor: bits below hold the host offset, above the sector count."""
        return 62 - (self.cluster_bits - 8)

    @property
    def csize_mask(self) -> int:
        return (1 << (self.cluster_bits - 8)) - 1

    def compressed_range(self, entry: int) -> tuple[int, int]:
        """(host offset, byte count) of a compressed descriptor, as QEMU computes them."""
        offset = entry & ((1 << self.csize_shift) - 1)
        sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        return offset, sectors * SECTOR - (offset & (SECTOR - 1))

    def compressed_entry(self, offset: int, length: int) -> int:
        sectors = (offset + length - 1) // SECTOR - offset // SECTOR + 1
        return OFLAG_COMPRESSED | (sectors - 1) << self.csize_shift | offset


@dataclass
class Header:
    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    incompatible: int
    refcount_order: int
    compression: str
    manifest_offset: int = 0
    manifest_length: int = 0
    manifest_crc: int = 0
    flags: int = 0
    ours: bool = False
    backing_file: str = ""  # an overlay's older image, as its header names it
    backing_format: str = ""


def read_at(fd: int, length: int, offset: int, what: str) -> bytes:
    """Exactly `length` bytes or a FormatError naming what is missing."""
    try:
        data = os.pread(fd, length, offset)
    except OSError as error:
        raise FormatError(f"cannot read {what} at offset {offset}: {error.strerror}") from error
    if len(data) != length:
        raise FormatError(f"truncated qcow2 image: {what} at offset {offset} lies past the end "
                          "of the file")
    return data


def parse_header(fd: int, path: str) -> Header:
    """Read and validate the header; refuse every feature this module cannot honour."""
    head = os.pread(fd, 4096, 0)
    if len(head) < 4 or head[:4] != MAGIC:
        raise FormatError(f"{path} is not a qcow2 image (wrong magic)")
    if len(head) < HEADER_V2.size:
        raise FormatError(f"{path}: truncated qcow2 image: header is incomplete")
    (_, version, backing_offset, backing_length, cluster_bits, size, crypt_method, l1_size,
     l1_offset, rt_offset, rt_clusters, nb_snapshots, snapshots_offset
     ) = HEADER_V2.unpack_from(head)
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path}: qcow2 version {version} is not supported")
    if not 9 <= cluster_bits <= MAX_CLUSTER_BITS:
        raise FormatError(f"{path}: invalid qcow2 cluster_bits {cluster_bits}")
    if crypt_method:
        raise FormatError(f"{path}: encrypted qcow2 images are not supported")
    incompatible, refcount_order, header_length, compression_code = 0, 4, HEADER_V2.size, 0
    if version >= 3:
        if len(head) < V3_HEADER_LENGTH:
            raise FormatError(f"{path}: truncated qcow2 image: header is incomplete")
        incompatible, _, _, refcount_order, header_length = HEADER_V3.unpack_from(
            head, HEADER_V2.size)
        if header_length < V3_HEADER_LENGTH or header_length > len(head):
            raise FormatError(f"{path}: invalid qcow2 header length {header_length}")
        if incompatible & INCOMPAT_COMPRESSION:
            if header_length <= COMPRESSION_TYPE_OFFSET:
                raise FormatError(f"{path}: compression type flagged but missing from header")
            compression_code = head[COMPRESSION_TYPE_OFFSET]
    if incompatible & INCOMPAT_DATA_FILE:
        raise FormatError(f"{path}: qcow2 images with an external data file are not supported")
    if incompatible & INCOMPAT_EXTENDED_L2:
        raise FormatError(f"{path}: qcow2 extended L2 entries (subclusters) are not supported")
    unknown = incompatible & ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION)
    if unknown:
        raise FormatError(f"{path}: unknown qcow2 incompatible features 0x{unknown:x}")
    if compression_code not in COMPRESSION_TYPES:
        raise FormatError(f"{path}: unknown qcow2 compression type {compression_code}")
    if refcount_order > 6:
        raise FormatError(f"{path}: invalid qcow2 refcount order {refcount_order}")
    if l1_size > MAX_L1_ENTRIES or l1_size * (1 << cluster_bits) * (1 << cluster_bits) // 8 < size:
        raise FormatError(f"{path}: qcow2 L1 table of {l1_size} entries cannot map {size} bytes")
    _check_tables(path, 1 << cluster_bits, header_length, (
        ("L1 table", l1_offset), ("refcount table", rt_offset),
        ("snapshot table", snapshots_offset)), nb_snapshots)
    header = Header(version, cluster_bits, size, l1_size, l1_offset, rt_offset, rt_clusters,
                     nb_snapshots, incompatible, refcount_order,
                     COMPRESSION_TYPES[compression_code])
    header.backing_file = _backing_name(fd, path, backing_offset, backing_length,
                                        1 << cluster_bits)
    if version >= 3:
        cluster = os.pread(fd, 1 << cluster_bits, 0) if cluster_bits > 12 else head
        _parse_extensions(cluster, (header_length + 7) & ~7, 1 << cluster_bits, header, path)
    return header


def _backing_name(fd: int, path: str, offset: int, length: int, cluster_size: int) -> str:
    """The backing file an overlay names (empty for a standalone image), where QEMU allows it:
    inside the first cluster, at most MAX_BACKING_NAME bytes."""
    if not offset:
        return ""
    if not 0 < length <= MAX_BACKING_NAME or offset + length > cluster_size:
        raise FormatError(f"{path}: qcow2 backing file name is damaged")
    return os.fsdecode(read_at(fd, length, offset, "the backing file name"))


def _check_tables(path: str, cluster_size: int, header_length: int,
                  tables: tuple[tuple[str, int], ...], nb_snapshots: int) -> None:
    """What QEMU refuses to open, refused here too: an image that rescue calls intact must
    open in qemu-img and QEMU."""
    if header_length > cluster_size:
        raise FormatError(f"{path}: qcow2 header of {header_length} bytes exceeds its cluster")
    if nb_snapshots > MAX_SNAPSHOTS:
        raise FormatError(f"{path}: qcow2 snapshot table of {nb_snapshots} entries is damaged")
    for name, offset in tables:
        if offset % cluster_size:
            raise FormatError(f"{path}: qcow2 {name} offset {offset:#x} is not cluster aligned")


def _parse_extensions(head: bytes, position: int, cluster_size: int, header: Header,
                      path: str) -> None:
    """Walk the header extensions; only ours matters, the rest QEMU's business."""
    limit = min(len(head), cluster_size)
    while position + EXTENSION.size <= limit:
        kind, length = EXTENSION.unpack_from(head, position)
        position += EXTENSION.size
        if kind == EXT_END:
            return
        if position + length > limit:
            raise FormatError(f"{path}: qcow2 header extension 0x{kind:x} runs past the header")
        if kind == RESCUE_EXT_MAGIC and length >= RESCUE_EXT.size:
            (_, header.flags, header.manifest_offset, header.manifest_length,
             header.manifest_crc) = RESCUE_EXT.unpack_from(head, position)
            header.ours = True
        elif kind == BACKING_FORMAT_EXT:
            header.backing_format = head[position:position + length].decode(errors="replace")
        position += (length + 7) & ~7
    raise FormatError(f"{path}: qcow2 header extensions have no end marker")
