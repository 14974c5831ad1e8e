"""`rescue ls`, `rescue extract` and `rescue mount` on every file system of the corpus
(tests/fixtures/corpus.py), each as partition 1 of a GPT disk: every name, kind, size, mode,
modification time, content, symlink target and NTFS stream equals what the file system's own
driver shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.cli import assert_clean_failure, rescue
from tests.fixtures.corpus import (
    EXT_VARIANTS,
    FAT_VARIANTS,
    Case,
    differences,
    ntfs_streams,
    read_tree,
    rescue_read,
    sha256,
)
from tests.fixtures.explore import make_gpt_disk, rescue_mounted

pytestmark = [pytest.mark.slow, pytest.mark.root]

# XFS and btrfs are in the corpus only where their mkfs is installed
READ = [*EXT_VARIANTS, *FAT_VARIANTS, "exfat", "ntfs", "xfs"]
NOT_READ = ["btrfs"]


def case_named(corpus: list[Case], name: str) -> Case:
    case = next((case for case in corpus if case.name == name), None)
    if case is None:
        pytest.skip(f"mkfs.{name} is not installed")
    return case


@pytest.mark.parametrize("name", READ)
def test_rescue_reads_what_the_drivers_wrote(corpus: list[Case], name: str,
                                             tmp_path: Path) -> None:
    case = case_named(corpus, name)
    disk = tmp_path / "disk.img"
    make_gpt_disk([case.image], disk)
    found, runs = rescue_read(disk, "1:/", tmp_path / "out")
    for result in runs:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    wrong = differences(case, found)
    shown = "\n".join(f"{path[:80]}: {what}" for path, what in sorted(wrong.items())[:20])
    assert not wrong, f"{len(wrong)} of {len(case.truth)} entries differ:\n{shown}"


@pytest.mark.parametrize("name", NOT_READ)
def test_a_file_system_no_reader_knows_is_one_clear_line(corpus: list[Case],
                                                          name: str) -> None:
    case = case_named(corpus, name)
    result = rescue("ls", case.image, "/")
    assert_clean_failure(result, 2, rf"no file system .* \(probe says {name}[;)]")


@pytest.mark.parametrize("name", READ)
def test_the_mount_serves_what_the_drivers_wrote(corpus: list[Case], name: str,
                                                 tmp_path: Path) -> None:
    """`rescue mount`'s own file view (no kernel driver), read through the kernel's FUSE
    client as any program reads it: the same truth, streams included (as user.STREAM, and
    as NAME:STREAM where a stream is too big for an extended attribute)."""
    case = case_named(corpus, name)
    disk = tmp_path / "disk.img"
    make_gpt_disk([case.image], disk)
    with rescue_mounted(disk, tmp_path / "mnt") as directory:
        served = directory / "p1"
        found = read_tree(served, modes=case.posix_modes,
                          streams=ntfs_streams if case.family == "ntfs" else None)
        for path, record in found.items():
            for stream, digest in record.streams.items():
                if not digest:
                    record.streams[stream] = sha256((served / f"{path}:{stream}").read_bytes())
    wrong = differences(case, found)
    shown = "\n".join(f"{path[:80]}: {what}" for path, what in sorted(wrong.items())[:20])
    assert not wrong, f"{len(wrong)} of {len(case.truth)} entries differ:\n{shown}"
