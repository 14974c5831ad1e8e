"""A damaged image never restores or verifies as a success.

Seeded mutants of real images (ours in qcow2 and .img.zst, and qcow2s made by `qemu-img
convert`, of a disk holding real ext4 and vfat file systems) go through `rescue verify`,
`rescue restore --check-image` and `rescue restore` onto a real loop device. The judges are the
peer tools (`qemu-img check`, `qemu-img compare`, `zstd -t`, `zstd -d`) and the source disk: a
restore that succeeds must have written exactly the source disk, one that fails must list the
damaged ranges and have written the source everywhere else; `--check-image` writes nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from rescue.formats.zstseek import ZstSeekReader
from tests.fixtures.cli import rescue
from tests.fixtures.mutants import judge, mutants
from tests.fixtures.restore import MIB, digest, imaged_disk, target

pytestmark = [pytest.mark.slow, pytest.mark.root]

SIZE = 24 * MIB
LAYOUT = "label: gpt\n,10M,L\n,8M,L\n"
PER_REGION = 3  # flips per region of each layout, and as many truncations
RANGE = re.compile(r"damaged: bytes (0x[0-9a-f]+)-(0x[0-9a-f]+)")
UNPLACED = re.compile(r"damaged: (?!bytes)")  # damage no range locates (tables, size, digest)
NO_CHECKSUMS = "structure checked, no checksums"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our images of a real disk, and the qcow2s qemu-img makes of it (zlib and zstd)."""
    folder = tmp_path_factory.mktemp("integrity")
    made = imaged_disk(folder, "disk", SIZE, LAYOUT, 5, "qcow2", "img.zst")
    for name, options in (("qemu-zlib", []), ("qemu-zstd", ["-o", "compression_type=zstd"])):
        subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", *options, "-f", "raw",
                        str(made["disk"]), str(folder / f"{name}.qcow2")], check=True)
        made[name] = folder / f"{name}.qcow2"
    return made


def listed_ranges(output: str) -> list[tuple[int, int]]:
    return [(int(a, 16), int(b, 16) + 1) for a, b in RANGE.findall(output)]


def equal_outside(device: str, disk: Path, ranges: list[tuple[int, int]]) -> bool:
    """The device holds the disk's bytes everywhere outside `ranges`."""
    position = 0
    for start, end in [*sorted(ranges), (SIZE, SIZE)]:
        if start > position and digest(device, position, start - position) != digest(
                disk, position, start - position):
            return False
        position = max(position, end)
    return True


@pytest.mark.parametrize(("image", "kind", "seed"), [
    ("disk.qcow2", "qcow2", 11), ("disk.img.zst", "zst", 12), ("qemu-zlib", "qcow2", 13),
    ("qemu-zstd", "qcow2", 14)])
def test_no_damaged_mutant_passes(images: dict[str, Path], tmp_path: Path, stack: ExitStack,
                                  image: str, kind: str, seed: int) -> None:
    original, disk = images[image], images["disk"]
    device = target(stack, tmp_path, "t", SIZE)
    tally: Counter[str] = Counter()
    wrong: list[str] = []  # every false success, and every damage reported badly
    for number, mutant in enumerate(mutants(kind, original, PER_REGION, seed)):
        path = tmp_path / f"m{number}.{'img.zst' if kind == 'zst' else 'qcow2'}"
        path.write_bytes(mutant.data)
        damage = judge(kind, path, original, disk)
        tally["tried"] += 1
        tally["damaged"] += bool(damage)
        what = f"{mutant.name} ({', '.join(damage) or 'judged intact'})"

        verified = rescue("verify", str(path))
        tally["verify refused"] += verified.returncode != 0
        if unverifiable(damage, verified.stdout):
            tally["unverifiable, said so"] += 1
            damage = []  # no tool could tell without the original: judged as the image says
        elif damage and verified.returncode == 0:
            wrong.append(f"verify passed {what}: {verified.stdout.strip()}")

        before = digest(device)
        checked = rescue("restore", str(path), device, "--yes", "--check-image",
                         "--map-dir", str(tmp_path / f"c{number}"))
        tally["check-image refused"] += checked.returncode != 0
        wrong += restore_problems("restore --check-image", checked, device, disk, what, damage)
        if checked.returncode and digest(device) != before:
            wrong.append(f"--check-image wrote to the target: {what}")

        restored = rescue("restore", str(path), device, "--yes",
                          "--map-dir", str(tmp_path / f"r{number}"))
        tally["restore refused"] += restored.returncode != 0
        wrong += restore_problems("restore", restored, device, disk, what, damage)
        path.unlink()
        subprocess.run(["dd", "if=/dev/zero", f"of={device}", "bs=1M", f"count={SIZE // MIB}",
                        "status=none"],
                       check=True)
    print(f"{image}: {dict(tally)}")
    assert not wrong, "\n".join(wrong)
    # the peer tools see no damage in a seek table's checksums or a skippable frame's payload
    assert tally["damaged"] >= tally["tried"] // 3, "many mutants must really be damaged"


def unverifiable(damage: list[str], said: str) -> bool:
    """A qcow2 from another writer carries no checksums: a flip inside a compressed cluster
    that still decodes is found only by comparing with the source. rescue must say it could
    not check the content, and never call it verified."""
    return damage == ["qemu-img compare differs"] and NO_CHECKSUMS in said


def restore_problems(command: str, result: subprocess.CompletedProcess[str], device: str,
                     disk: Path, what: str, damage: list[str]) -> list[str]:
    """A restore that succeeded wrote the disk exactly (or, from an image without checksums,
    said so); one that found damage said so, with exit 1, never "verified", and wrote the disk
    outside the ranges it listed when it could place all the damage."""
    said = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        if digest(device) == digest(disk) or (not damage and NO_CHECKSUMS in said):
            return []
        return [f"{command} passed {what}: {said}"]
    if result.returncode != ExitCode.UNREADABLE:
        return []  # refused before writing (a truncated image, a damaged table)
    if "verified" in said or "Traceback" in said or "damaged" not in said:
        return [f"{command} reported {what} badly: {said}"]
    if command == "restore" and not UNPLACED.search(said) and not equal_outside(
            device, disk, listed_ranges(said)):
        return [f"{command}: outside the listed ranges the target is not the disk: {what}"]
    return []


def test_a_partition_restore_is_judged_by_its_own_bytes(
        images: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    """Damage in partition 2 fails its restore and leaves partition 1's intact; the image's
    fingerprint covers the whole image, so a partition's restore never claims it."""
    damaged = tmp_path / "damaged.img.zst"
    data = bytearray(images["disk.img.zst"].read_bytes())
    with ZstSeekReader(str(images["disk.img.zst"])) as reader:
        frame = next(f for f in reader.frames if f.offset == 11 * MIB)  # partition 2's start
    data[frame.compressed_offset + frame.compressed_size // 2] ^= 0xFF
    damaged.write_bytes(data)
    first = target(stack, tmp_path, "p1", 10 * MIB)
    second = target(stack, tmp_path, "p2", 8 * MIB)

    whole_first = rescue("restore", str(damaged), first, "-p", "1", "--yes")
    assert whole_first.returncode == 0, whole_first.stderr
    assert f"{first}: restored 10 MiB (image: checksums verified;" in whole_first.stdout
    assert digest(first) == digest(images["disk"], MIB, 10 * MIB)

    hit = rescue("restore", str(damaged), second, "-p", "2", "--yes")
    assert hit.returncode == ExitCode.UNREADABLE, hit.stderr
    assert f"damaged: bytes {11 * MIB:#x}-{12 * MIB - 1:#x}" in hit.stdout
    assert "verified" not in hit.stdout + hit.stderr
    assert digest(second, MIB) == digest(images["disk"], 12 * MIB, 7 * MIB)


@pytest.mark.parametrize("image", ["qemu-zlib", "qemu-zstd"])
def test_an_image_without_checksums_is_never_called_verified(
        images: dict[str, Path], tmp_path: Path, stack: ExitStack, image: str) -> None:
    """qemu-img's clusters carry no checksums: verify and restore say exactly what they could
    check, and the restored disk is still the source."""
    verified = rescue("verify", str(images[image]))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == f"{images[image]}: {NO_CHECKSUMS}\n"
    device = target(stack, tmp_path, "t", SIZE)
    restored = rescue("restore", str(images[image]), device, "--yes", "--check-image")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines()[-1] == (
        f"{device}: restored 24 MiB (image: {NO_CHECKSUMS}; read back as written)")
    assert digest(device) == digest(images["disk"])
