"""A sample of the seeded mutants through the real CLI, one process per command, each under a
wall-clock timeout and an address-space limit: `ls`, `info` and `verify` here; `extract`,
`restore` onto a loop device and `image --map` in the slow part.

No command may print a traceback, die of a signal, hang, exit with a code it does not
document, or write anything but `rescue:` lines on stderr. verify and restore must not
succeed on a mutant that the independent judges (qemu-img, zstd, a byte comparison) find
damaged, and a restore that succeeds must have written the base disk's bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import fuzz
from tests.fixtures.fuzz import (
    BYTE_KINDS,
    FS_KINDS,
    TINY,
    Bases,
    assert_sane,
    image_damage,
    image_mutant,
    mutate,
    run_bounded,
    spec_id,
    tiny_image,
    tiny_is_image,
)
from tests.fixtures.loop import loop_device

CONTAINER_REGIONS = {
    "qcow2": ("header", "extensions", "l1", "refcount-table", "refcount-block", "l2", "cluster",
              "manifest", "any"),
    "qemu-qcow2": ("header", "l1", "l2", "cluster", "any"),
    "zst": ("header-frame", "first-frame-header", "first-frame-body", "middle-frame-checksum",
            "manifest-frame", "seek-table", "seek-footer", "any"),
}
# The raw disk image: its table and the file systems in its partitions (pN-REGION).
DISK_REGIONS = ("mbr-entries", "gpt-header", "gpt-entries", "gpt-backup-header",
                "p1-superblock", "p1-group-descriptors", "p1-inodes", "p1-root-directory",
                "p2-boot-sector", "p2-fat1", "p2-root-directory", "p3-boot-sector", "p3-fat",
                "p3-root-directory", "p4-boot-sector", "p4-mft-0", "p4-mft-root", "p4-mft-16")
PARTITIONS = (1 << 20, len(FS_KINDS) * (4 << 20))  # where the base disk's partitions lie
CODES = {"ls": (0, 1, 2), "info": (0, 2), "verify": (0, 1, 2), "extract": (0, 1, 2, 3),
         "restore": (0, 1, 2, 3, 5), "image": (0, 1, 2)}


def sample(seed: int) -> list[tuple[str, str, str, int]]:
    """One mutant per region of every image, the mutation kind taken in turn."""
    regions = {**CONTAINER_REGIONS, "img": DISK_REGIONS}
    chosen = []
    for base, names in regions.items():
        for index, region in enumerate(names):
            chosen.append((base, region, BYTE_KINDS[(index + seed) % len(BYTE_KINDS)], seed))
    return chosen


def partition_of(spec: tuple[str, str, str, int]) -> int:
    """The partition whose file system the mutant damaged, else one taken by its seed."""
    region = spec[1]
    if region[0] == "p" and region[1].isdigit():
        return int(region[1])
    return 1 + (len(region) + spec[3]) % len(FS_KINDS)


@pytest.mark.parametrize("spec", sample(0)[::2], ids=spec_id)
def test_ls_and_verify(spec: tuple[str, str, str, int], bases: Bases, tmp_path: Path) -> None:
    """`ls N:/ -R` walks a damaged image's file system through The Sleuth Kit; `verify`
    (one process each, with the limits) must not call a damaged mutant intact."""
    path, what = image_mutant(spec, bases, tmp_path)
    listing = run_bounded("ls", str(path), f"{partition_of(spec)}:/", "-R")
    assert_sane(listing, CODES["ls"], f"ls of {what}")
    verified = run_bounded("verify", str(path))
    assert_sane(verified, CODES["verify"], f"verify of {what}")
    found = image_damage(spec[0], path, bases) if verified.returncode == 0 else None
    assert found is None, f"false success: verify exit 0 for {what}, but {found}"


@pytest.mark.parametrize("spec", sample(1)[::3], ids=spec_id)
def test_info(spec: tuple[str, str, str, int], bases: Bases, tmp_path: Path) -> None:
    path, what = image_mutant(spec, bases, tmp_path)
    assert_sane(run_bounded("info", str(path)), CODES["info"], f"info of {what}")


@pytest.mark.slow
@pytest.mark.parametrize("spec", sample(2), ids=spec_id)
def test_extract(spec: tuple[str, str, str, int], bases: Bases, tmp_path: Path) -> None:
    path, what = image_mutant(spec, bases, tmp_path)
    result = run_bounded("extract", str(path), f"{partition_of(spec)}:/", str(tmp_path / "out"))
    assert_sane(result, CODES["extract"], f"extract of {what}")
    outside = [p for p in tmp_path.iterdir() if p.name not in ("out", path.name)
               and not p.name.startswith(path.name)]
    assert not outside, f"extract of {what} wrote outside DEST: {outside}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", [*FS_KINDS, "ext2"])
def test_file_system_mutants_listed_and_extracted(kind: str, bases: Bases,
                                                  tmp_path: Path) -> None:
    """Every mutant of a bare file system (each region, each kind of mutation) through `ls -R`
    and `extract` of the whole tree, and some through `image --mode used`, many to a
    process: the file-system readers and the used-block parsers must neither crash nor hang
    on them, and rescue must answer with a documented code."""
    data = bases.filesystems[kind].read_bytes()
    regions = fuzz.regions_of(kind, data)
    (tmp_path / "out").mkdir()
    commands, names = [], {}
    for region in regions:
        for mutation in BYTE_KINDS:
            mutant = mutate(kind, data, regions, region.name, mutation, 0)
            path = tmp_path / f"{mutant.name.replace(':', '-')}.img"
            path.write_bytes(mutant.data)
            names[str(path)] = f"{mutant.name}: {mutant.what}"
            commands += [["ls", str(path), "/", "-R"],
                         ["extract", str(path), "/", str(tmp_path / "out" / path.stem)]]
            if mutation in BYTE_KINDS[:3]:  # the used-blocks planner on the real engine
                commands.append(["image", str(path), f"{path}.out.img", "--mode", "used"])
    failures = [f"{names[args[1]]}: rescue {args[0]}: {result}"
                for args, result in fuzz.run_batch(commands)
                if "code" not in result or result["code"] not in CODES[args[0]]]
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, bases: Bases) -> Iterator[str]:
    """A loop device of the base disk's size, for restores: on a larger one, restore would
    move the GPT's backup to the end, and the bytes would differ from the base's."""
    backing = tmp_path_factory.mktemp("fuzz-target") / "target"
    with open(backing, "wb") as f:
        f.truncate(bases.gpt_disk.stat().st_size)
    with loop_device(str(backing)) as device:
        yield device


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("spec", sample(3)[::2], ids=spec_id)
def test_restore(spec: tuple[str, str, str, int], bases: Bases, target: str,
                 tmp_path: Path) -> None:
    """restore exits 0 only when the target holds the base disk's bytes, and never for a
    mutant the judges find damaged."""
    path, what = image_mutant(spec, bases, tmp_path)
    with open(target, "r+b") as f:  # a previous restore's bytes must not pass for this one's
        f.write(bytes(bases.gpt_disk.stat().st_size))
    result = run_bounded("restore", str(path), target, "--yes", "--map-dir",
                         str(tmp_path / "maps"), timeout=120)
    assert_sane(result, CODES["restore"], f"restore of {what}")
    if result.returncode:
        return
    found = image_damage(spec[0], path, bases)
    assert found is None, f"false success: restore exit 0 for {what}, but {found}"
    if spec[0] != "qemu-qcow2":  # QEMU's images carry no checksums to catch changed bytes
        # The partitions' bytes: a mutant with a larger disk size is restored with a table
        # made to fit the target, so the tables may rightly differ from the base's.
        with open(bases.gpt_disk, "rb") as f, open(target, "rb") as g:
            f.seek(PARTITIONS[0])
            g.seek(PARTITIONS[0])
            same = f.read(PARTITIONS[1]) == g.read(PARTITIONS[1])
        assert same, f"false success: restore exit 0 for {what} wrote other bytes"


@pytest.mark.parametrize(("suffix", "size"), TINY)
def test_ls_tiny_files(suffix: str, size: int, tmp_path: Path) -> None:
    """Empty and truncated files are refused or listed cleanly."""
    result = run_bounded("ls", str(tiny_image(tmp_path, suffix, size)))
    assert_sane(result, CODES["ls"], f"ls of a {size}-byte {suffix}")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize(("suffix", "size"), TINY)
def test_restore_tiny_files(suffix: str, size: int, target: str, tmp_path: Path) -> None:
    """A tiny file that is no image (see tiny_is_image) is refused."""
    path = tiny_image(tmp_path, suffix, size)
    result = run_bounded("restore", str(path), target, "--yes", "--map-dir", str(tmp_path))
    assert_sane(result, CODES["restore"], f"restore of a {size}-byte {suffix}")
    assert tiny_is_image(suffix, size) or result.returncode, \
        f"restore of a {size}-byte {suffix} succeeded: {result.stdout}"


MAP_SAMPLE = [(name, f"line{line}", kind, seed) for seed in range(2)
              for name, lines in (("ours", range(7, 13)), ("ddrescue", range(7, 12)))
              for line in lines for kind in fuzz.LINE_KINDS[seed::2]][::2]


@pytest.mark.slow
@pytest.mark.parametrize("spec", MAP_SAMPLE, ids=spec_id)
def test_image_with_mutant_map(spec: tuple[str, str, str, int], bases: Bases,
                               tmp_path: Path) -> None:
    """`image --map MUTANT` over the 1 MiB source the map was made for: a map ddrescuelog
    rejects is refused with exit 2, any other ends cleanly."""
    data = bases.maps[spec[0]].read_bytes()
    mutant = mutate(spec[0], data, fuzz.line_regions(data), *spec[1:])
    path = tmp_path / "mutant.map"
    path.write_bytes(mutant.data)
    rejected = fuzz.map_rejected(path)
    result = run_bounded("image", str(bases.map_source), str(tmp_path / "dest.img"),
                         "--map", str(path))
    what = f"image --map {mutant.name}: {mutant.what}"
    assert_sane(result, CODES["image"], what)
    assert not (rejected and result.returncode != 2), \
        f"{what}: ddrescuelog rejects the map ({rejected}) but image exited {result.returncode}"
