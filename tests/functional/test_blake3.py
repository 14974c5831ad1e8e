"""The BLAKE3 a manifest records is what `b3sum` computes from the image's logical bytes.

Real loop devices (mixed content with runs of zeros; a real ext4 for used-blocks images) are
imaged into every format; `b3sum` of the raw image, of `zstd -dc IMAGE.img.zst`, of the raw
file `qemu-img convert` makes of a qcow2 and of the restored disk is the judge. A changed byte
anywhere is caught. Images whose manifests hold only the digests older versions recorded (the
chunk fingerprint, a plain SHA-256) still verify, restore and convert, and their damage is still
caught.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rescue.errors import ExitCode
from rescue.sim.faulty import content
from tests.fixtures.cli import assert_clean_failure, b3sum, coreutils_fingerprint, rescue, run
from tests.fixtures.loop import loop_device
from tests.fixtures.restore import MIB, blank, fill_files, mounted_here, target

pytestmark = [pytest.mark.slow, pytest.mark.root]

SIZE = 40 * MIB + 512 * 3  # not a whole number of chunks
ZERO_RUNS = ((0, 4096), (3 * MIB + 512, 5 * MIB), (20 * MIB, 7 * MIB + 4096), (SIZE - MIB, MIB))


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A disk of text, random, patterned and zero blocks, with long runs of zeros that
    imaging stores as holes, and its bytes."""
    data = bytearray(content(0, SIZE, 9))
    for start, length in ZERO_RUNS:
        data[start:start + length] = bytes(length)
    path = tmp_path_factory.mktemp("blake3") / "mixed.disk"
    path.write_bytes(data)
    return path, bytes(data)


def manifest_of(image: Path) -> dict[str, Any]:
    done = rescue("info", str(image), "--json")
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads(done.stdout)["manifest"]
    return manifest


def b3sum_of_logical_bytes(image: Path, scratch: Path) -> str:
    """`b3sum` of the image's bytes as the peer tools decode them."""
    if image.name.endswith(".img.zst"):
        piped = subprocess.run(f"zstd -q -dc '{image}' | b3sum --no-names", shell=True,
                               capture_output=True, text=True, check=True)
        return piped.stdout.split()[0]
    if image.suffix == ".qcow2":
        raw = scratch / f"{image.name}.raw"
        run("qemu-img", "convert", "-O", "raw", str(image), str(raw))
        image = raw
    return run("b3sum", "--no-names", str(image)).split()[0]


def restore(image: Path, device: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return rescue("restore", str(image), device, "--yes", "--map-dir", str(folder / "maps"))


def b3sum_of_device(device: str, length: int) -> str:
    piped = subprocess.run(f"head -c {length} {device} | b3sum --no-names", shell=True,
                           capture_output=True, text=True, check=True)
    return piped.stdout.split()[0]


@pytest.mark.parametrize("suffix", ["img", "qcow2", "img.zst"])
def test_every_format_records_the_b3sum_of_its_bytes_and_restore_checks_it(
        disk: tuple[Path, bytes], tmp_path: Path, stack: ExitStack, suffix: str) -> None:
    path, data = disk
    image = tmp_path / f"out.{suffix}"
    with loop_device(str(path)) as device:
        done = rescue("image", device, str(image))
        assert done.returncode == 0, done.stderr
    manifest = manifest_of(image)
    assert manifest["blake3"] == b3sum_of_logical_bytes(image, tmp_path) == b3sum(data)
    assert "fingerprint" not in manifest and "sha256" not in manifest
    assert "BLAKE3 verified" in rescue("verify", str(image)).stdout

    device = target(stack, tmp_path, "t", SIZE, fill=b"\xa5old")
    restored = restore(image, device, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "BLAKE3 verified" in restored.stdout, restored.stdout
    assert b3sum_of_device(device, SIZE) == manifest["blake3"]


def test_a_used_blocks_image_records_the_b3sum_of_its_bytes(tmp_path: Path,
                                                            stack: ExitStack) -> None:
    """Unused blocks are holes: the digest is of the image (zeros there), not the disk."""
    backing = blank(tmp_path / "ext4.disk", 48 * MIB, fill=b"\x5aunused")
    with loop_device(str(backing)) as device:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", device)  # unused blocks keep their fill
        with mounted_here(device) as mountpoint:
            fill_files(mountpoint, 3)
        image = tmp_path / "used.qcow2"
        done = rescue("image", device, str(image), "--mode", "used")
        assert done.returncode == 0, done.stderr
    manifest = manifest_of(image)
    assert manifest["mode"] == "used"
    assert manifest["blake3"] == b3sum_of_logical_bytes(image, tmp_path)
    assert manifest["blake3"] != run("b3sum", "--no-names", str(backing)).split()[0]

    device = target(stack, tmp_path, "t", 48 * MIB)
    restored = restore(image, device, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "BLAKE3 verified" in restored.stdout, restored.stdout
    assert b3sum_of_device(device, 48 * MIB) == manifest["blake3"]


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_changed_byte_anywhere_in_a_raw_image_is_refused(
        disk: tuple[Path, bytes], tmp_path: Path, stack: ExitStack) -> None:
    """A raw image carries no checksums: its manifest's BLAKE3 alone catches a changed byte,
    in data or in a hole, at either end."""
    path, _ = disk
    image = tmp_path / "out.img"
    with loop_device(str(path)) as device:
        assert rescue("image", device, str(image)).returncode == 0
    for position in (0, 3 * MIB + 600, 11 * MIB + 12345, SIZE - 1):  # holes and data
        flip(image, position)
        said = rescue("verify", str(image))
        assert said.returncode == ExitCode.UNREADABLE, (position, said.stdout)
        assert "BLAKE3 differs from the manifest's" in said.stdout
        flip(image, position)
        assert rescue("verify", str(image)).returncode == 0

    flip(image, 11 * MIB + 12345)
    device = target(stack, tmp_path, "t", SIZE)
    checked = rescue("restore", str(image), device, "--yes", "--check-image")
    assert checked.returncode == ExitCode.UNREADABLE, checked.stdout + checked.stderr
    assert b3sum_of_device(device, SIZE) == b3sum(bytes(SIZE))  # nothing written
    restored = restore(image, device, tmp_path)
    assert restored.returncode == ExitCode.UNREADABLE, restored.stdout + restored.stderr
    assert "BLAKE3 differs" in restored.stdout + restored.stderr
    assert_clean_failure(rescue("convert", str(image), str(tmp_path / "c.qcow2")),
                         ExitCode.UNREADABLE, r"BLAKE3 differs from its manifest's")
    assert not (tmp_path / "c.qcow2").exists() and not (tmp_path / "c.qcow2.partial").exists()


OLD_DIGESTS = {"fingerprint": ("fingerprint", coreutils_fingerprint),
               "sha256": ("SHA-256", lambda data: hashlib.sha256(data).hexdigest())}


@pytest.mark.parametrize("field", OLD_DIGESTS)
def test_an_older_manifest_still_verifies_restores_and_converts(
        disk: tuple[Path, bytes], tmp_path: Path, stack: ExitStack, field: str) -> None:
    """An image whose manifest holds only a digest older versions recorded is checked against
    it; converting it checks it too, and the copy records BLAKE3 only."""
    _, data = disk
    name, compute = OLD_DIGESTS[field]
    image = tmp_path / "old.img"
    image.write_bytes(data)
    Path(f"{image}.manifest.json").write_text(json.dumps(
        {"version": 1, "source": {"path": "/dev/sdz", "size": SIZE}, "mode": "full",
         field: compute(data)}))
    assert rescue("verify", str(image)).stdout == f"{image}: intact ({name} verified)\n"
    device = target(stack, tmp_path, "t", SIZE)
    restored = restore(image, device, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert f"{name} verified" in restored.stdout, restored.stdout

    converted = tmp_path / "new.img.zst"
    done = rescue("convert", str(image), str(converted))
    assert done.returncode == 0, done.stderr
    manifest = manifest_of(converted)
    assert manifest["blake3"] == b3sum_of_logical_bytes(converted, tmp_path) == b3sum(data)
    assert field not in manifest

    flip(image, 20 * MIB + 77)  # inside a run of zeros
    said = rescue("verify", str(image))
    assert said.returncode == ExitCode.UNREADABLE
    assert f"{name} differs from the manifest's" in said.stdout
    restored = restore(image, target(stack, tmp_path, "u", SIZE), tmp_path)
    assert restored.returncode == ExitCode.UNREADABLE, restored.stdout + restored.stderr
    assert_clean_failure(rescue("convert", str(image), str(tmp_path / "c.qcow2")),
                         ExitCode.UNREADABLE, rf"{name} differs from its manifest's")
