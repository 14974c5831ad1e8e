"""`rescue restore` onto a disk of another size: the plan, the grown restore, the refusals.

The source is a PC's 2 GiB disk (FAT32 EFI system partition, ext4 and NTFS about 30 % full),
imaged with `--mode used` to qcow2. The judges are the file systems' own tools: their minimum
sizes, their checkers, sgdisk, and the files' SHA-256 read back through read-only mounts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.cli import main
from rescue.errors import ExitCode
from rescue.fs import resizing
from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process, run
from tests.fixtures.disks import mounted
from tests.fixtures.loop import loop_device
from tests.fixtures.resize import build, file_hashes
from tests.fixtures.restore import MIB, blank, digest, target

pytestmark = pytest.mark.slow
GIB = 1 << 30


@pytest.fixture(scope="module")
def pc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pc")
    disk, image, hashes = build(folder)
    return {"disk": disk, "image": image, "hashes": hashes, "image_sha": digest(image),
            "folder": folder}


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def restore(pc: dict[str, object], device: str, *args: str) -> subprocess.CompletedProcess[str]:
    return rescue("restore", str(pc["image"]), device, *args, timeout=900)


def tool_minimums(disk: Path) -> dict[int, int]:
    """What resize2fs -P and ntfsresize --info say of the source disk's own partitions."""
    minimums = {}
    with loop_device(str(disk), partitions=True, read_only=True) as device:
        blocks = re.search(r"minimum size of the filesystem: (\d+)",
                           run("resize2fs", "-P", f"{device}p2"))
        block = re.search(r"Block size:\s+(\d+)", run("dumpe2fs", "-h", f"{device}p2"))
        assert blocks and block
        minimums[2] = int(blocks[1]) * int(block[1])
        found = re.search(r"resize at (\d+) bytes",
                          run("ntfsresize", "--info", "--force", "--no-action", f"{device}p3"))
        assert found
        minimums[3] = int(found[1])
    return minimums


def plan_of(pc: dict[str, object], device: str, *args: str) -> tuple[dict, int]:
    result = restore(pc, device, "--dry-run", "--json", *args)
    check = json.loads(result.stdout.splitlines()[0])["targets"][0]
    return check, result.returncode


def test_plans_for_a_larger_and_a_smaller_disk(pc: dict[str, object], tmp_path: Path,
                                              targets: ExitStack) -> None:
    minimums = tool_minimums(pc["disk"])  # type: ignore[arg-type]
    big = target(targets, tmp_path, "big", 4 * GIB, fill=b"big ")
    small = target(targets, tmp_path, "small", 1229 * MIB, fill=b"small ")
    before = digest(tmp_path / "big.target"), digest(tmp_path / "small.target")
    check, code = plan_of(pc, big)
    assert code == 0 and check["mode"] == "resize"
    esp, root, data = check["plan"]["partitions"]
    assert (esp["action"], esp["new_start"], esp["new_size"]) == ("keep", MIB, 256 * MIB)
    assert root["action"] == data["action"] == "grow"
    assert (root["min_size"], data["min_size"]) == (minimums[2], minimums[3])
    # FAT: where its last used cluster ends; 8 MiB of files went in, after its two FATs
    assert 8 * MIB < esp["min_size"] < 16 * MIB
    assert all(p["new_start"] % MIB == 0 for p in (root, data))
    assert data["new_start"] >= root["new_start"] + root["new_size"]
    assert data["new_start"] + data["new_size"] <= 4 * GIB - 33 * 512
    assert data["new_start"] + data["new_size"] > 4 * GIB - 8 * MIB  # the disk is used
    shown = restore(pc, big, "--dry-run")
    assert shown.returncode == 0 and all(len(line) <= 80 for line in shown.stdout.splitlines())
    assert re.search(r"^ +2 ext +257 MiB +880 MiB +257 MiB .* grow$", shown.stdout, re.M)
    assert shown.stdout.endswith("dry run: nothing was written\n")
    check, code = plan_of(pc, small)
    assert code == 0 and check["mode"] == "resize"
    parts = check["plan"]["partitions"]
    assert [p["action"] for p in parts] == ["keep", "shrink", "shrink"]
    assert all(p["new_size"] >= minimums[p["number"]] for p in parts[1:])
    assert parts[2]["new_start"] + parts[2]["new_size"] <= 1229 * MIB - 33 * 512
    assert (digest(tmp_path / "big.target"), digest(tmp_path / "small.target")) == before


def test_layout_sets_the_sizes(pc: dict[str, object], tmp_path: Path,
                               targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", 4 * GIB)
    check, code = plan_of(pc, device, "--layout", "2=2560M,3=rest")
    assert code == 0
    root, data = check["plan"]["partitions"][1:]
    assert root["new_size"] == 2560 * MIB
    assert data["new_start"] == root["new_start"] + 2560 * MIB
    assert data["action"] == "grow" and data["new_start"] + data["new_size"] > 4 * GIB - 8 * MIB
    check, code = plan_of(pc, device, "--layout", "2=3G,3=rest")  # NTFS shrinks
    assert code == 0 and check["plan"]["partitions"][2]["action"] == "shrink"
    result = restore(pc, device, "--dry-run", "--layout", "2=300M")
    assert_clean_failure(result, 5, r"--layout gives partition 2 300 MiB, less than the")
    result = restore(pc, device, "--dry-run", "--layout", "2=lots")
    assert_clean_failure(result, 2, r"--layout '2=lots'")


@pytest.mark.parametrize(("size", "action"), [(4 * GIB, "grow"), (1229 * MIB, "shrink")])
def test_restored_onto_a_disk_of_another_size(pc: dict[str, object], tmp_path: Path,
                                              targets: ExitStack, size: int, action: str
                                              ) -> None:
    device = target(targets, tmp_path, "t", size, fill=b"stale ")
    check, _ = plan_of(pc, device)
    assert [p["action"] for p in check["plan"]["partitions"]] == ["keep", action, action]
    result = restore(pc, device, "--yes", "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    assert "No problems found" in run("sgdisk", "-v", device)
    source, restored = (run("sfdisk", "--dump", str(d)) for d in (pc["disk"], device))
    guid = r"(label-id|uuid|type)=?:? ?([0-9A-F-]{36})"
    assert re.findall(guid, source) == re.findall(guid, restored)
    layout = [(int(s), int(n)) for s, n in re.findall(r"start=\s*(\d+), size=\s*(\d+)",
                                                       restored)]
    assert all(start * 512 % MIB == 0 for start, _ in layout)
    assert layout[0] == (2048, 256 * MIB // 512)
    assert sum(sectors for _, sectors in layout) * 512 > size - 16 * MIB  # the disk is used
    checkers = {1: ["fsck.vfat", "-n"], 2: ["e2fsck", "-f", "-n"], 3: ["ntfsfix", "-n"]}
    with loop_device(device, partitions=True, read_only=True) as loop:
        for number, checker in checkers.items():
            assert subprocess.run([*checker, f"{loop}p{number}"],
                                  capture_output=True).returncode == 0, checker
            uuids = [run("blkid", "-p", "-o", "value", "-s", "UUID", d).strip()
                     for d in (f"{loop}p{number}",)]
            assert uuids[0]
        sizes = {n: int(run("blockdev", "--getsize64", f"{loop}p{n}")) for n in (2, 3)}
        ext_blocks = re.search(r"Block count:\s+(\d+)", run("dumpe2fs", "-h", f"{loop}p2"))
        assert ext_blocks and int(ext_blocks[1]) * 4096 == sizes[2]  # resized to its partition
    with loop_device(str(pc["disk"]), partitions=True, read_only=True) as old, \
            loop_device(device, partitions=True, read_only=True) as new:
        for number in (1, 2, 3):
            uuid = [run("blkid", "-p", "-o", "value", "-s", "UUID", f"{d}p{number}")
                    for d in (old, new)]
            assert uuid[0] == uuid[1]
    assert file_hashes(device, tmp_path) == pc["hashes"]
    assert digest(pc["image"]) == pc["image_sha"]  # type: ignore[arg-type]


def test_too_small_for_the_data_is_refused_before_any_write(
        pc: dict[str, object], tmp_path: Path, targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", 700 * MIB, fill=b"untouched ")
    before = digest(tmp_path / "t.target")
    result = restore(pc, device, "--yes", "--map-dir", str(tmp_path / "maps"))
    assert_clean_failure(result, 5, r"the image's data needs at least \d+ MiB \(\d+ bytes\) "
                         r"\(partition 1 fat: keeps 256 MiB .*partition 2 ext: min \d+ MiB")
    assert digest(tmp_path / "t.target") == before
    assert digest(pc["image"]) == pc["image_sha"]  # type: ignore[arg-type]


def test_a_dos_logical_partition_grows_inside_its_container(tmp_path: Path,
                                                            targets: ExitStack) -> None:
    """A raw image this time: its partitions are measured through a loop device directly."""
    disk = tmp_path / "dos.disk"
    blank(disk, 512 * MIB)
    run("sfdisk", "-q", str(disk), stdin="label: dos\nstart=2048,size=100M,type=83\n"
                                          "start=206848,size=300M,type=5\n"
                                          "start=208896,size=280M,type=83\n")
    with loop_device(str(disk), partitions=True) as device:
        for number in (1, 5):
            run("mkfs.ext4", "-q", "-F", f"{device}p{number}")
        with mounted(f"{device}p5", tmp_path / "mnt") as mnt:
            (mnt / "data.bin").write_bytes(b"logical " * (4 * MIB))
    image = tmp_path / "dos.img"
    with loop_device(str(disk), read_only=True) as device:
        assert rescue("image", device, str(image)).returncode == 0
    device = target(targets, tmp_path, "t", GIB)
    result = rescue("restore", str(image), device, "--yes", "--map-dir", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    run("sfdisk", "--verify", device)
    with loop_device(device, partitions=True, read_only=True) as loop:
        sizes = {n: int(run("blockdev", "--getsize64", f"{loop}p{n}")) for n in (1, 5)}
        assert sizes[1] > 200 * MIB and sizes[5] > 500 * MIB  # both over an eighth: both grow
        assert sizes[5] == pytest.approx(2.8 * sizes[1], rel=0.01)
        for number in (1, 5):
            run("e2fsck", "-f", "-n", f"{loop}p{number}")
        with mounted(f"{loop}p5", tmp_path / "check", ("mount", "-o", "ro")) as mnt:
            assert (mnt / "data.bin").read_bytes() == b"logical " * (4 * MIB)


def test_a_shrinking_restore_killed_midway_completes_when_run_again(
        pc: dict[str, object], tmp_path: Path, targets: ExitStack) -> None:
    """Killed while the shrunk NTFS (the last of its 4 pieces) is written: the next run makes
    a new layer, so that piece is written again whole and never mixed from two layers."""
    device = target(targets, tmp_path, "t", 1229 * MIB, fill=b"stale ")
    maps = tmp_path / "maps"
    args = ("restore", str(pc["image"]), device, "--yes", "--map-dir", str(maps),
            "--checkpoint", "0")
    process = rescue_process(*args)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not (
                len(list(maps.glob("*.map"))) == 4 and any(
                    "?" in path.read_text() for path in maps.glob("*.map"))):
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -9, "the restore finished before it could be interrupted"
    deadline = time.monotonic() + 10  # the layer's export ends with the killed restore
    while time.monotonic() < deadline and "rescue-shrink-" in run("ps", "-eo", "args"):
        time.sleep(0.1)
    assert "rescue-shrink-" not in run("ps", "-eo", "args")
    layers = set(Path(tempfile.gettempdir()).glob("rescue-shrink-*"))
    assert layers  # left by the killed restore
    result = rescue(*args, timeout=900)
    assert result.returncode == 0, result.stderr
    assert not layers & set(Path(tempfile.gettempdir()).glob("rescue-shrink-*"))  # removed
    with loop_device(device, partitions=True, read_only=True) as loop:
        run("e2fsck", "-f", "-n", f"{loop}p2")
        run("ntfsfix", "-n", f"{loop}p3")
    assert file_hashes(device, tmp_path) == pc["hashes"]
    assert digest(pc["image"]) == pc["image_sha"]  # type: ignore[arg-type]


def test_a_resized_restore_compares_the_files_with_the_image(
        pc: dict[str, object], tmp_path: Path, targets: ExitStack) -> None:
    device = target(targets, tmp_path, "t", 3 * GIB)
    result = restore(pc, device, "--yes", "--json", "--map-dir", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    resized = sum(number in (2, 3) for number, _ in pc["hashes"])  # type: ignore[attr-defined]
    compared = summary["targets"][0]["files_compared"]
    assert compared["listed"] == compared["hashed"] == resized  # few files: all hashed
    assert compared["bytes"] > 0.29 * (880 + 907) * MIB  # each about 30 % full
    shown = restore(pc, device, "--yes", "--map-dir", str(tmp_path / "maps2"))
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^{device}: files after resize: {resized} as in the image, "
                     rf"{resized} \(\d+ MiB\) with the same SHA-256$", shown.stdout, re.M)


def _corrupt_content(loop: str, name: str) -> None:
    """One 4 KiB block of the file's data overwritten, as a bad resizer could leave it."""
    block = int(run("debugfs", "-R", f"bmap /{name} 3", loop).split()[-1])
    with open(loop, "r+b") as disk:
        disk.seek(block * 4096)
        disk.write(b"not what the image holds " * 160)
        disk.flush()
        os.fsync(disk.fileno())


def _remove(loop: str, name: str) -> None:
    """The file gone from its directory, blocks freed, the file system still consistent."""
    run("debugfs", "-w", "-R", f"rm /{name}", loop)


@pytest.mark.parametrize(("damage", "why"), [(_corrupt_content, "content"),
                                             (_remove, "missing")])
def test_a_file_changed_by_the_resize_fails_the_restore_naming_it(
        pc: dict[str, object], tmp_path: Path, targets: ExitStack,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        damage: Callable[[str, str], None], why: str) -> None:
    """The real restore, with the ext4 file system damaged on the target right after its
    own checker passed it: only the file comparison can find it."""
    checked = resizing.check

    def check_then_damage(kind: str | None, device: str) -> None:
        checked(kind, device)
        if kind == "ext":
            damage(device, "file-004.bin")

    monkeypatch.setattr(resizing, "check", check_then_damage)
    device = target(targets, tmp_path, "t", 3 * GIB)
    code = main(["restore", str(pc["image"]), device, "--yes", "--json",
                 "--map-dir", str(tmp_path / "maps")])
    out = capsys.readouterr().out
    summary = json.loads(out.splitlines()[-1])
    assert code == summary["exit_code"] == ExitCode.DESTINATION
    assert summary["outcome"] == "failed"
    error = summary["targets"][0]["error"]
    assert re.search(rf"partition 2 \(ext\) was resized, but 1 of its \d+ files differ from "
                     rf"the image's: /file-004.bin \({why}\)", error), error
    assert digest(pc["image"]) == pc["image_sha"]  # type: ignore[arg-type]
