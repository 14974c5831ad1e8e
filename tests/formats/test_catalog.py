"""The image catalog: a folder's images made by `rescue image` in every format, each summarised
from its manifest or map, beside broken files that each become one unreadable row with the
reason, and folders too big or too strange to read file by file."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rescue.engine.imaging import ImageJob, ImageRequest
from rescue.engine.jobs import JobControl
from rescue.formats.catalog import (
    COMPLETE,
    DAMAGED,
    PARTIAL,
    UNKNOWN,
    UNREADABLE,
    is_source_disk,
    list_images,
    summarize,
)
from tests.fixtures.cli import rescue

MIB = 1 << 20
CLEAN = "sim:size=4M,seed=3"
BAD = "sim:size=4M,seed=3,bad=1M+8k"


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of sim: disks as `rescue image` writes them: complete, damaged, interrupted."""
    folder = tmp_path_factory.mktemp("shelf")
    for name, spec in (("clean.img", CLEAN), ("clean.qcow2", CLEAN), ("clean.img.zst", CLEAN),
                       ("bad.img", BAD), ("bad.qcow2", BAD), ("bad.img.zst", BAD)):
        result = rescue("image", spec, str(folder / name))
        assert result.returncode in (0, 1), result.stderr
    control = JobControl()
    control.cancel()  # stopped before its first read: interrupted, nothing rescued
    ImageJob(ImageRequest(source=CLEAN, dest=str(folder / "stopped.qcow2")), control).run()
    return folder


@pytest.mark.parametrize("name", ["clean.img", "clean.qcow2", "clean.img.zst"])
def test_a_complete_image_names_its_source_and_date(shelf: Path, name: str) -> None:
    summary = summarize(str(shelf / name))
    assert (summary.state, summary.size, summary.readable) == (COMPLETE, 4 * MIB, True)
    assert summary.source["path"] == CLEAN and summary.source["size"] == 4 * MIB
    assert summary.source_line() == f"4 MiB ({CLEAN})"
    assert summary.created[:4].isdigit() and summary.created[4] == "-"


@pytest.mark.parametrize("name", ["bad.img", "bad.qcow2", "bad.img.zst"])
def test_a_finished_image_with_unreadable_sectors_is_damaged(shelf: Path, name: str) -> None:
    summary = summarize(str(shelf / name))
    assert (summary.state, summary.detail) == (DAMAGED, "8 KiB unreadable")


def test_an_interrupted_image_is_partial(shelf: Path) -> None:
    summary = summarize(str(shelf / "stopped.qcow2"))
    assert (summary.state, summary.detail) == (PARTIAL, "interrupted, 0% rescued")


def test_an_image_still_being_written_is_partial_by_its_map(shelf: Path, tmp_path: Path) -> None:
    """A job writes the manifest last: before that, the map says how far it got."""
    image = tmp_path / "running.img"
    shutil.copy(shelf / "clean.img", image)
    shutil.copy(shelf / "clean.img.map", f"{image}.map")
    summary = summarize(str(image))
    assert (summary.state, summary.detail) == (PARTIAL, "no manifest yet, 100% rescued")
    assert summary.source["size"] == 4 * MIB


def broken_files(folder: Path, shelf: Path) -> dict[str, str]:
    """Files named as images that are not readable ones, and a word of the reason for each."""
    (folder / "empty.img").write_bytes(b"")
    (folder / "tiny.qcow2").write_bytes(b"QFI\xfb")
    (folder / "garbage.qcow2").write_bytes(os.urandom(64 * 1024))
    (folder / "zipped.img").write_bytes(gzip.compress(os.urandom(8192)))
    head = (shelf / "clean.qcow2").read_bytes()[:600]
    (folder / "cut.qcow2").write_bytes(head)
    data = (shelf / "clean.img.zst").read_bytes()
    (folder / "cut.img.zst").write_bytes(data[:len(data) // 2])
    return {"empty.img": "empty", "tiny.qcow2": "too small", "garbage.qcow2": "signature",
            "zipped.img": "gzip", "cut.qcow2": "truncated", "cut.img.zst": "no seek table"}


def test_a_broken_file_is_unreadable_with_its_reason_never_an_error(
        shelf: Path, tmp_path: Path) -> None:
    for name, word in broken_files(tmp_path, shelf).items():
        summary = summarize(str(tmp_path / name))
        assert summary.state == UNREADABLE and not summary.readable, name
        assert word in summary.detail, (name, summary.detail)
    missing = summarize(str(tmp_path / "gone.img"))
    assert missing.state == UNREADABLE and "No such file" in missing.detail
    os.mkfifo(tmp_path / "pipe.img")  # opening it would wait for a writer forever
    fifo = summarize(str(tmp_path / "pipe.img"))
    assert fifo.state == UNREADABLE and "not a regular file" in fifo.detail


def test_a_damaged_manifest_leaves_the_image_readable_and_says_so(
        shelf: Path, tmp_path: Path) -> None:
    image = tmp_path / "copy.img"
    shutil.copy(shelf / "clean.img", image)
    Path(f"{image}.manifest.json").write_text('{"version": 1, "source": [')
    summary = summarize(str(image))
    assert (summary.state, summary.size) == (UNKNOWN, 4 * MIB)
    assert "manifest is damaged" in summary.detail


def test_a_folder_lists_only_image_files_newest_first(shelf: Path, tmp_path: Path) -> None:
    for index, name in enumerate(("old.img", "new.qcow2")):
        shutil.copy(shelf / f"clean.{name.split('.', 1)[1]}", tmp_path / name)
        os.utime(tmp_path / name, (1_000_000 + index, 1_000_000 + index))
    (tmp_path / "old.img.map").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "folder.img").mkdir()
    os.mkfifo(tmp_path / "pipe.img")  # opening it would block: never listed
    listing = list_images(str(tmp_path))
    assert listing.paths == (str(tmp_path / "new.qcow2"), str(tmp_path / "old.img"))
    assert (listing.more, listing.problem) == (0, "")


def test_a_big_folder_is_listed_up_to_the_limit(tmp_path: Path) -> None:
    for index in range(300):
        (tmp_path / f"n{index:03}.img").write_bytes(b"")
    listing = list_images(str(tmp_path), limit=50)
    assert (len(listing.paths), listing.more) == (50, 250)


def test_a_folder_that_cannot_be_listed_says_why(tmp_path: Path) -> None:
    listing = list_images(str(tmp_path / "absent"))
    assert listing.paths == () and "cannot list" in listing.problem


def test_the_source_disk_is_known_by_serial_or_by_path_and_size() -> None:
    recorded = {"path": "/dev/sdb", "serial": "WD-123", "model": "WDC", "size": 4 * MIB}
    assert is_source_disk(recorded, "/dev/sdc", "WD-123", "WDC", 4 * MIB)
    assert not is_source_disk(recorded, "/dev/sdb", "WD-999", "WDC", 4 * MIB)
    loop = {"path": "/dev/loop7", "size": 4 * MIB}
    assert is_source_disk(loop, "/dev/loop7", None, None, 4 * MIB)
    assert not is_source_disk(loop, "/dev/loop7", None, None, 8 * MIB)
    assert not is_source_disk({}, "/dev/loop7", None, None, 4 * MIB)


@pytest.mark.parametrize("driver", ["vmdk", "vhdx", "vpc", "vdi", "qed"])
def test_disks_qemu_reads_are_listed_and_summarised(shelf: Path, tmp_path: Path,
                                                     driver: str) -> None:
    """A VMDK, VHDX, VHD, VDI or QED disk in the folder is listed by its tools' name for it
    and summarised through QEMU: its format and size, no manifest."""
    name = f"vm.{'vhd' if driver == 'vpc' else driver}"
    exact = ["-o", "force_size=on"] if driver == "vpc" else []  # else VHD rounds to its CHS
    subprocess.run(["qemu-img", "convert", "-O", driver, *exact, str(shelf / "clean.img"),
                    str(tmp_path / name)], check=True)
    listing = list_images(str(tmp_path))
    assert listing.paths == (str(tmp_path / name),)
    summary = summarize(listing.paths[0])
    assert (summary.state, summary.format, summary.size) == (UNKNOWN, driver, 4 * MIB)
