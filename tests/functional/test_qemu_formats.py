"""Disks only QEMU reads are read through QEMU: VMDK, VHDX, VDI, VHD and QED, and the qcow2
features our own reader refuses (extended L2, an external data file); a backing chain another
tool made is read by our own chain reader, and checked here alongside. Each is made by
qemu-img from a real ext4 disk (mkfs.ext4 -d with files), and every command that reads an
image gives back that disk: restore byte for byte onto a loop device, ls and extract its
files, info its format. No qemu-storage-daemon outlives a command.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import assert_clean_failure, rescue, run
from tests.fixtures.loop import loop_device

MIB = 1 << 20
DISK = 32 * MIB
# QEMU's driver, the options qemu-img makes it with, and the name info gives it
FOREIGN = {
    "vmdk": ("vmdk", [], "vmdk"),
    "vmdk-stream": ("vmdk", ["-o", "subformat=streamOptimized"], "vmdk"),
    "vhdx": ("vhdx", [], "vhdx"),
    "vdi": ("vdi", [], "vdi"),
    "vhd": ("vpc", ["-o", "force_size=on"], "vpc"),
    "qed": ("qed", [], "qed"),
    "qcow2-extended-l2": ("qcow2", ["-o", "extended_l2=on"], "qcow2"),
    "qcow2-data-file": ("qcow2", ["-o", "data_file={folder}/data.raw"], "qcow2"),
}


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ext4 disk holding files, made without mounting it."""
    folder = tmp_path_factory.mktemp("qemu-disk")
    files = folder / "files"
    (files / "docs").mkdir(parents=True)
    (files / "docs" / "notes.txt").write_text("kept through QEMU\n" * 500)
    (files / "random.bin").write_bytes(os.urandom(3 * MIB + 123))
    image = folder / "disk.img"
    run("mkfs.ext4", "-q", "-F", "-d", files, image, f"{DISK // 1024}k")
    return image


@pytest.fixture(scope="module")
def images(disk: Path) -> dict[str, Path]:
    made = {}
    for name, (driver, options, _) in FOREIGN.items():
        made[name] = disk.with_name(f"disk-{name}.{driver}")
        run("qemu-img", "convert", "-O", driver,
            *(option.format(folder=disk.parent) for option in options), disk, made[name])
    base = disk.with_name("base.qcow2")
    run("qemu-img", "convert", "-O", "qcow2", disk, base)
    made["qcow2-backing"] = disk.with_name("top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
        made["qcow2-backing"])
    return made


def daemons_for(image: Path) -> list[str]:
    """The qemu-storage-daemon processes that read `image`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-storage-daemon" in line and str(image) in line:
            found.append(pid)
    return found


NAMES = [*FOREIGN, "qcow2-backing"]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("name", NAMES)
def test_restore_from_a_disk_qemu_reads_is_byte_identical(
        tmp_path: Path, disk: Path, images: dict[str, Path], name: str) -> None:
    target = tmp_path / "target.img"
    target.write_bytes(b"\xa5" * DISK)
    with loop_device(str(target)) as device:
        done = rescue("restore", images[name], device, "--yes")
        assert done.returncode == 0, done.stderr
        with open(device, "rb") as f:
            assert f.read() == disk.read_bytes()
    assert "read back as written" in done.stdout
    assert not daemons_for(images[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_ls_extract_and_info_read_a_disk_qemu_reads(
        tmp_path: Path, disk: Path, images: dict[str, Path], name: str) -> None:
    listed = rescue("ls", images[name], "/")
    assert listed.returncode == 0, listed.stderr
    assert "random.bin" in listed.stdout and "docs" in listed.stdout
    done = rescue("extract", images[name], "/", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    files = disk.parent / "files"
    for path in ("random.bin", "docs/notes.txt"):
        assert (tmp_path / "out" / path).read_bytes() == (files / path).read_bytes()
    info = rescue("info", images[name])
    assert info.returncode == 0, info.stderr
    if name in FOREIGN:
        assert f"({FOREIGN[name][2]})" in info.stdout and "qemu-storage-daemon" in info.stdout
    else:  # QEMU's overlay, read through its chain by our own reader
        assert "(qcow2)" in info.stdout and "chain:" in info.stdout
    assert not daemons_for(images[name])


@pytest.mark.slow
def test_convert_makes_our_qcow2_of_a_vhdx(tmp_path: Path, disk: Path,
                                           images: dict[str, Path]) -> None:
    out = tmp_path / "out.qcow2"
    done = rescue("convert", images["vhdx"], out)
    assert done.returncode == 0, done.stderr
    raw = tmp_path / "back.img"
    run("qemu-img", "convert", "-O", "raw", out, raw)
    assert raw.read_bytes() == disk.read_bytes()


def test_a_damaged_foreign_disk_is_one_line_from_qemu(tmp_path: Path,
                                                      images: dict[str, Path]) -> None:
    """A VHDX whose headers were overwritten: QEMU's complaint becomes one rescue: line."""
    broken = tmp_path / "broken.vhdx"
    data = bytearray(images["vhdx"].read_bytes())
    data[64 * 1024:256 * 1024] = bytes(192 * 1024)  # both headers and the region tables
    broken.write_bytes(data)
    for command in ("info", "ls"):
        assert_clean_failure(rescue(command, broken), ExitCode.USAGE,
                             r"QEMU cannot open .*broken\.vhdx: ")
    assert not daemons_for(broken)


def test_qemu_missing_is_named(tmp_path: Path, images: dict[str, Path],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without qemu-storage-daemon on the PATH, the one line says what to install."""
    (tmp_path / "setpriv").symlink_to("/usr/bin/setpriv")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert_clean_failure(rescue("info", images["vdi"]), ExitCode.USAGE,
                         r"qemu-storage-daemon is not installed")


@pytest.mark.slow
@pytest.mark.root
def test_a_vmdk_restores_onto_a_larger_disk_with_its_partition_grown(
        tmp_path: Path, disk: Path) -> None:
    """The file system's own resizer reads the VMDK through QEMU's export, as a qcow2's."""
    whole = tmp_path / "whole.img"
    whole.write_bytes(bytes(DISK + 2 * MIB))
    run("sfdisk", "-q", "--label", "gpt", whole, stdin=f"start=2048, size={DISK // 512}, type=L\n")
    with open(whole, "r+b") as f:
        f.seek(MIB)
        f.write(disk.read_bytes())
    vmdk = tmp_path / "whole.vmdk"
    run("qemu-img", "convert", "-O", "vmdk", whole, vmdk)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(2 * DISK))
    with loop_device(str(target)) as device:
        done = rescue("restore", vmdk, device, "--yes", "--layout", "1=rest")
    assert done.returncode == 0, done.stderr
    listed = rescue("ls", target)
    assert listed.returncode == 0 and "ext4" in listed.stdout, listed.stderr
    grown = next(line for line in listed.stdout.splitlines() if "ext4" in line)
    assert "MiB" in grown and int(grown.split()[3]) > DISK // MIB, grown
    files = rescue("extract", target, "1:/random.bin", tmp_path / "out")
    assert files.returncode == 0, files.stderr
    assert (tmp_path / "out" / "random.bin").read_bytes() == (
        disk.parent / "files" / "random.bin").read_bytes()
    assert not daemons_for(vmdk)
