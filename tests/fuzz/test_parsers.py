"""Hundreds of seeded mutants through rescue's own parsers, in this process (a subprocess per
mutant would cost more than the parsing).

Each mutant runs under a CPU-time and an address-space limit. Only RescueError may leave a
parser: any other exception is a bug, a limit hit is a hang or a memory blow-up. Where
independent tools (qemu-img, zstd, ddrescuelog, a byte comparison with the base) say a mutant
is damaged or is not a valid map, rescue must not accept it.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.explore.volumes import read_layout
from rescue.formats import mapfile
from rescue.fs.affected import affected_files
from rescue.fs.domain import NATIVE, detect, plan_disk, used_map
from rescue.fs.partitions import PartitionTable, read_partition_table
from rescue.fs.used import FileSystem
from rescue.rangemap import BAD, RangeMap
from tests.fixtures import fuzz
from tests.fixtures.fuzz import (
    BYTE_KINDS,
    LINE_KINDS,
    Bases,
    BytesDisk,
    bounded,
    mutate,
    spec_id,
)

QCOW2 = ("header", "extensions", "l1", "refcount-table", "refcount-block", "l2", "cluster", "any")
IMAGE_REGIONS = {
    "qcow2": (*QCOW2, "manifest"),
    "qemu-qcow2": QCOW2,
    "zst": ("header-frame", "first-frame-header", "first-frame-body", "first-frame-checksum",
            "middle-frame-header", "middle-frame-body", "middle-frame-checksum",
            "manifest-frame", "seek-table", "seek-footer", "any"),
    "img": ("mbr-entries", "gpt-header", "gpt-entries", "gpt-backup-header", "p1-superblock",
            "p2-fat1", "p3-boot-sector", "p4-mft-0", "any"),
}
TABLE_REGIONS = {
    "gpt": ("mbr-entries", "mbr-signature", "gpt-header", "gpt-entries", "gpt-header-fixed",
            "gpt-entries-fixed", "gpt-backup-header", "any"),
    "dos": ("mbr-entries", "mbr-signature", "ebr1", "ebr2", "any"),
}
EXT_REGIONS = ("superblock", "superblock-fixed", "group-descriptors", "block-bitmap",
               "inode-bitmap", "inodes", "root-inode", "root-directory", "any")
FS_REGIONS = {
    "ext4": EXT_REGIONS, "ext2": EXT_REGIONS,
    "vfat": ("boot-sector", "fat1", "fat2", "root-directory", "first-cluster", "any"),
    "exfat": ("boot-sector", "boot-checksum", "fat", "root-directory", "any"),
    "ntfs": ("boot-sector", "mft-0", "mft-root", "mft-bitmap", "mft-16", "mft-mirror", "any"),
}
MAP_LINES = {"ours": range(7, 13), "ddrescue": range(7, 12)}  # status and block lines
EXIT_CODES = {"verify": (0, 1, 2), "info": (0, 2), "report": (0, 1, 2)}


def specs(regions: dict[str, tuple[str, ...]], seeds: range) -> list[tuple[str, str, str, int]]:
    """Every kind of mutation in every region; the whole file (`any`) is also grown."""
    return [(base, region, kind, seed) for base, names in regions.items() for region in names
            for kind in (*BYTE_KINDS, "extend") if kind != "extend" or region == "any"
            for seed in seeds]


@pytest.mark.parametrize("spec", specs(IMAGE_REGIONS, range(1)), ids=spec_id)
def test_image_mutant_verify_and_info(spec: tuple[str, str, str, int], bases: Bases,
                                      tmp_path: Path) -> None:
    """verify and info answer with a documented exit code, and verify never calls a mutant
    intact that qemu-img, zstd or a byte comparison finds damaged."""
    path, what = fuzz.image_mutant(spec, bases, tmp_path)
    with bounded():
        verified, verify_err = fuzz.in_process("verify", str(path))
        described, _ = fuzz.in_process("info", str(path))
    assert verified in EXIT_CODES["verify"], f"{what}: {verify_err}"
    assert described in EXIT_CODES["info"], what
    damage = fuzz.image_damage(spec[0], path, bases) if verified == 0 else None
    assert damage is None, f"false success: verify exit 0 for {what}, but {damage}"


MANIFEST_LINES = 6


@pytest.mark.parametrize("spec", [("manifest", f"line{line}", kind, 0) for line in
                                  range(1, 2 + MANIFEST_LINES) for kind in LINE_KINDS]
                         + [("manifest", "json", "value", seed) for seed in range(40)],
                         ids=spec_id)
def test_manifest_mutant(spec: tuple[str, str, str, int], bases: Bases, tmp_path: Path) -> None:
    """A raw image whose manifest beside it is damaged, or valid JSON with values of the wrong
    type: verify, info and report (which read it) answer with a documented code."""
    sidecar = Path(f"{bases.images['img']}.manifest.json").read_bytes()
    if spec[1] == "json":
        mutant = fuzz.json_mutant("manifest", sidecar, spec[3])
    else:
        mutant = mutate("manifest", sidecar, fuzz.line_regions(sidecar), *spec[1:])
    image = tmp_path / "mutant.img"
    image.symlink_to(bases.images["img"])
    Path(f"{image}.manifest.json").write_bytes(mutant.data)
    shutil.copy(f"{bases.images['img']}.map", f"{image}.map")
    for command in ("verify", "info", "report"):
        with bounded():
            code, err = fuzz.in_process(command, str(image))
        assert code in EXIT_CODES[command], f"{command}: {mutant.what}: {err}"


@pytest.mark.parametrize(("suffix", "size"), fuzz.TINY)
def test_tiny_image_verify_and_info(suffix: str, size: int, tmp_path: Path) -> None:
    """Empty and truncated files: verify and info refuse what is no image, and read the
    rest cleanly."""
    path = fuzz.tiny_image(tmp_path, suffix, size)
    for command in ("verify", "info"):
        with bounded():
            code, err = fuzz.in_process(command, str(path))
        assert code in EXIT_CODES[command], f"{command} of a {size}-byte {suffix}: {err}"
        assert code or fuzz.tiny_is_image(suffix, size), \
            f"{command} accepted a {size}-byte {suffix}, which is no image"


@pytest.mark.parametrize("spec", specs(TABLE_REGIONS, range(3)), ids=spec_id)
def test_partition_table_mutant(spec: tuple[str, str, str, int], bases: Bases) -> None:
    disk = bases.gpt_disk if spec[0] == "gpt" else bases.dos_disk
    data = disk.read_bytes()
    mutant = mutate(*spec[:1], data, fuzz.regions_of(spec[0], data), *spec[1:])
    check_disk(BytesDisk(mutant.data), mutant.what)


@pytest.mark.parametrize("seed", range(6))
def test_extended_chain_that_loops(seed: int, bases: Bases) -> None:
    mutant = fuzz.ebr_loops(bases.dos_disk.read_bytes(), seed)
    table = check_disk(BytesDisk(mutant.data), mutant.what)
    assert any("loops" in warning for warning in table.warnings), mutant.what


def check_disk(reader: BytesDisk, what: str) -> PartitionTable:
    """The table parser never raises (damage is a warning); the planners and the volume
    listing raise RescueError at most; every partition and domain stays on the disk."""
    with bounded():
        table = read_partition_table(reader)
        for entry in table.partitions:
            assert 0 <= entry.start < entry.end <= reader.size, f"{what}: {entry}"
        with contextlib.suppress(RescueError):
            plan = plan_disk(reader)
            assert plan.used.size == reader.size, what
        with contextlib.suppress(RescueError):
            layout = read_layout(reader)
            for volume in layout.volumes:
                assert 0 <= volume.start <= volume.end <= reader.size, f"{what}: {volume}"
        with contextlib.suppress(RescueError):
            affected_files(reader, _bad_everywhere(reader.size))
    return table


def _bad_everywhere(size: int) -> RangeMap:
    """A map with a bad area in every MiB, so every file system's listing is walked."""
    rmap = RangeMap(size)
    rmap.set(0, size, "+")
    for offset in range(4096, size, 1 << 20):
        rmap.set(offset, min(4096, size - offset), BAD)
    return rmap


@pytest.mark.parametrize("spec", specs(FS_REGIONS, range(2)), ids=spec_id)
def test_file_system_mutant(spec: tuple[str, str, str, int], bases: Bases) -> None:
    """The native used-block parsers, the used map, the damage report and the volume probe
    on a damaged file system: RescueError at most, no hang, bounded memory, and every extent
    they return lies inside the file system."""
    data = bases.filesystems[spec[0]].read_bytes()
    mutant = mutate(*spec[:1], data, fuzz.regions_of(spec[0], data), *spec[1:])
    reader = BytesDisk(mutant.data)
    with bounded():
        area = used_map(reader)
        for offset, length in (*area.used, *area.metadata):
            assert offset >= 0 and offset + length <= reader.size, f"{mutant.what}: {area}"
        kind = detect(reader)
        if kind in NATIVE:
            with contextlib.suppress(RescueError):
                walk(NATIVE[kind](reader), reader.size, mutant.what)
        with contextlib.suppress(RescueError):
            affected_files(reader, _bad_everywhere(reader.size))
        with contextlib.suppress(RescueError):
            read_layout(reader)


def walk(fs: FileSystem, size: int, what: str) -> None:
    for offset, length in (*fs.used(), *fs.metadata()):
        assert length >= 0 and 0 <= offset <= size, f"{what}: extent {offset}+{length}"
    for record in fs.files():
        for offset, length in (*record.data, *record.metadata):
            assert length >= 0 and 0 <= offset <= size, f"{what}: {record.path} {offset}"


MAP_SPECS = [(name, f"line{line}", kind, seed) for name, lines in MAP_LINES.items()
             for line in lines for kind in LINE_KINDS for seed in range(2)] + \
    [(name, "any", kind, seed) for name in MAP_LINES
     for kind in ("bitflip", "byterun", "truncate", "insert", "extend") for seed in range(4)]


@pytest.mark.parametrize("spec", MAP_SPECS, ids=spec_id)
def test_mapfile_mutant(spec: tuple[str, str, str, int], bases: Bases, tmp_path: Path) -> None:
    """The mapfile loader raises FormatError at most, and rejects every map ddrescuelog
    rejects."""
    data = bases.maps[spec[0]].read_bytes()
    regions = [*fuzz.line_regions(data), fuzz.whole(data)]
    mutant = mutate(*spec[:1], data, regions, *spec[1:])
    path = tmp_path / "mutant.map"
    path.write_bytes(mutant.data)
    rejected = fuzz.map_rejected(path)
    try:
        with bounded():
            loaded = mapfile.load(str(path), 1 << 20)
    except RescueError:
        return
    assert rejected is None, f"accepted a map ddrescuelog rejects ({rejected}): {mutant.what}"
    assert loaded.rmap.size == 1 << 20, mutant.what
