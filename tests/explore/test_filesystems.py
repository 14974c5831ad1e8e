"""`rescue ls` and `rescue extract` on real ext4, FAT, exFAT and NTFS file systems, each made
by its own mkfs and filled by its own driver, imaged by `rescue image` to qcow2 and .img.zst."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.cli import rescue, run
from tests.fixtures.explore import POSIX_MODES, TIME_RESOLUTION_NS, image_to, tree_records

pytestmark = [pytest.mark.slow, pytest.mark.root]

KINDS = ["ext4", "vfat", "ntfs", "exfat"]
FORMATS = ["qcow2", "img.zst"]


def expected(kind: str, source: Path) -> dict[str, tuple[str, int, int, str]]:
    """What extraction must give: the same content, the file system's time resolution, and
    for file systems without Unix modes 0755 folders and 0644 files (their drivers here set
    no read-only attribute from a mode)."""
    resolution = TIME_RESOLUTION_NS[kind]
    records = {}
    for path, (entry_kind, mode, mtime, content) in tree_records(source).items():
        if kind not in POSIX_MODES and entry_kind != "symlink":
            mode = 0o755 if entry_kind == "dir" else 0o644
        records[path] = (entry_kind, mode, mtime - mtime % resolution, content)
    return records


@pytest.fixture(scope="module", params=[(k, f) for k in KINDS for f in FORMATS],
                ids="-".join)
def imaged(request: pytest.FixtureRequest, explore_dir: Path,
           filesystem_image: Callable[[str], Path]) -> tuple[str, Path]:
    kind, fmt = request.param
    image = explore_dir / f"{kind}.{fmt}"
    if not image.exists():
        image_to(filesystem_image(kind), image)
    return kind, image


def test_ls_lists_what_was_put_in(imaged: tuple[str, Path],
                                  source_tree: Callable[[str], Path]) -> None:
    kind, image = imaged
    result = rescue("ls", image, "/", "--recursive", "--json")
    assert result.returncode == 0, result.stderr
    listed = {json.loads(line)["path"].lstrip("/"): json.loads(line)
              for line in result.stdout.splitlines()}
    listed.pop("lost+found", None)
    source = tree_records(source_tree(kind))
    assert set(listed) == set(source)
    for path, (entry_kind, *_rest) in source.items():
        assert listed[path]["kind"] == entry_kind
        if entry_kind == "file":
            assert listed[path]["size"] == (source_tree(kind) / path).stat().st_size
        assert listed[path]["lost"] == []
    options_first = rescue("ls", "--json", image, "-R", "/")  # options may go anywhere
    assert options_first.returncode == 0, options_first.stderr
    assert options_first.stdout == result.stdout


def test_extract_folder_gives_identical_content_times_and_modes(
        imaged: tuple[str, Path], source_tree: Callable[[str], Path], tmp_path: Path) -> None:
    kind, image = imaged
    result = rescue("extract", image, "/docs", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    got = tree_records(tmp_path / "out" / "docs")
    want = expected(kind, source_tree(kind) / "docs")
    assert got == want


def test_extract_single_file_by_partition_number(gpt_ext4_qcow2: Path, tmp_path: Path,
                                                 source_tree: Callable[[str], Path]) -> None:
    listing = rescue("ls", gpt_ext4_qcow2)
    assert listing.returncode == 0, listing.stderr
    assert "ext4" in listing.stdout and listing.stdout.split()[0] == "1"
    result = rescue("extract", gpt_ext4_qcow2, "1:/readme.txt", tmp_path)
    assert result.returncode == 0, result.stderr
    source = source_tree("ext4") / "readme.txt"
    extracted = tmp_path / "readme.txt"
    assert extracted.read_bytes() == source.read_bytes()
    assert extracted.stat().st_mtime_ns == source.stat().st_mtime_ns
    assert extracted.stat().st_mode == source.stat().st_mode


def test_ls_of_a_missing_path_is_one_clear_line(gpt_ext4_qcow2: Path) -> None:
    result = rescue("ls", gpt_ext4_qcow2, "1:/no/such/file")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rescue: no such file or directory: /no/such/file"]
    assert not os.path.exists("/no/such/file")


def test_fat_read_only_attribute_becomes_a_read_only_file(
        explore_dir: Path, filesystem_image: Callable[[str], Path], tmp_path: Path) -> None:
    image = tmp_path / "read-only.img"
    image.write_bytes(filesystem_image("vfat").read_bytes())
    run("mattrib", "-i", image, "+r", "::/readme.txt")
    assert rescue("extract", image, "/readme.txt", tmp_path / "out").returncode == 0
    assert (tmp_path / "out" / "readme.txt").stat().st_mode & 0o777 == 0o444
    assert rescue("extract", image, "/empty", tmp_path / "out").returncode == 0
    assert (tmp_path / "out" / "empty").stat().st_mode & 0o777 == 0o644
