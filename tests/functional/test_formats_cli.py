"""Compressed images end to end: `rescue image` into qcow2 and .img.zst, and `rescue info`,
`verify` and `convert` on them, judged by qemu-img and zstd rather than by rescue itself."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rescue.errors import ExitCode
from rescue.formats.image import open_reader
from rescue.sim.faulty import content
from tests.fixtures.cli import (
    REPO_ROOT,
    assert_clean_failure,
    b3sum,
    coreutils_fingerprint,
    qemu_img_keyed,
    rescue,
    summary,
)
from tests.fixtures.faultdisk import SECTOR, faulty_device, make_backing
from tests.fixtures.image_disk import BAD, DISK_SIZE, IMAGE_DISK
from tests.fixtures.judges import map_blocks, sectors_of
from tests.fixtures.loop import loop_device

MIB = 1 << 20
HEALTHY_SIZE = 64 * MIB
FAULTY_SPEC = "sim:size=32M,seed=3,bad=3M+4k,bad=9M+64k,bad=20M+1536"
SLOW_FAULTY_SPEC = FAULTY_SPEC + ",rate=16M"  # same disk, about two seconds to read
FAULTY_BAD = [(3 * MIB, 4096), (9 * MIB, 64 * 1024), (20 * MIB, 1536)]


# ---- judges and helpers ----------------------------------------------------------------------


def tool(*args: str) -> str:
    """A peer tool that must succeed; its stdout."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def assert_qcow2_clean(image: Path) -> None:
    """`qemu-img check` finds no corruption and no leaked cluster (it exits 0 only then)."""
    done = subprocess.run(["qemu-img", "check", "--output=json", str(image)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["check-errors"] == 0
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report


def qemu_raw(image: Path, out: Path) -> bytes:
    """The logical bytes of a qcow2 image as qemu reads them."""
    tool("qemu-img", "convert", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def write_disk_content(path: Path, size: int, seed: int = 0) -> bytes:
    data = content(0, size, seed)
    path.write_bytes(data)
    return data


def info_json(image: Path) -> dict[str, Any]:
    done = rescue("info", str(image), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# (file offset, stored length, logical offset, logical length) of one compressed unit
Unit = tuple[int, int, int, int]


def qcow2_cluster(image: Path, guest_offset: int) -> Unit:
    """The compressed cluster holding `guest_offset`, found through the L1 and L2 tables as the
    qcow2 specification lays them out (qemu-img map does not show where compressed clusters
    live)."""
    with open(image, "rb") as f:
        header = f.read(48)
        cluster_bits = int.from_bytes(header[20:24], "big")
        l1_offset = int.from_bytes(header[40:48], "big")
        entries_per_l2 = (1 << cluster_bits) // 8
        index = guest_offset >> cluster_bits
        f.seek(l1_offset + 8 * (index // entries_per_l2))
        l2_offset = int.from_bytes(f.read(8), "big") & 0x00FF_FFFF_FFFF_FE00
        f.seek(l2_offset + 8 * (index % entries_per_l2))
        entry = int.from_bytes(f.read(8), "big")
    assert entry >> 62 & 1, f"cluster at {guest_offset:#x} is not compressed"
    offset_bits = 62 - (cluster_bits - 8)
    host = entry & ((1 << offset_bits) - 1)
    extra_sectors = (entry >> offset_bits) & ((1 << (cluster_bits - 8)) - 1)
    cluster = 1 << cluster_bits
    return host, (extra_sectors + 1) * SECTOR - host % SECTOR, index * cluster, cluster


def zst_frame(image: Path, logical_offset: int) -> Unit:
    """The frame holding `logical_offset`, found through the seek table as zstd's seekable
    format lays it out: entries of compressed and decompressed size (and a checksum when the
    footer's descriptor says so), then a 9-byte footer."""
    data = image.read_bytes()
    frames, descriptor = int.from_bytes(data[-9:-5], "little"), data[-5]
    assert int.from_bytes(data[-4:], "little") == 0x8F92EAB1, "no seekable footer"
    entry_size = 12 if descriptor & 0x80 else 8
    table = data[-9 - frames * entry_size:-9]
    at = logical = 0
    for index in range(frames):
        entry = table[index * entry_size:(index + 1) * entry_size]
        stored, length = int.from_bytes(entry[:4], "little"), int.from_bytes(entry[4:8], "little")
        if logical <= logical_offset < logical + length:
            return at, stored, logical, length
        at, logical = at + stored, logical + length
    raise AssertionError(f"no frame holds {logical_offset:#x}")


def assert_rescued_areas_match(image_bytes: bytes, mapfile: Path,
                               truth: Callable[[int, int], bytes]) -> None:
    """Finished areas hold the source's bytes; bad areas read as zeros. Areas still to do are
    not judged: data may reach the image before the map records it."""
    for pos, size, state in map_blocks(mapfile):
        if state not in "+-":
            continue
        expected = truth(pos, size) if state == "+" else bytes(size)
        assert image_bytes[pos:pos + size] == expected, f"{state} area at {pos:#x}+{size:#x}"


# ---- 1. a healthy source into qcow2 -----------------------------------------------------------


@pytest.fixture(scope="module")
def healthy_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("healthy") / "source.img"
    return path, write_disk_content(path, HEALTHY_SIZE, seed=1)


def image_healthy(source: Path, dest: Path) -> None:
    done = rescue("image", str(source), str(dest), "--json")
    assert done.returncode == 0, done.stderr
    final = summary(done)
    assert final["rescued"] == HEALTHY_SIZE
    assert (final["image"], final["format"]) == (str(dest), "qcow2")


@pytest.mark.parametrize("via", [
    "file", pytest.param("loop", marks=[pytest.mark.slow, pytest.mark.root])])
def test_healthy_source_into_qcow2_is_what_qemu_img_reads(
        tmp_path: Path, healthy_source: tuple[Path, bytes], via: str) -> None:
    source, data = healthy_source
    image = tmp_path / "out.qcow2"
    if via == "loop":
        with loop_device(str(source), read_only=True) as device:
            image_healthy(Path(device), image)
    else:
        image_healthy(source, image)

    assert_qcow2_clean(image)
    assert "identical" in tool("qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source),
                               str(image))
    info = json.loads(tool("qemu-img", "info", "--output=json", str(image)))
    assert info["virtual-size"] == HEALTHY_SIZE
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    assert info["actual-size"] < HEALTHY_SIZE // 2  # mixed content: text and zeros compress

    ours = tmp_path / "ours.img"
    converted = rescue("convert", str(image), str(ours))
    assert converted.returncode == 0, converted.stderr
    assert qemu_raw(image, tmp_path / "qemu.raw") == ours.read_bytes() == data
    manifest = info_json(image)["manifest"]
    assert manifest["blake3"] == b3sum(data)
    assert "fingerprint" not in manifest and "sha256" not in manifest  # new images: BLAKE3
    assert manifest["rescue"]["outcome"] == "rescued"


# ---- 2. a failing source into qcow2 -----------------------------------------------------------


def assert_manifest_summary(image: Path, bad: set[int], areas: int) -> None:
    """`rescue info` reports the rescue from the manifest inside the image, with no map
    beside it to fall back on."""
    for leftover in image.parent.glob(f"{image.name}.map*"):
        leftover.unlink()
    info = info_json(image)
    assert "mapfile" not in info
    recorded = info["manifest"]["rescue"]
    assert recorded["outcome"] == "unreadable"
    assert (recorded["bad"], recorded["bad_areas"]) == (len(bad) * SECTOR, areas)
    assert recorded["rescued"] == info["size"] - len(bad) * SECTOR
    assert recorded["non_tried"] == recorded["non_trimmed"] == recorded["non_scraped"] == 0


def test_simulated_failing_disk_into_qcow2(tmp_path: Path) -> None:
    image, mapfile = tmp_path / "out.qcow2", tmp_path / "out.qcow2.map"
    done = rescue("image", FAULTY_SPEC, str(image))
    assert done.returncode == ExitCode.UNREADABLE, done.stderr

    assert_qcow2_clean(image)
    logical = qemu_raw(image, tmp_path / "qemu.raw")
    assert len(logical) == 32 * MIB
    assert {s for pos, size, state in map_blocks(mapfile) if state == "-"
            for s in range(pos // SECTOR, (pos + size) // SECTOR)} == sectors_of(FAULTY_BAD)
    assert_rescued_areas_match(logical, mapfile, lambda pos, size: content(pos, size, 3))
    assert_manifest_summary(image, sectors_of(FAULTY_BAD), len(FAULTY_BAD))


@pytest.mark.slow
@pytest.mark.root
def test_real_failing_device_into_qcow2(tmp_path: Path) -> None:
    backing, image = tmp_path / "backing.img", tmp_path / "out.qcow2"
    make_backing(str(backing), DISK_SIZE, seed=13)
    with faulty_device(str(backing), IMAGE_DISK) as device:
        done = rescue("image", device, str(image))
    assert done.returncode == ExitCode.UNREADABLE, done.stderr

    assert_qcow2_clean(image)
    logical = qemu_raw(image, tmp_path / "qemu.raw")
    original = backing.read_bytes()
    assert_rescued_areas_match(logical, Path(f"{image}.map"),
                               lambda pos, size: original[pos:pos + size])
    assert_manifest_summary(image, sectors_of(BAD), len(BAD))


# ---- 3. .img.zst ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty_raw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The raw image of FAULTY_SPEC: what every other format must hold."""
    image = tmp_path_factory.mktemp("raw") / "out.img"
    done = rescue("image", FAULTY_SPEC, str(image))
    assert done.returncode == ExitCode.UNREADABLE, done.stderr
    return image.read_bytes()


def test_img_zst_decompresses_to_the_raw_image(tmp_path: Path, faulty_raw: bytes) -> None:
    image = tmp_path / "out.img.zst"
    done = rescue("image", FAULTY_SPEC, str(image))
    assert done.returncode == ExitCode.UNREADABLE, done.stderr
    assert not Path(f"{image}.partial.qcow2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        image.name, f"{image.name}.map", f"{image.name}.map.bak"]

    plain = tmp_path / "plain.img"
    tool("zstd", "-q", "-d", str(image), "-o", str(plain))
    assert plain.read_bytes() == faulty_raw
    assert image.stat().st_size < len(faulty_raw) // 2

    verified = rescue("verify", str(image), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout) == {
        "image": str(image), "damaged": [], "problems": [], "fingerprint_ok": True,
        "checked": ["structure", "checksums", "BLAKE3"]}
    assert "BLAKE3 verified" in rescue("verify", str(image)).stdout
    assert info_json(image)["manifest"]["blake3"] == b3sum(faulty_raw)

    rng = random.Random(7)
    ranges = [(0, 1), (len(faulty_raw) - 1, 1), (len(faulty_raw) - 5000, 5000)]
    ranges += [(pos, rng.randrange(1, min(3 * MIB, len(faulty_raw) - pos) + 1))
               for pos in (rng.randrange(len(faulty_raw)) for _ in range(40))]
    reader = open_reader(str(image))
    try:
        assert reader.size == len(faulty_raw)
        for pos, length in ranges:
            assert reader.read(pos, length) == faulty_raw[pos:pos + length], (pos, length)
    finally:
        reader.close()


# ---- 4. rescue convert ------------------------------------------------------------------------


def sparse_raw(path: Path) -> bytes:
    """48 MiB: 4 MiB of data, a 40 MiB hole, 4 MiB of data."""
    head, tail = content(0, 4 * MIB, 5), content(44 * MIB, 4 * MIB, 5)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(44 * MIB)
        f.write(tail)
    return head + bytes(40 * MIB) + tail


def convert(source: Path, dest: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return rescue("convert", str(source), str(dest), *options)


def test_convert_round_trip_keeps_bytes_and_holes(tmp_path: Path) -> None:
    raw = tmp_path / "start.img"
    data = sparse_raw(raw)
    qcow2, zst, back = tmp_path / "a.qcow2", tmp_path / "b.img.zst", tmp_path / "c.img"
    for source, dest in ((raw, qcow2), (qcow2, zst), (zst, back)):
        done = convert(source, dest, "--json")
        assert done.returncode == 0, done.stderr
        assert summary(done)["blake3"] == b3sum(data)
        formats = {".img": "raw", ".qcow2": "qcow2", ".zst": "zst"}
        assert (summary(done)["source_format"], summary(done)["format"]) == \
            (formats[source.suffix], formats[dest.suffix])

    assert back.read_bytes() == data
    assert back.stat().st_blocks * 512 < 12 * MIB  # the hole came back as a hole
    assert_qcow2_clean(qcow2)
    assert "identical" in tool("qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw),
                               str(qcow2))
    mapped = json.loads(tool("qemu-img", "map", "--output=json", str(qcow2)))
    assert sum(e["length"] for e in mapped if e["data"]) <= 8 * MIB
    assert zst.stat().st_size < 9 * MIB
    tool("zstd", "-q", "-d", str(zst), "-o", str(tmp_path / "zstd.img"))
    assert (tmp_path / "zstd.img").read_bytes() == data


@pytest.mark.parametrize("options", [
    ["-c"], ["-c", "-o", "compression_type=zstd"], [], ["-o", "compat=0.10"],
    ["-c", "-o", "cluster_size=4096"]], ids=["zlib", "zstd", "plain", "v2", "4k-clusters"])
def test_convert_reads_qcow2_that_qemu_img_wrote(
        tmp_path: Path, healthy_source: tuple[Path, bytes], options: list[str]) -> None:
    source, data = healthy_source
    theirs, ours = tmp_path / "qemu.qcow2", tmp_path / "ours.img"
    tool("qemu-img", "convert", "-O", "qcow2", *options, str(source), str(theirs))
    done = convert(theirs, ours)
    assert done.returncode == 0, done.stderr
    assert ours.read_bytes() == data


def test_convert_refuses_an_existing_dest_without_force(tmp_path: Path) -> None:
    raw = tmp_path / "start.img"
    data = sparse_raw(raw)
    dest = tmp_path / "taken.qcow2"
    dest.write_bytes(b"keep me")
    assert_clean_failure(convert(raw, dest), ExitCode.USAGE, r"taken\.qcow2.*--force")
    assert dest.read_bytes() == b"keep me"

    forced = convert(raw, dest, "--force")
    assert forced.returncode == 0, forced.stderr
    assert qemu_raw(dest, tmp_path / "check.raw") == data


def test_convert_refuses_to_write_its_own_source(tmp_path: Path) -> None:
    raw = tmp_path / "start.img"
    data = sparse_raw(raw)
    alias = tmp_path / "alias.img"
    alias.symlink_to(raw)
    for dest in (raw, alias):
        assert_clean_failure(convert(raw, dest, "--force"), ExitCode.REFUSED, "being read")
    assert raw.read_bytes() == data


# ---- 5. kill -9 while imaging into qcow2 ------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_qcow2_rescue_then_resume(tmp_path: Path) -> None:
    reference = tmp_path / "reference.qcow2"
    assert rescue("image", FAULTY_SPEC, str(reference)).returncode == ExitCode.UNREADABLE

    image, mapfile = tmp_path / "out.qcow2", tmp_path / "out.qcow2.map"
    command = ["image", SLOW_FAULTY_SPEC, str(image), "--checkpoint", "0.2", "--json"]
    process = subprocess.Popen([sys.executable, "-m", "rescue", *command], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["type"] == "progress" and first["rescued"] < 32 * MIB, first
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert {state for _, _, state in map_blocks(mapfile)} - {"+", "-"}, "nothing left to do"
    killed = subprocess.run(["qemu-img", "check", "--output=json", str(image)],
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode in (0, 3), killed.stdout + killed.stderr  # 3: leaked clusters only
    assert json.loads(killed.stdout).get("corruptions", 0) == 0
    assert_rescued_areas_match(qemu_raw(image, tmp_path / "killed.raw"), mapfile,
                               lambda pos, size: content(pos, size, 3))

    again = rescue(*command)
    assert again.returncode == ExitCode.UNREADABLE, again.stderr
    assert_qcow2_clean(image)
    assert "identical" in tool("qemu-img", "compare", str(reference), str(image))
    assert map_blocks(mapfile) == map_blocks(Path(f"{reference}.map"))


# ---- 6. bad input: one clear line, never a traceback ------------------------------------------


@pytest.fixture(scope="module")
def small_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("small") / "small.qcow2"
    done = rescue("image", "sim:size=8M,seed=2", str(image))
    assert done.returncode == 0, done.stderr
    return image


def truncated_qcow2(workdir: Path, small: Path) -> Path:
    cut = workdir / "cut.qcow2"
    cut.write_bytes(small.read_bytes()[:small.stat().st_size // 2])
    return cut


def backed_qcow2(workdir: Path, small: Path) -> Path:
    """An overlay whose backing file is gone: a chain that cannot be read."""
    top, gone = workdir / "top.qcow2", workdir / "gone.qcow2"
    gone.write_bytes(small.read_bytes())
    tool("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(gone), "-F", "qcow2", str(top))
    gone.unlink()
    return top


def encrypted_qcow2(workdir: Path, encryption: str) -> Path:
    """A qcow2 that qemu-img encrypts."""
    locked = workdir / f"locked-{encryption}.qcow2"
    options = f"encrypt.format={encryption},encrypt.key-secret=sec0"
    if encryption == "luks":
        options += ",encrypt.iter-time=10"  # a fast key setup is enough to be refused
    qemu_img_keyed("create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=abc",
                   "-o", options, str(locked), "8M")
    return locked


def qemu_qcow2(path: Path, options: str) -> Path:
    tool("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, str(path), "8M")
    return path


def plain_zstd(workdir: Path) -> Path:
    raw, packed = workdir / "plain.img", workdir / "plain.img.zst"
    write_disk_content(raw, 2 * MIB)
    tool("zstd", "-q", str(raw), "-o", str(packed))
    return packed


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, small_qcow2: Path
               ) -> dict[str, Path]:
    """Each kind of bad input, made once."""
    workdir = tmp_path_factory.mktemp("bad")
    return {
        "truncated": truncated_qcow2(workdir, small_qcow2),
        "backing-file": backed_qcow2(workdir, small_qcow2),
        "encrypted-aes": encrypted_qcow2(workdir, "aes"),
        "encrypted-luks": encrypted_qcow2(workdir, "luks"),
        "plain-zstd": plain_zstd(workdir),
        "extended-l2": qemu_qcow2(workdir / "ext.qcow2", "extended_l2=on"),
        "data-file": qemu_qcow2(workdir / "df.qcow2", f"data_file={workdir / 'df.raw'}"),
        "missing": workdir / "no-such.qcow2",
        "directory": workdir,
    }


BAD_INPUT_MESSAGES = {
    "truncated": r"truncated qcow2",
    "backing-file": r"backing file",
    "encrypted-aes": r"encrypted",
    "encrypted-luks": r"encrypted",
    "plain-zstd": r"without a seek table",
    "missing": r"no-such\.qcow2.*No such file",
    "directory": r"is a directory",
}


@pytest.mark.parametrize("name", list(BAD_INPUT_MESSAGES))
@pytest.mark.parametrize("command", ["info", "verify", "convert"])
def test_bad_input_is_one_clear_line(tmp_path: Path, bad_inputs: dict[str, Path],
                                     name: str, command: str) -> None:
    bad = bad_inputs[name]
    dest = tmp_path / "out.img"
    args = [command, str(bad)] + ([str(dest)] if command == "convert" else [])
    assert_clean_failure(rescue(*args), ExitCode.USAGE, BAD_INPUT_MESSAGES[name])
    assert not dest.exists()


@pytest.mark.parametrize("name", ["extended-l2", "data-file"])
def test_qcow2_features_our_reader_refuses_are_read_by_qemu(
        bad_inputs: dict[str, Path], name: str) -> None:
    """Subclusters or an external data file: QEMU reads them for us (a backing chain our
    own reader reads: tests/functional/test_incremental.py)."""
    image = bad_inputs[name]
    done = rescue("info", str(image))
    assert done.returncode == 0 and "qemu-storage-daemon" in done.stdout, done.stderr


@pytest.fixture(scope="module")
def small_zst(tmp_path_factory: pytest.TempPathFactory, small_qcow2: Path) -> Path:
    image = tmp_path_factory.mktemp("small-zst") / "small.img.zst"
    done = rescue("convert", str(small_qcow2), str(image))
    assert done.returncode == 0, done.stderr
    return image


@pytest.mark.parametrize("fmt", ["qcow2", "zst"])
def test_verify_names_the_range_whose_stored_bytes_flipped(
        tmp_path: Path, small_qcow2: Path, small_zst: Path, fmt: str) -> None:
    intact, locate = (small_qcow2, qcow2_cluster) if fmt == "qcow2" else (small_zst, zst_frame)
    image = tmp_path / f"flipped.{fmt}"
    image.write_bytes(intact.read_bytes())
    # seed 2 fills the second MiB with random bytes: a big compressed unit to hit
    host, stored, start, length = locate(image, MIB + 64 * 1024)
    assert stored > 1024
    with open(image, "r+b") as f:
        f.seek(host + stored // 2)
        middle = f.read(8)
        f.seek(host + stored // 2)
        f.write(bytes(b ^ 0xFF for b in middle))

    checked = rescue("verify", str(image), "--json")
    assert checked.returncode == ExitCode.UNREADABLE, checked.stderr
    assert json.loads(checked.stdout)["damaged"] == [[start, length]]
    said = rescue("verify", str(image))
    assert said.returncode == ExitCode.UNREADABLE
    assert f"damaged: bytes {start:#x}-{start + length - 1:#x}" in said.stdout
    assert "Traceback" not in checked.stderr + said.stderr
    assert rescue("verify", str(intact)).returncode == 0


# each digest a manifest may hold, its name in a verdict, and how a standard tool computes it
DIGESTS = {"blake3": ("BLAKE3", b3sum), "fingerprint": ("fingerprint", coreutils_fingerprint),
           "sha256": ("SHA-256", lambda data: hashlib.sha256(data).hexdigest())}


@pytest.mark.parametrize("field", DIGESTS)
def test_verify_checks_a_raw_image_against_its_manifest(tmp_path: Path, field: str) -> None:
    """Raw images have no checksums of their own: the manifest's BLAKE3 (or the chunk
    fingerprint or plain SHA-256 that older images recorded) is what catches a changed byte."""
    image = tmp_path / "disk.img"
    data = content(0, 3 * MIB + 512, 4)
    image.write_bytes(data)
    whole, compute = DIGESTS[field]
    Path(f"{image}.manifest.json").write_text(json.dumps(
        {"version": 1, "source": {"path": "/dev/sdz"}, field: compute(data)}))
    intact = rescue("verify", str(image))
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout == f"{image}: intact ({whole} verified)\n"

    with open(image, "r+b") as f:
        f.seek(2 * MIB + 7)
        f.write(b"\xff")
    checked = rescue("verify", str(image), "--json")
    assert checked.returncode == ExitCode.UNREADABLE, checked.stderr
    assert json.loads(checked.stdout)["fingerprint_ok"] is False
    assert "differs from the manifest's" in rescue("verify", str(image)).stdout


@pytest.mark.slow
def test_convert_onto_a_disk_leaves_none_of_its_old_bytes(tmp_path: Path) -> None:
    """An image's holes read as zeros, so on a disk they must become zeros: a converted disk
    reads exactly as the image, whatever the disk held before."""
    raw = tmp_path / "start.img"
    data = sparse_raw(raw)
    qcow2 = tmp_path / "image.qcow2"
    assert convert(raw, qcow2).returncode == 0
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\xa5" * len(data))  # what the disk held before
    with loop_device(str(backing)) as device:
        done = convert(qcow2, Path(device), "--force")
        assert done.returncode == 0, done.stderr
        with open(device, "rb") as disk:
            assert disk.read() == data
