"""NTFS volumes in shapes the plain builder never reaches: made by ntfs-3g itself, or edited
byte by byte where ntfs-3g never goes, and read back by ntfs-3g's own tools."""

from __future__ import annotations

import errno
import hashlib
import random
import re
import struct
import tempfile
from pathlib import Path

from tests.fixtures.cli import run
from tests.fixtures.filesystems import MIB, fuse_mounted, make_tree, tree_hashes

CLUSTER = 512
SMALL = 1024  # two clusters: too big to stay resident in a 1 KiB MFT record
SPARSE_NAME, SPARSE_STRIDE, SPARSE_PIECES = "sparse.bin", 4096, 400
Piece = list[tuple[int, int, int]]  # (VCN, LCN, clusters) of one attribute record


def _fill_until_full(folder: Path, rng: random.Random, hashes: dict[str, str],
                     mount: Path, every: int = 1) -> list[Path]:
    """Files in `folder` until the volume is full: every `every`-th holds 1 KiB of random
    bytes, the others are empty and take nothing but an MFT record."""
    folder.mkdir()
    written: list[Path] = []
    while True:
        path = folder / f"{len(written)}.bin"
        data = rng.randbytes(SMALL) if len(written) % every == 0 else b""
        try:
            path.write_bytes(data)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            path.unlink(missing_ok=True)
            return written
        written.append(path)
        hashes[str(path.relative_to(mount))] = hashlib.sha256(data).hexdigest()


def _write_sparse(path: Path, rng: random.Random) -> bytes:
    """A sparse file, one cluster written every SPARSE_STRIDE bytes: hundreds of runs, data
    and holes in turn, so its $DATA continues in extension records; returns its content."""
    content = bytearray(SPARSE_STRIDE * (SPARSE_PIECES - 1) + CLUSTER)
    with open(path, "wb") as f:
        for i in range(SPARSE_PIECES):
            piece = rng.randbytes(CLUSTER)
            f.seek(i * SPARSE_STRIDE)
            f.write(piece)
            content[i * SPARSE_STRIDE:i * SPARSE_STRIDE + CLUSTER] = piece
    return bytes(content)


def build_fragmented_mft(image: Path, seed: int, size: int = 16 * MIB) -> dict[str, str]:
    """An NTFS volume whose $MFT is so fragmented that its record 0 carries an
    $ATTRIBUTE_LIST and the rest of its runs sit in an extension record; returns the hashes
    of every file it holds.

    A tree of ordinary files goes in first; then 1 KiB files until the volume is full, every
    other one deleted so that free space is nothing but 1 KiB holes; a sparse file whose own
    runs continue in extension records; then files again (most of them empty) until it is
    full, so that the MFT grows hole by hole, each hole one more run, and the last files'
    records lie in runs only the extension record knows."""
    with open(image, "wb") as f:
        f.truncate(size)
    run("mkntfs", "-q", "-F", "-f", "-c", str(CLUSTER), str(image))
    rng = random.Random(seed)
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fs-tree-") as work:
        make_tree(Path(work), seed, files=6)
        with fuse_mounted("ntfs", image) as mnt:
            run("cp", "-r", *[str(p) for p in Path(work).iterdir()], str(mnt))
            hashes.update(tree_hashes(Path(work)))
            first = _fill_until_full(mnt / "fill", rng, hashes, mnt)
            for path in first[::2]:
                path.unlink()
                del hashes[str(path.relative_to(mnt))]
            sparse = _write_sparse(mnt / SPARSE_NAME, rng)
            hashes[SPARSE_NAME] = hashlib.sha256(sparse).hexdigest()
            _fill_until_full(mnt / "growth", rng, hashes, mnt, every=8)
    return hashes


# ---- what ntfs-3g's tools say ----------------------------------------------------------------

def attribute_sections(image: Path, file: int | str) -> list[tuple[str, int, str]]:
    """(attribute, MFT record holding it, ntfsinfo's dump of it) for every attribute record
    of `file`, an inode number or a path."""
    which = ["-i", str(file)] if isinstance(file, int) else ["-F", file]
    dump = run("ntfsinfo", "-v", *which, str(image))
    parts = re.split(r"^Dumping attribute (\S+) \(0x[0-9a-f]+\) from mft record (\d+).*$",
                     dump, flags=re.MULTILINE)
    return [(parts[i], int(parts[i + 1]), parts[i + 2]) for i in range(1, len(parts), 3)]


def _runlist(section: str) -> Piece:
    return [(int(vcn, 16), int(lcn, 16), int(count, 16)) for vcn, lcn, count in
            re.findall(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)$", section,
                       re.MULTILINE)]


def mft_pieces(image: Path) -> dict[int, Piece]:
    """The pieces of the $MFT's $DATA by the MFT record holding each, as ntfsinfo reads
    them."""
    return {record: _runlist(text) for name, record, text in attribute_sections(image, 0)
            if name == "$DATA"}


def mft_runs(image: Path) -> list[tuple[int, int]]:
    """The $MFT's runs from all of its records, in VCN order."""
    return [(lcn, count) for _, lcn, count in data_runs(image, 0)]


def inodes(image: Path, folder: str) -> dict[str, tuple[int, int]]:
    """name → (inode, size) of the entries of `folder`, as ntfsls lists them."""
    listing = run("ntfsls", "-i", "-l", "-p", folder, str(image))
    return {name: (int(inode), int(size)) for inode, size, name in
            re.findall(r"^\s*(\d+)\s+(\d+)\s+.*\d{4} (\S+)$", listing, re.MULTILINE)
            if name not in (".", "..")}


def data_runs(image: Path, file: int | str) -> Piece:
    """The allocated runs of a file's $DATA from all of its records, in VCN order."""
    return sorted(run_ for kind, _, text in attribute_sections(image, file)
                  if kind == "$DATA" for run_ in _runlist(text))


# ---- byte edits ------------------------------------------------------------------------------

class MftRecords:
    """Raw access to the MFT records of an NTFS image, through the runs ntfsinfo reports."""

    def __init__(self, image: Path) -> None:
        self.image = image
        boot = image.read_bytes()[:512]
        sector, per_cluster = struct.unpack_from("<HB", boot, 11)
        self.cluster = sector * per_cluster
        self.mirror = struct.unpack_from("<Q", boot, 56)[0] * self.cluster
        code = struct.unpack_from("<b", boot, 64)[0]  # clusters, or 2^-code bytes
        self.record_size = 1 << -code if code < 0 else code * self.cluster
        self.runs = mft_runs(image)

    def record_extents(self, number: int) -> list[tuple[int, int]]:
        """Where record `number` lies: two pieces when its clusters are not adjacent."""
        position, extents = number * self.record_size, []
        remaining = self.record_size
        for lcn, count in self.runs:
            length = count * self.cluster
            if position < length and remaining:
                take = min(length - position, remaining)
                extents.append((lcn * self.cluster + position, take))
                remaining -= take
                position = 0
            else:
                position -= length
        return extents

    def read(self, offset: int, length: int) -> bytearray:
        with open(self.image, "rb") as f:
            f.seek(offset)
            return bytearray(f.read(length))

    def write(self, offset: int, data: bytes) -> None:
        with open(self.image, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def record(self, number: int) -> bytearray:
        """Record `number` with its update sequence undone, ready to edit."""
        raw = b"".join(self.read(*extent) for extent in self.record_extents(number))
        return _unfix(bytearray(raw))

    def put_record(self, number: int, raw: bytearray, mirror: bool = False) -> None:
        """Write an edited record back with its update sequence (and into $MFTMirr)."""
        data = _fix(raw)
        pos = 0
        for offset, length in self.record_extents(number):
            self.write(offset, data[pos:pos + length])
            pos += length
        if mirror:
            self.write(self.mirror + number * self.record_size, data)


def _unfix(raw: bytearray) -> bytearray:
    usa_offset, usa_count = struct.unpack_from("<HH", raw, 4)
    stride = len(raw) // (usa_count - 1)
    for i in range(1, usa_count):
        raw[i * stride - 2:i * stride] = raw[usa_offset + 2 * i:usa_offset + 2 * i + 2]
    return raw


def _fix(raw: bytearray) -> bytes:
    raw = bytearray(raw)
    usa_offset, usa_count = struct.unpack_from("<HH", raw, 4)
    stride = len(raw) // (usa_count - 1)
    for i in range(1, usa_count):
        raw[usa_offset + 2 * i:usa_offset + 2 * i + 2] = raw[i * stride - 2:i * stride]
        raw[i * stride - 2:i * stride] = raw[usa_offset:usa_offset + 2]
    return bytes(raw)


def attribute_offset(raw: bytearray, kind: int) -> int:
    """Offset of the first attribute of type `kind` in a record."""
    pos = struct.unpack_from("<H", raw, 20)[0]
    while struct.unpack_from("<I", raw, pos)[0] != kind:
        pos += struct.unpack_from("<I", raw, pos + 4)[0]
    return pos


def _signed(value: int) -> bytes:
    size = 1
    while not -(1 << (8 * size - 1)) <= value < 1 << (8 * size - 1):
        size += 1
    return value.to_bytes(size, "little", signed=True)


def _encode_runs(runs: list[tuple[int, int]]) -> bytes:
    """An NTFS mapping-pairs array (each piece starts again from cluster 0)."""
    out, previous = bytearray(), 0
    for lcn, count in runs:
        length, offset = _signed(count), _signed(lcn - previous)
        out += bytes([len(offset) << 4 | len(length)]) + length + offset
        previous = lcn
    return bytes(out) + b"\0"


def _set_piece(raw: bytearray, first_vcn: int, piece: Piece) -> None:
    """Give the $DATA attribute record of `raw` the VCN range and runs of `piece`, in the
    same attribute length (the new mapping pairs are never longer)."""
    pos = attribute_offset(raw, 0x80)
    length = struct.unpack_from("<I", raw, pos + 4)[0]
    pairs = pos + struct.unpack_from("<H", raw, pos + 32)[0]
    encoded = _encode_runs([(lcn, count) for _, lcn, count in piece])
    assert len(encoded) <= pos + length - pairs
    last = piece[-1][0] + piece[-1][2] - 1
    struct.pack_into("<qq", raw, pos + 16, first_vcn, last)
    raw[pairs:pos + length] = encoded.ljust(pos + length - pairs, b"\0")


def split_mft_piece(image: Path, beyond: bool) -> int:
    """Split the $MFT's extension piece in two and move the second half into another MFT
    record, freed first by deleting an empty file with ntfs-3g; returns that record.

    That record lies beyond the runs the $MFT's record 0 gives: where the first half's runs
    reach (so a reader must resolve it in two steps, as ntfs-3g does), or, when `beyond`,
    where only the second half itself reaches (so nobody can)."""
    volume = MftRecords(image)
    sections = attribute_sections(image, 0)
    (home, piece), = ((record, _runlist(text)) for kind, record, text in sections
                      if kind == "$DATA" and record != 0)
    list_at, bitmap_at = (_runlist(text)[0][1] * volume.cluster for kind, _, text in sections
                          if kind in ("$ATTRIBUTE_LIST", "$BITMAP"))
    half = len(piece) // 2
    first_half, second_half = piece[:half], piece[half:]
    split_vcn = second_half[0][0]
    low, high = (split_vcn, piece[-1][0] + piece[-1][2]) if beyond else \
        (piece[0][0], split_vcn)
    per_record = volume.record_size // volume.cluster
    target, name = next(
        (inode, name) for name, (inode, size) in sorted(inodes(image, "/growth").items())
        if size == 0 and low <= inode * per_record and (inode + 1) * per_record <= high
        and len(volume.record_extents(inode)) == 1)
    with fuse_mounted("ntfs", image) as mnt:
        (mnt / "growth" / name).unlink()

    extension = volume.record(home)
    moved = bytearray(extension)
    _set_piece(extension, piece[0][0], first_half)
    _set_piece(moved, split_vcn, second_half)
    sequence = struct.unpack_from("<H", volume.record(target), 16)[0]
    struct.pack_into("<H", moved, 16, sequence)
    struct.pack_into("<H", moved, 22, 1)  # in use
    struct.pack_into("<I", moved, 44, target)
    volume.put_record(home, extension)
    volume.put_record(target, moved)

    # the attribute list gains an entry for the moved half, right after the first half's
    mft = volume.record(0)
    pos = attribute_offset(mft, 0x20)
    list_size = struct.unpack_from("<Q", mft, pos + 48)[0]
    entries = volume.read(list_at, list_size)
    instance = struct.unpack_from("<H", moved, attribute_offset(moved, 0x80) + 14)[0]
    entry = struct.pack("<IHBBQQH6x", 0x80, 32, 0, 26, split_vcn, sequence << 48 | target,
                        instance)
    at = _entry_at(entries, 0x80, piece[0][0]) + 32
    volume.write(list_at, bytes(entries[:at] + entry + entries[at:]))
    struct.pack_into("<QQ", mft, pos + 48, list_size + 32, list_size + 32)
    volume.put_record(0, mft, mirror=True)

    # and the $MFT's bitmap marks the record in use again
    byte = volume.read(bitmap_at + target // 8, 1)
    volume.write(bitmap_at + target // 8, bytes([byte[0] | 1 << target % 8]))
    return target


def _entry_at(entries: bytearray, kind: int, first_vcn: int) -> int:
    """Offset of the attribute-list entry for the piece of `kind` starting at `first_vcn`."""
    pos = 0
    while pos < len(entries):
        entry_kind, length = struct.unpack_from("<IH", entries, pos)
        if entry_kind == kind and struct.unpack_from("<Q", entries, pos + 8)[0] == first_vcn:
            return pos
        pos += length
    raise LookupError(f"no attribute-list entry for type {kind:#x} at VCN {first_vcn}")
