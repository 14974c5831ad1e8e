"""Clonezilla archives built here as Clonezilla builds them (partclone images of a real GPT
disk's ext4 and NTFS partitions, gzip/zstd/xz/uncompressed, split into 1 MiB pieces): restored
onto loop devices and judged by partclone's own restore, e2fsck, ntfs-3g and the files'
hashes; listed, extracted and described; and damaged."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.clonezilla import (
    DISK_SIZE,
    NAME,
    TOOLS,
    SavedDisk,
    copy_archive,
    pieces,
    save_archive,
    saved_disk,
)
from tests.fixtures.disks import small_tmpfs
from tests.fixtures.filesystems import extracted_hashes, fsck_clean, tree_hashes
from tests.fixtures.restore import MIB, digest, partitions, target

pytestmark = pytest.mark.slow
DECOMPRESS = {"gz": "zcat", "zst": "zstd -dc", "xz": "xzcat", "uncomp": "cat"}


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], SavedDisk]:
    """The GPT or DOS source disk and its archive, built once a module: the first partition
    gzip-compressed, the other zstd-compressed."""
    built: dict[str, SavedDisk] = {}

    def disk(table: str) -> SavedDisk:
        if table not in built:
            numbers = (1, 2) if table == "gpt" else (1, 5)
            built[table] = saved_disk(tmp_path_factory.mktemp(table), table,
                                      dict(zip(numbers, ("gz", "zst"), strict=True)))
        return built[table]

    return disk


@pytest.fixture
def saved(disks: Callable[[str], SavedDisk]) -> SavedDisk:
    return disks("gpt")


@pytest.fixture
def targets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def partclone_restored(archive: Path, number: int, kind: str, out: Path | str) -> float:
    """Clonezilla's own restore of one partition into `out` (a file is made 40 MiB long);
    its time in seconds."""
    if not str(out).startswith("/dev/"):
        with open(out, "wb") as f:
            f.truncate(40 * MIB)
    compression = pieces(archive, number)[0].suffixes[-2].lstrip(".")
    begun = time.monotonic()
    subprocess.run(f"cat {' '.join(map(str, pieces(archive, number)))} | "
                   f"{DECOMPRESS[compression]} | {TOOLS[kind]} -r -s - -O {out} "
                   "-L /dev/null", shell=True, check=True, capture_output=True)
    return time.monotonic() - begun


def partition_hashes(kind: str, device: str, folder: Path) -> dict[str, str]:
    copy = folder / f"{kind}.copy"
    subprocess.run(["dd", f"if={device}", f"of={copy}", "bs=1M"], check=True,
                   capture_output=True)
    return extracted_hashes(kind, copy)


@pytest.mark.parametrize("table", ["gpt", "dos"])
def test_restore_equals_partclones_own_restore(disks: Callable[[str], SavedDisk], table: str,
                                               tmp_path: Path, targets: ExitStack) -> None:
    """Two targets at once; each partition equal to what partclone restores from the same
    pieces, its files equal by hash, ext4 clean by e2fsck; the table as the source's, the
    DOS one with its logical partition."""
    saved = disks(table)
    devices = [target(targets, tmp_path, f"t{i}", DISK_SIZE, fill=b"old data ")
               for i in range(2)]
    begun = time.monotonic()
    result = rescue("restore", saved.archive, *devices, "--yes")
    ours = time.monotonic() - begun
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("read back as written") == 2, result.stdout
    theirs = 0.0
    for device in devices:
        subprocess.run(["partx", "-a", device], capture_output=True)
        assert partitions(device) == [(n, saved.starts[n][0] // 512, saved.starts[n][1] // 512)
                                      for n in sorted(saved.kinds)]
        for number, kind in saved.kinds.items():
            peer = tmp_path / f"peer{number}.img"
            theirs += partclone_restored(saved.archive, number, kind, peer)
            part = f"{device}p{number}"
            same = subprocess.run(["cmp", str(peer), part], capture_output=True, text=True)
            assert same.returncode == 0, same.stdout + same.stderr
            assert partition_hashes(kind, part, tmp_path) == saved.hashes[number]
            if kind == "ext4":
                clean, said = fsck_clean("ext4", Path(part))
                assert clean, said
    print(f"\n{table}: restore onto two targets {ours:.2f} s (with read-back); "
          f"decompressor | partclone -r, both partitions twice, into files {theirs:.2f} s")


def test_every_compression_reads_the_saved_blocks(saved: SavedDisk, tmp_path: Path) -> None:
    """xz and uncompressed pieces of another size read the same disk; a partition saved by
    partclone.dd reads whole, its free blocks too."""
    archive = save_archive(saved.image, tmp_path / "xz", {1: "xz", 2: "uncomp"}, saved.kinds,
                           piece="700K", as_dd=(2,))
    assert len(pieces(archive, 1)) > 1 and len(pieces(archive, 2)) > 1
    assert pieces(archive, 2)[0].name == f"{NAME}2.dd-ptcl-img.uncomp.aa"
    outputs = {}
    for folder in (saved.archive, archive):
        out = tmp_path / f"{folder.name}.img"
        result = rescue("convert", folder, out)
        assert result.returncode == 0, result.stderr
        outputs[folder.name] = out.read_bytes()
    start, size = saved.starts[1]
    assert outputs["xz"][:start + size] == outputs["archive"][:start + size]
    peer = tmp_path / "peer.img"
    partclone_restored(archive, 1, "ext4", peer)
    assert outputs["xz"][start:start + size] == peer.read_bytes()
    start, size = saved.starts[2]
    with open(saved.image, "rb") as f:
        f.seek(start)
        assert outputs["xz"][start:start + size] == f.read(size)


def test_ls_and_extract_give_the_saved_files(saved: SavedDisk, tmp_path: Path) -> None:
    listing = rescue("ls", saved.archive)
    assert listing.returncode == 0, listing.stderr
    assert " ext4 " in listing.stdout and " ntfs " in listing.stdout
    for number in saved.kinds:
        out = tmp_path / f"out{number}"
        result = rescue("extract", saved.archive, f"{number}:/", out)
        assert result.returncode == 0, result.stderr
        got = {k: v for k, v in tree_hashes(out).items() if not k.startswith("lost+found")}
        assert got == saved.hashes[number]


def test_info_says_what_the_archive_holds(saved: SavedDisk) -> None:
    result = rescue("info", saved.archive, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["format"], info["archive"], info["disk"], info["table"]) == (
        "clonezilla", "Clonezilla", NAME, "gpt")
    assert [(p["name"], p["start"], p["size"], p["file_system"], p["compression"])
            for p in info["partitions"]] == [
        (f"{NAME}{n}", *saved.starts[n], saved.kinds[n], "gz" if n == 1 else "zst")
        for n in saved.kinds]
    assert info["size"] == DISK_SIZE
    text = rescue("info", saved.archive).stdout
    assert "archive:     Clonezilla, disk sda, table gpt" in text


@pytest.mark.root
def test_a_scratch_folder_without_room_stops_the_job_before_it_writes(
        saved: SavedDisk, tmp_path: Path, targets: ExitStack) -> None:
    """Partition images unpack into $TMPDIR. One without room for them (a small tmpfs, as on
    a live system), or whose files cannot grow that large (FAT32: a file-size limit here),
    stops ls, verify and restore with one line that says so and what to do, before anything
    is written, and never as damage in the archive."""
    device = target(targets, tmp_path, "t", DISK_SIZE, fill=b"\x5a")
    before = digest(device)
    commands = [("ls", saved.archive, "1:/"), ("verify", saved.archive),
                ("restore", saved.archive, device, "--yes")]
    with small_tmpfs(2 * MIB) as scratch:
        for command in commands:
            result = rescue(*command, env={"TMPDIR": str(scratch)})
            assert_clean_failure(result, ExitCode.DESTINATION,
                                 rf"needs [\d.]+ MiB in {scratch}, which has [\d.]+ MiB free; "
                                 "set TMPDIR to a folder with room")
            assert "damaged" not in result.stdout
        assert not list(scratch.iterdir())
    for command in commands:
        result = rescue(*command, file_size=8 * MIB)
        assert_clean_failure(result, ExitCode.DESTINATION, "File too large; set TMPDIR")
    assert digest(device) == before


def _flip(piece: Path, at: float) -> None:
    with open(piece, "r+b") as f:
        f.seek(int(os.path.getsize(piece) * at))
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x55]))


BROKEN = r"(cannot be decompressed|fail their checksum|ends early)"
DAMAGE = {  # partition, its compression, the damage done to its pieces
    "gzip-byte": (1, "gz", lambda ps: _flip(ps[1], 0.5)),
    "zstd-byte": (2, "zst", lambda ps: _flip(ps[0], 0.6)),
    "missing-piece": (1, "gz", lambda ps: ps[-1].unlink()),
    "truncated-piece": (2, "zst", lambda ps: os.truncate(ps[1], 1000)),
    "partclone-block": (1, "uncomp", lambda ps: _flip(ps[1], 0.3)),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_archive_is_one_clear_line(saved: SavedDisk, tmp_path: Path,
                                           targets: ExitStack, case: str) -> None:
    number, compression, damage = DAMAGE[case]
    said = rf"partition {NAME}{number} of the Clonezilla archive: .*{BROKEN}"
    if compression in ("gz", "zst"):
        archive = copy_archive(saved.archive, tmp_path / "damaged")
    else:
        archive = save_archive(saved.image, tmp_path / "damaged", {1: compression},
                               saved.kinds)
    damage(pieces(archive, number))
    verdict = rescue("verify", archive)
    assert verdict.returncode == 1 and "damaged" in verdict.stdout, verdict.stdout
    device = target(targets, tmp_path, "t", DISK_SIZE)
    result = rescue("restore", archive, device, "--yes", "--check-image")
    assert_clean_failure(result, 1, said)
    assert "nothing was written" in result.stderr
    out = tmp_path / "disk.img"
    converted = rescue("convert", archive, out)
    assert converted.returncode != 0 and re.search(said, converted.stderr), converted.stderr
    assert not out.exists()


def test_gpt_without_raw_copies_is_written_from_the_dump(saved: SavedDisk,
                                                          tmp_path: Path) -> None:
    """An archive with sfdisk's dump alone reads with the source's own GPT, both copies."""
    archive = save_archive(saved.image, tmp_path / "dump", {1: "gz", 2: "zst"}, saved.kinds,
                           raw_gpt=False)
    assert not list(archive.glob("*-gpt-*"))
    (archive / f"{NAME}-pt.parted").unlink()  # the size then comes from the GPT's last sector
    out = tmp_path / "disk.img"
    result = rescue("convert", archive, out)
    assert result.returncode == 0, result.stderr
    disk, source = out.read_bytes(), saved.image.read_bytes()
    assert len(disk) == len(source)
    assert disk[:34 * 512] == source[:34 * 512]
    assert disk[-33 * 512:] == source[-33 * 512:]
    checked = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True)
    assert "No problems found" in checked.stdout, checked.stdout


def test_mount_shows_the_disk_and_its_files(saved: SavedDisk, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = rescue("mount", saved.archive, mnt)
    assert result.returncode == 0, result.stderr
    try:
        for number in saved.kinds:
            got = {k: v for k, v in tree_hashes(mnt / f"p{number}").items()
                   if not k.startswith(("lost+found", "$", "System Volume Information"))}
            assert got == saved.hashes[number]
        assert (mnt / "disk").stat().st_size == DISK_SIZE
    finally:
        assert rescue("umount", mnt).returncode == 0


REFUSED = {  # what is done to a copy of the archive, and what the one line says
    "lvm": (lambda a: (a / "lvm_vg_dev.list").write_text("vg0 /dev/sda2\n"), r"LVM volumes"),
    "volume-image": (lambda a: [shutil.copy(p, a / p.name.replace(f"{NAME}1.", "vg0-root."))
                                for p in pieces(a, 1)], r"images of vg0-root, which are not"),
    "parts-without-image": (lambda a: [p.unlink() for p in pieces(a, 2)],
                            rf"names partition {NAME}2 in its parts file but holds no image"),
    "ntfsclone": (lambda a: [p.rename(a / p.name.replace("ntfs-ptcl-img", "ntfs-img"))
                             for p in pieces(a, 2)], r"ntfsclone image"),
    "no-table": (lambda a: (a / f"{NAME}-pt.sf").unlink(), rf"lacks {NAME}-pt.sf"),
    "two-disks": (lambda a: (a / "disk").write_text("sda sdb\n"), r"holds 2 disks"),
    "piece-missing-between": (lambda a: pieces(a, 1)[1].unlink(),
                              rf"lacks piece 2 of {NAME}1.ext4-ptcl-img.gz \(the pieces go on "
                              r"with .ac\)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_archive_rescue_cannot_lay_out_is_refused(saved: SavedDisk, tmp_path: Path,
                                                      case: str) -> None:
    """Never a disk with a hole where the archive's data was: one line, exit 2."""
    archive = copy_archive(saved.archive, tmp_path / "odd")
    change, said = REFUSED[case]
    change(archive)
    for command in (("info", archive), ("ls", archive), ("convert", archive, tmp_path / "o.img")):
        assert_clean_failure(rescue(*command), 2, said)
