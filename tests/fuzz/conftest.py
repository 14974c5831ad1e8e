"""Base files for the fuzz suite, made once per session by the real tools: file systems by
their mkfs and drivers, partition tables by sfdisk, images by `rescue image` and
`qemu-img convert`, mapfiles by `rescue image` and GNU ddrescue."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.fixtures.cli import rescue, run
from tests.fixtures.fuzz import FS_KINDS, Bases
from tests.fixtures.loop import loop_device

MIB = 1 << 20
FS_SIZE = 4 * MIB
GPT_LAYOUT = "label: gpt\nlabel-id: 5E5C0E00-0000-4000-8000-00000000F022\n" + "".join(
    f"start={2048 + i * 8192}, size=8192, type=L\n" for i in range(len(FS_KINDS)))
DOS_LAYOUT = ("label: dos\nlabel-id: 0x5e5c0e00\nstart=2048,size=8192,type=c\n"
              "start=10240,size=14336,type=5\nstart=12288,size=8192,type=83\n"
              "start=22528,size=2048,type=83\n")
MAP_SOURCE = "sim:size=1M,bad=256k+4k,bad=600k+64k,slow=800k+8k@0"


def _tree(root: Path) -> None:
    """A few folders and files, one of them spanning many clusters, with fixed contents."""
    rng = random.Random(2026)
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "readme.txt").write_bytes(b"hello\n")
    (root / "docs" / "big.bin").write_bytes(rng.randbytes(300_000))
    (root / "docs" / "Grüße.txt").write_text("Grüße\n")
    for index in range(40):  # a directory longer than one block
        (root / "docs" / "deep" / f"file-{index:02}-with-a-long-name.txt").write_text(
            f"{index}\n" * index)


def _make_filesystem(kind: str, tree: Path, image: Path) -> None:
    with open(image, "wb") as f:
        f.truncate(FS_SIZE)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000", "TZ": "UTC"}
    if kind in ("ext4", "ext2"):  # ext2: block maps with indirect blocks, no checksums
        run(f"mkfs.{kind}", "-q", "-F", "-b", "1024", "-U",
             "5e5c0e00-0000-4000-8000-000000000e04", "-E",
             "hash_seed=5e5c0e00-0000-4000-8000-000000000e05", "-d", tree, image, env=env)
    elif kind == "vfat":
        run("mkfs.vfat", "-F", "16", "-s", "1", "-i", "5e5c0e00", "--invariant", image)
        run("mcopy", "-s", "-m", "-i", image, *sorted(tree.iterdir()), "::/", env=env)
    elif kind == "ntfs":
        run("mkntfs", "-q", "-F", "-f", "-T", image)
        mountpoint = image.with_suffix(".mnt")
        mountpoint.mkdir()
        run("ntfs-3g", image, mountpoint)
        try:
            run("cp", "-r", f"{tree}/.", mountpoint)
        finally:
            run("umount", mountpoint)
    else:  # exfat-fuse mounts block devices only
        run("mkfs.exfat", image)
        mountpoint = image.with_suffix(".mnt")
        mountpoint.mkdir()
        with loop_device(str(image)) as device:
            run("mount.exfat-fuse", device, mountpoint)
            try:
                run("cp", "-r", f"{tree}/.", mountpoint)
            finally:
                run("umount", mountpoint)


def _make_disk(path: Path, size: int, layout: str, parts: list[tuple[int, Path]]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    run("sfdisk", "-q", path, stdin=layout)
    with open(path, "r+b") as f:
        for sector, filesystem in parts:
            f.seek(sector * 512)
            f.write(filesystem.read_bytes())
    return path


def _image(source: Path, dest: Path) -> Path:
    result = rescue("image", str(source), str(dest))
    assert result.returncode in (0, 1), result.stderr
    return dest


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in
                                    ("qemu-img", "zstd", "ddrescue", "mkntfs", "mkfs.exfat")):
        pytest.skip("the fuzz bases need root and the peer tools (tests/setup-machine.sh)")
    folder = tmp_path_factory.mktemp("fuzz-bases")
    tree = folder / "tree"
    _tree(tree)
    filesystems = {}
    for kind in (*FS_KINDS, "ext2"):
        filesystems[kind] = folder / f"{kind}.fs"
        _make_filesystem(kind, tree, filesystems[kind])
    gpt = _make_disk(folder / "gpt-disk.img", 18 * MIB, GPT_LAYOUT,
                     [(2048 + i * 8192, filesystems[k]) for i, k in enumerate(FS_KINDS)])
    dos = _make_disk(folder / "dos-disk.img", 13 * MIB, DOS_LAYOUT,
                     [(2048, filesystems["vfat"]), (12288, filesystems["ext4"])])
    images = {"qcow2": _image(gpt, folder / "base.qcow2"),
              "zst": _image(gpt, folder / "base.img.zst"),
              "img": _image(gpt, folder / "base.img"),
              "qemu-qcow2": folder / "qemu.qcow2"}
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", gpt, images["qemu-qcow2"])
    map_source = folder / "map-source.img"
    map_source.write_bytes(random.Random(7).randbytes(MIB))
    ours = folder / "ours.map"
    imaged = rescue("image", MAP_SOURCE, str(folder / "ours-dest.img"), "--map", str(ours))
    assert imaged.returncode == 1, imaged.stderr
    theirs = folder / "ddrescue.map"
    run("ddrescue", "-q", "-s", "640Ki", "-i", "128Ki", map_source, folder / "ddrescue-dest",
         theirs)
    return Bases(folder, filesystems, gpt, dos, images, {"ours": ours, "ddrescue": theirs},
                 map_source)
