"""`rescue image --first PATH`: the chosen folders' files come right after the metadata, each
reported complete or with its exact bad ranges, on a failing GPT disk with ext4 and NTFS.

The disk is a FUSE device whose bad sectors answer EIO; it logs every read, which tells when
the chosen files were done and what else had been read by then. The real tools (debugfs,
ntfs-3g) read the files back out of the image and judge what we report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.formats.raw import RawReader
from rescue.fs.chosen import FirstPath, domain_of, resolve
from rescue.fs.domain import plan_disk
from rescue.rangemap import FINISHED, RangeMap
from tests.fixtures.cli import CLI_ENV, REPO_ROOT, assert_clean_failure, rescue
from tests.fixtures.faultdisk import LoggedRead, faulty_device, read_log
from tests.fixtures.filesystems import ext_first_block
from tests.fixtures.first import (
    DISK_SIZE,
    DOCUMENTS,
    EXT_SIZE,
    EXT_START,
    THESIS,
    FirstDisk,
    build_first_disk,
    extract,
    lost_ranges,
    partition_copy,
)
from tests.fixtures.judges import map_blocks

pytestmark = [pytest.mark.slow, pytest.mark.root]
FIRST = ["--first", THESIS, "--first", f"2:{DOCUMENTS}"]


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> FirstDisk:
    return build_first_disk(tmp_path_factory.mktemp("first-disk"))


def located(disk: FirstDisk, path: str) -> int:
    """Where a file's data begins on the disk."""
    reader = RawReader(str(disk.path))
    try:
        rmap = RangeMap(reader.size)
        rmap.set(0, reader.size, FINISHED)
        files = resolve(reader, rmap, [FirstPath.parse(path)]).files
    finally:
        reader.close()
    assert len(files) == 1 and files[0].pieces, files
    return files[0].pieces[0][1]


def faults(disk: FirstDisk) -> str:
    """Bad sectors inside two chosen files (ext4 and NTFS), inside two other files, and in
    free space near the end."""
    chosen = disk.chosen()
    ch2 = chosen[f"1:{THESIS}/ch2.tex"].pieces[0][1]
    budget = chosen[f"2:{DOCUMENTS}/budget.xlsx"].pieces[0][1]
    music = located(disk, "1:/home/ann/music/a.flac")
    video = located(disk, "2:/Users/ann/Videos/trip.mp4")
    return (f"sim:bad={ch2 + 8192}+4096,bad={budget + 1536}+512,bad={music + (1 << 20)}+65536,"
            f"bad={video + 4096}+1024,bad={DISK_SIZE - (1 << 20)}+4096")


def reported(stdout: str) -> dict[str, list[tuple[int, int]]]:
    """Each chosen file's bad ranges as the run reported them while it ran."""
    events = [json.loads(line) for line in stdout.splitlines()]
    return {e["path"]: [tuple(r) for r in e["bad"]] for e in events if e["type"] == "first"}


def touches(read: LoggedRead, domain: RangeMap) -> bool:
    return bool(domain.state_bytes(read.offset, read.offset + read.size)[FINISHED])


def first_stage_reads(reads: list[LoggedRead], domain: RangeMap) -> list[LoggedRead]:
    """The reads up to the last one of the chosen files' data: the first stage's end."""
    last = max(i for i, r in enumerate(reads) if touches(r, domain))
    return reads[:last + 1]


def other_bytes(reads: list[LoggedRead], *skipped: RangeMap) -> int:
    """Bytes read outside every domain of `skipped`."""
    total = 0
    for r in reads:
        inside = sum(d.state_bytes(r.offset, r.offset + r.size)[FINISHED] for d in skipped)
        total += r.size - min(inside, r.size)
    return total


def domains(disk: FirstDisk) -> tuple[RangeMap, RangeMap, int]:
    """The chosen files' domain, the metadata's, and how many bytes are neither."""
    chosen = domain_of([f.extents for f in disk.chosen().values()], DISK_SIZE)
    reader = RawReader(str(disk.path))
    try:
        metadata = plan_disk(reader).metadata
    finally:
        reader.close()
    both = RangeMap(DISK_SIZE)
    for rmap in (chosen, metadata):
        for pos, length, state in rmap.areas():
            if state == FINISHED:
                both.set(pos, length, FINISHED)
    return chosen, metadata, DISK_SIZE - both.totals()[FINISHED]


def judge_files(disk: FirstDisk, image: Path, folder: Path,
                bad: dict[str, list[tuple[int, int]]]) -> None:
    """Every chosen file: what the real tools read out of the image is the original except
    exactly in the ranges reported bad; two of them were hit."""
    assert set(bad) == set(disk.chosen())
    for name, ranges in bad.items():
        original = disk.contents[name]
        lost = lost_ranges(original, extract(image, name, folder))
        assert ranges == lost, name
    assert bad[f"1:{THESIS}/ch2.tex"] == [(8192, 4096)]
    assert bad[f"2:{DOCUMENTS}/budget.xlsx"] == [(1536, 512)]
    assert sum(not r for r in bad.values()) == len(bad) - 2


def test_chosen_files_first_then_the_same_image(disk: FirstDisk, tmp_path: Path) -> None:
    log = tmp_path / "reads.log"
    image, reference = tmp_path / "first.img", tmp_path / "plain.img"
    with faulty_device(str(disk.path), faults(disk), log=str(log)) as device:
        result = rescue("image", device, image, *FIRST, "--json")
        reads = read_log(str(log))
        plain = rescue("image", device, reference)
    assert (result.returncode, plain.returncode) == (1, 1), result.stderr + plain.stderr
    bad = reported(result.stdout)
    judge_files(disk, image, tmp_path, bad)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["first"]["complete"] == len(bad) - 2
    assert {f["path"]: [tuple(r) for r in f["bad"]] for f in summary["first_files"]} == bad

    chosen, metadata, others = domains(disk)
    early = first_stage_reads(reads, chosen)
    assert other_bytes(early, chosen, metadata) < others // 5
    # nothing of the chosen files is read again after their stage (no retries asked)
    assert not any(touches(r, chosen) for r in reads[len(early):])
    assert map_blocks(Path(f"{image}.map")) == map_blocks(Path(f"{reference}.map"))
    assert image.read_bytes() == reference.read_bytes()


def test_text_lines_name_each_file(disk: FirstDisk, tmp_path: Path) -> None:
    image = tmp_path / "first.img"
    with faulty_device(str(disk.path), faults(disk)) as device:
        result = rescue("image", device, image, *FIRST)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"first: 1:{THESIS}/ch1.tex complete" in lines
    assert f"first: 1:{THESIS}/ch2.tex 4096 bytes unreadable at 8192+4096" in lines
    assert f"first: 2:{DOCUMENTS}/budget.xlsx 512 bytes unreadable at 1536+512" in lines
    assert "first files: 6 of 8 complete" in lines


# ---- kill -9 in the first stage, then the same command again -----------------------------------


def killed_in_first_stage(command: list[str]) -> None:
    """Start the command, SIGKILL it once its progress says the chosen files are being read."""
    process = subprocess.Popen([sys.executable, "-m", "rescue", *command], cwd=REPO_ROOT,
                               env={**os.environ, **CLI_ENV}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            first = json.loads(line).get("first") or {}
            if first.get("stage") == "files" and first.get("pending"):
                process.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail("the first stage was never seen")
    finally:
        process.kill()
        process.wait()


def test_kill_in_the_first_stage_then_resume(disk: FirstDisk, tmp_path: Path) -> None:
    chosen, metadata, others = domains(disk)
    # two of the chosen files read slowly, so the kill lands while they are read
    slow = ",".join(f"slow={where}+{length}@1" for name in ("ch4.tex", "figures/plot.png")
                    for _, where, length in disk.chosen()[f"1:{THESIS}/{name}"].pieces)
    log = tmp_path / "reads.log"
    image, reference = tmp_path / "first.img", tmp_path / "plain.img"
    command = [str(image), *FIRST, "--json", "--checkpoint", "0.2"]
    with faulty_device(str(disk.path), f"{faults(disk)},{slow}", log=str(log)) as device:
        killed_in_first_stage(["image", device, *command])
        before_kill = len(read_log(str(log)))
        saved = map_blocks(Path(f"{image}.map"))
        resumed = rescue("image", device, *command)
        reads = read_log(str(log))[before_kill:]
        plain = rescue("image", device, reference)
    assert (resumed.returncode, plain.returncode) == (1, 1), resumed.stderr + plain.stderr
    rescued_then = RangeMap.from_areas(DISK_SIZE, [(pos, n, "+" if state == "+" else "?")
                                                   for pos, n, state in saved])
    left = [(pos, length) for pos, length, state in saved
            if state != "+" and chosen.state_bytes(pos, pos + length)[FINISHED]]
    assert left, "the kill came after the chosen files were read"
    # what the killed run rescued is not read again (the metadata included), but for the
    # four windows read to check the source is the same disk, and the sectors a check for a
    # vanished source reads again after a run of failed reads
    again = [r for r in reads if touches(r, rescued_then)]
    assert sum(r.size for r in again) <= 8 * 4096, again
    assert other_bytes(first_stage_reads(reads, chosen), chosen, metadata) < others // 5
    judge_files(disk, image, tmp_path, reported(resumed.stdout))
    assert map_blocks(Path(f"{image}.map")) == map_blocks(Path(f"{reference}.map"))
    assert image.read_bytes() == reference.read_bytes()


# ---- what --first refuses, and what it only reports ---------------------------------------------


def test_unknown_path_stops_after_the_metadata(disk: FirstDisk, tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    result = rescue("image", disk.path, image, "--first", "/home/ann/thesys",
                    "--first", DOCUMENTS)
    assert_clean_failure(result, 2, r"no file or folder /home/ann/thesys in any file system")
    saved = RangeMap.from_areas(DISK_SIZE, map_blocks(Path(f"{image}.map")))
    _, metadata, _ = domains(disk)
    assert saved.totals()[FINISHED] == metadata.totals()[FINISHED]  # the metadata is in
    again = rescue("image", disk.path, image, "--first", DOCUMENTS)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(("first", "message"), [
    ("9:/home", r"--first 9:/home: no partition 9 \(the source has 1, 2\)"),
    ("home/ann", r"--first home/ann: give a path from the file system's root"),
    ("/home/../etc", r"may not contain \. or \.\."),
])
def test_refused_before_anything_is_read(disk: FirstDisk, tmp_path: Path, first: str,
                                         message: str) -> None:
    image = tmp_path / "x.img"
    assert_clean_failure(rescue("image", disk.path, image, "--first", first), 2, message)
    assert not Path(f"{image}.map").exists()


def test_no_file_system_to_look_in(tmp_path: Path) -> None:
    raw = tmp_path / "noise.img"
    raw.write_bytes(os.urandom(4 << 20))
    result = rescue("image", raw, tmp_path / "x.img", "--first", "/home")
    assert_clean_failure(result, 2, r"--first /home: the source holds no ext2/3/4, FAT, exFAT "
                                    r"or NTFS file system")


@pytest.mark.parametrize(("options", "message"), [
    (["--order", "sequential"], r"cannot be combined with --order sequential"),
    (["--domain", "d.map"], r"--domain cannot be combined with .*--first"),
])
def test_refused_with_other_orders(disk: FirstDisk, tmp_path: Path, options: list[str],
                                   message: str) -> None:
    result = rescue("image", disk.path, tmp_path / "x.img", "--first", "/home", *options)
    assert_clean_failure(result, 2, message)


def test_path_into_an_unreadable_folder_is_reported(disk: FirstDisk, tmp_path: Path) -> None:
    with partition_copy(disk.path, EXT_START, EXT_SIZE, tmp_path) as part:
        folder = EXT_START + ext_first_block(part, THESIS)  # the thesis folder's entries
    with faulty_device(str(disk.path), f"sim:bad={folder}+4096") as device:
        result = rescue("image", device, tmp_path / "x.img", "--first", f"{THESIS}/ch1.tex",
                        "--first", DOCUMENTS)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"first: {THESIS}/ch1.tex not found; partition 1: the folder {THESIS} is " \
           "unreadable, so it may lie there" in lines
    assert f"first: 2:{DOCUMENTS}/letter.docx complete" in lines
