"""Incremental images (`rescue image --base`): qcow2 overlays over an older image of the same
disk, judged by QEMU's own tools, on a real ext4 file system on a real loop device."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process, run
from tests.fixtures.judges import map_blocks
from tests.fixtures.loop import loop_device
from tests.fixtures.restore import blank, cmp, mounted_here, target

pytestmark = pytest.mark.slow

MIB = 1 << 20
DISK = 64 * MIB
FILES = 40  # of 1 MiB each: changing two is 5 % of them


def qemu_img(*args: str | Path) -> str:
    return run("qemu-img", *args)


def allocated_clusters(image: Path) -> int:
    """The clusters this file itself stores (not its backing file's), as qemu-img counts them."""
    return int(json.loads(qemu_img("check", "--output=json", image))["allocated-clusters"])


def assert_check_clean(image: Path) -> None:
    done = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert done.returncode == 0 and "No errors were found" in done.stdout, done.stdout + done.stderr


def assert_same_disk(image: Path, disk: Path) -> None:
    """QEMU reads the chain as the disk it was made from."""
    done = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image),
                           str(disk)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def file_bytes(seed: str) -> bytes:
    """1 MiB that compresses like real data would not: each seed its own bytes."""
    block = hashlib.sha256(seed.encode()).digest()
    return b"".join(hashlib.sha256(block + i.to_bytes(4, "big")).digest()
                    for i in range(MIB // 32))


@dataclass
class Generation:
    image: Path  # the image of this state of the disk
    disk: Path  # a copy of the disk as it was imaged


@dataclass
class History:
    folder: Path
    disk: Path
    generations: list[Generation]


def image_disk(disk: Path, image: Path, *options: str) -> None:
    with loop_device(str(disk)) as device:
        done = rescue("image", device, image, *options)
    assert done.returncode == 0, done.stderr


def change_files(disk: Path, changes: dict[str, bytes | None]) -> None:
    """Rewrite files in place (None: overwrite with zeros in place, as a wipe does)."""
    with loop_device(str(disk)) as device, mounted_here(device) as mountpoint:
        for name, data in changes.items():
            with open(mountpoint / name, "r+b") as f:
                f.write(bytes(MIB) if data is None else data)
                f.flush()
                os.fsync(f.fileno())


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """An ext4 disk of 40 files imaged in full, then twice more with --base after changing
    two files each time (one rewritten, one wiped with zeros)."""
    folder = tmp_path_factory.mktemp("incremental")
    disk = blank(folder / "disk.raw", DISK)
    with loop_device(str(disk)) as device:
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
        with mounted_here(device) as mountpoint:
            for index in range(FILES):
                (mountpoint / f"f{index}.bin").write_bytes(file_bytes(f"v1-{index}"))
    generations: list[Generation] = []
    for number, changes in enumerate([{}, {"f3.bin": file_bytes("v2-3"), "f9.bin": None},
                                      {"f20.bin": file_bytes("v3-20"), "f3.bin": None}]):
        change_files(disk, changes)
        image = folder / f"gen{number}.qcow2"
        base = ["--base", str(generations[-1].image)] if generations else []
        image_disk(disk, image, *base)
        copy = folder / f"gen{number}.raw"
        shutil.copyfile(disk, copy)
        generations.append(Generation(image, copy))
    return History(folder, disk, generations)


def test_overlay_holds_only_what_changed(history: History) -> None:
    base, second, third = history.generations
    assert allocated_clusters(second.image) <= allocated_clusters(base.image) // 10
    assert allocated_clusters(third.image) <= allocated_clusters(base.image) // 10
    for generation in history.generations:
        assert_check_clean(generation.image)
        assert_same_disk(generation.image, generation.disk)


def test_overlay_header_names_its_base_as_qemu_does(history: History) -> None:
    third = history.generations[2].image
    chain = json.loads(qemu_img("info", "--backing-chain", "--output=json", third))
    assert [entry["filename"] for entry in chain] == [
        str(generation.image) for generation in reversed(history.generations)]
    assert chain[0]["backing-filename"] == "gen1.qcow2"  # relative: beside it
    assert chain[0]["backing-filename-format"] == "qcow2"


def test_wiped_clusters_read_as_zeros_not_as_the_base(history: History) -> None:
    """f9 held data in the base and zeros in the second image: the chain reads zeros."""
    extracted = history.folder / "wiped"
    done = rescue("extract", history.generations[1].image, "/f9.bin", extracted)
    assert done.returncode == 0, done.stderr
    assert (extracted / "f9.bin").read_bytes() == bytes(MIB)


def test_restore_ls_verify_info_convert_read_the_chain(history: History,
                                                        tmp_path: Path) -> None:
    newest = history.generations[2]
    with contextlib.ExitStack() as stack:
        device = target(stack, tmp_path, "restored", DISK)
        done = rescue("restore", newest.image, device, "--yes")
        assert done.returncode == 0, done.stderr
        cmp(device, newest.disk, DISK)
    listing = rescue("ls", newest.image, "/")
    assert listing.returncode == 0 and "f20.bin" in listing.stdout, listing.stderr
    done = rescue("extract", newest.image, "/f20.bin", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "f20.bin").read_bytes() == file_bytes("v3-20")
    verified = rescue("verify", newest.image)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr
    info = json.loads(rescue("info", newest.image, "--json").stdout)
    assert info["backing_chain"] == [str(g.image) for g in reversed(history.generations)]
    assert info["manifest"]["base"]["file"] == "gen1.qcow2"
    shown = rescue("info", newest.image).stdout.splitlines()
    chain = [line for line in shown if line.startswith(("chain:", " " * 13 + "over "))]
    assert [line.split()[-1] for line in chain] == [
        str(g.image) for g in reversed(history.generations)]
    flat = tmp_path / "flat.qcow2"
    done = rescue("convert", newest.image, flat)
    assert done.returncode == 0, done.stderr
    assert "backing-filename" not in json.loads(qemu_img("info", "--output=json", flat))
    assert "base" not in json.loads(rescue("info", flat, "--json").stdout)["manifest"]
    assert_same_disk(flat, newest.disk)


def test_base_problems_are_one_clear_line(history: History, tmp_path: Path) -> None:
    base = history.generations[0].image
    small = tmp_path / "small.qcow2"
    assert rescue("image", "sim:size=8M,seed=3", small).returncode == 0
    raw = tmp_path / "raw.qcow2.img"
    raw.write_bytes(bytes(MIB))
    for given, pattern in [(tmp_path / "none.qcow2", r"none\.qcow2 does not exist"),
                           (small, r"holds a 8388608-byte disk, the source has 67108864"),
                           (raw, r"raw\.qcow2\.img is not a qcow2 image")]:
        assert_clean_failure(rescue("image", history.disk, tmp_path / "new.qcow2", "--base",
                                    given), ExitCode.USAGE, pattern)
        assert not (tmp_path / "new.qcow2").exists()
    assert_clean_failure(rescue("image", history.disk, tmp_path / "new.img", "--base", base),
                         ExitCode.USAGE, r"--base makes a qcow2 overlay")
    other = tmp_path / "other.qcow2"
    assert rescue("image", "sim:size=8M,seed=4", other).returncode == 0
    assert_clean_failure(rescue("image", "sim:size=8M,seed=3", small, "--base", other),
                         ExitCode.USAGE, r"small\.qcow2 was begun as a full image; continue it "
                         "without --base")


def test_broken_chains_are_one_clear_line(history: History, tmp_path: Path) -> None:
    alone = tmp_path / "alone.qcow2"
    shutil.copyfile(history.generations[1].image, alone)
    for command in ("info", "verify", "ls"):
        assert_clean_failure(rescue(command, alone), ExitCode.USAGE,
                             r"alone\.qcow2: its backing file .*gen0\.qcow2 is missing")
    first, second = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", first, "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", second, "1M")
    assert_clean_failure(rescue("info", first), ExitCode.USAGE, r"a loop")


def test_a_base_rewritten_since_is_refused(history: History, tmp_path: Path) -> None:
    base, overlay = tmp_path / "old.qcow2", tmp_path / "new.qcow2"
    assert rescue("image", "sim:size=64M,seed=5", base).returncode == 0
    assert rescue("image", history.disk, overlay, "--base", base).returncode == 0
    for made in (base, tmp_path / "old.qcow2.map"):
        made.unlink()
    assert rescue("image", "sim:size=64M,seed=6", base).returncode == 0
    for command in (["info", overlay], ["image", history.disk, overlay, "--base", base]):
        assert_clean_failure(rescue(*command), ExitCode.USAGE,
                             r"old\.qcow2 changed since .*new\.qcow2 was made over it")


def test_reads_chains_qemu_made(tmp_path: Path) -> None:
    """QEMU's overlays store plain (uncompressed) clusters, zero clusters and discarded
    ones; ours may go on top of them."""
    base, over = tmp_path / "base.qcow2", tmp_path / "over.qcow2"
    assert rescue("image", "sim:size=16M,seed=7", base).returncode == 0
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", over)
    run("qemu-io", "-c", "write -P 0xab 1M 300k", "-c", "write -z 5M 128k",
        "-c", "discard 7M 64k", "-c", "write -P 0x5c 15M 1M", over)
    expected = tmp_path / "expected.raw"
    qemu_img("convert", "-O", "raw", over, expected)
    ours = tmp_path / "ours.img"
    done = rescue("convert", over, ours)
    assert done.returncode == 0, done.stderr
    cmp(ours, expected, 16 * MIB)
    source = tmp_path / "source.img"
    shutil.copyfile(expected, source)
    with open(source, "r+b") as f:
        f.seek(3 * MIB)
        f.write(b"\x77" * MIB)
    top = tmp_path / "top.qcow2"
    done = rescue("image", source, top, "--base", over)
    assert done.returncode == 0, done.stderr
    assert_check_clean(top)
    assert_same_disk(top, source)
    assert allocated_clusters(top) == MIB // 65536 + 1  # the changed MiB, and the manifest


def test_an_interrupted_base_run_resumes(tmp_path: Path) -> None:
    spec = "sim:size=32M,seed=9,rate=6M"
    base, overlay = tmp_path / "base.qcow2", tmp_path / "new.qcow2"
    assert rescue("image", "sim:size=32M,seed=8", base).returncode == 0
    process = rescue_process("image", spec, str(overlay), "--base", str(base),
                             "--checkpoint", "1")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _rescued(overlay):
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_check_clean(overlay)  # the last checkpoint, whole
    assert_clean_failure(rescue("image", spec, overlay), ExitCode.USAGE,
                         r"continue it with --base base\.qcow2")
    resumed = rescue("image", spec, overlay, "--base", base)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("will resume")
    reference = tmp_path / "reference.qcow2"
    assert rescue("image", spec, reference).returncode == 0
    assert_check_clean(overlay)
    done = subprocess.run(["qemu-img", "compare", str(overlay), str(reference)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rescue("verify", overlay).returncode == 0


def _rescued(image: Path) -> int:
    """The bytes the image's map records as rescued (a checkpoint saved them)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return sum(size for _, size, state in map_blocks(Path(f"{image}.map")) if state == "+")
    return 0


def test_used_mode_leaves_free_blocks_to_the_base(history: History, tmp_path: Path) -> None:
    """A file rewritten then deleted leaves new bytes in free blocks: a full run stores
    them, a used-blocks run does not, and the file system the chain holds is whole."""
    disk = tmp_path / "disk.raw"
    shutil.copyfile(history.disk, disk)
    change_files(disk, {"f30.bin": file_bytes("v4-30"), "f31.bin": file_bytes("v4-31")})
    with loop_device(str(disk)) as device, mounted_here(device) as mountpoint:
        (mountpoint / "f30.bin").unlink()
    base = history.generations[2].image
    full, used = tmp_path / "full.qcow2", tmp_path / "used.qcow2"
    image_disk(disk, full, "--base", str(base))
    image_disk(disk, used, "--base", str(base), "--mode", "used")
    # the freed MiB, less the two clusters at its ends that it may share with used blocks
    assert allocated_clusters(full) - allocated_clusters(used) >= MIB // 65536 - 2
    assert json.loads(qemu_img("info", "--output=json", used))["backing-filename"] == str(base)
    assert_check_clean(used)
    verified = rescue("verify", used)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    flat = tmp_path / "flat.img"
    assert rescue("convert", used, flat).returncode == 0
    run("e2fsck", "-fn", flat)
    done = rescue("extract", used, "/f31.bin", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "f31.bin").read_bytes() == file_bytes("v4-31")
    assert "f30.bin" not in rescue("ls", used, "/").stdout
