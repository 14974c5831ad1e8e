"""`rescue mount` serves each partition's files itself: a disk with ext4, FAT, exFAT and NTFS
partitions, mounted by a user without root, shows every file with the content, names, sizes,
times and modes its file system holds; nothing can be written; and a file over sectors the
image lacks fails to read exactly where they are, never as zeros."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.errors import UsageError
from rescue.explore.mount import (
    is_our_mount,
    loops_backed_by,
    mounts_below,
    server_pids,
    unmount_image,
)
from tests.fixtures.cli import rescue, run
from tests.fixtures.disks import mounted
from tests.fixtures.explore import (
    HOSTILE_NODES,
    POSIX_MODES,
    SETUID_PROGRAM,
    TIME_RESOLUTION_NS,
    make_filesystem,
    make_gpt_disk,
    make_tree,
    make_untrusted_filesystem,
    tree_records,
)
from tests.fixtures.faultdisk import faulty_device
from tests.fixtures.loop import loop_device
from tests.fixtures.users import USER

pytestmark = [pytest.mark.slow, pytest.mark.root]

KINDS = ("ext4", "vfat", "exfat", "ntfs")  # partitions 1, 2, 3, 4
BIG = "big/over-a-mebibyte.bin"
BIG_SIZE = (3 << 20) + 12_345
# Reads at odd places of the big file: (offset, length), across block and page edges.
ODD_READS = ((0, 1), (1, 4095), (4095, 2), (65_537, 131_071), ((1 << 20) - 3, 7),
             (BIG_SIZE - 5, 5), (BIG_SIZE - 5, 100), (BIG_SIZE, 10))
Records = dict[str, list[object]]
# Each file system's own driver, read-only; FAT has none in this kernel: mtools reads it.
OWN_DRIVERS = {"ext4": ("mount", "-o", "ro,noload"), "ntfs": ("ntfs-3g", "-o", "ro"),
               "exfat": ("mount.exfat-fuse", "-o", "ro")}
FourKinds = tuple[Path, dict[str, Path], dict[str, Records]]
# Run as USER inside the mount: every entry's record (as tree_records gives it, plus owner
# and link count), the odd reads of the big file, and what writing gets.
INSPECT = """
import errno, hashlib, json, os, sys
from pathlib import Path
from tests.fixtures.explore import tree_records
root, reads = Path(sys.argv[1]), json.loads(sys.argv[2])
out = {"records": tree_records(root), "owners": {}, "reads": {}, "writes": []}
for path in root.rglob("*"):
    info = path.lstat()
    out["owners"][str(path.relative_to(root))] = [info.st_uid, info.st_nlink]
big = os.open(root / sys.argv[3], os.O_RDONLY)
for offset, length in reads:
    out["reads"][f"{offset}+{length}"] = hashlib.sha256(os.pread(big, length, offset)).hexdigest()
for attempt in (lambda: open(root / "new", "w"), lambda: os.mkdir(root / "new-dir"),
                lambda: os.chmod(root / "readme.txt", 0o777),
                lambda: open(root / "readme.txt", "r+b"), lambda: os.unlink(root / "readme.txt")):
    try:
        attempt()
        out["writes"].append(0)
    except OSError as error:
        out["writes"].append(error.errno)
vfs = os.statvfs(root)
out["statvfs"] = [vfs.f_bsize, vfs.f_blocks, vfs.f_bfree, vfs.f_namemax]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_kinds_disk(shared_dir: Path) -> FourKinds:
    """A GPT disk with KINDS as its partitions, each filled by its own driver with a tree of
    nested folders, non-ASCII names and a file over a mebibyte (ext4 also with a symlink);
    with each tree and what each file system's own driver shows of it."""
    trees, parts, judged = {}, [], {}
    for kind in KINDS:
        tree = shared_dir / f"tree-{kind}"
        tree.mkdir()
        make_tree(tree, symlinks=kind == "ext4")
        (tree / "big").mkdir()
        (tree / BIG).write_bytes(os.urandom(BIG_SIZE))
        os.utime(tree / BIG, ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
        os.utime(tree / "big", ns=(1_400_000_002_000_000_000, 1_400_000_002_000_000_000))
        part = shared_dir / f"{kind}.fs"
        make_filesystem(kind, tree, part)
        judged[kind] = own_driver_records(kind, part)
        trees[kind] = tree
        parts.append(part)
    disk = shared_dir / "four.img"
    make_gpt_disk(parts, disk)
    for part in parts:
        part.unlink()
    disk.chmod(0o644)
    return disk, trees, judged


def own_driver_records(kind: str, part: Path) -> Records:
    """Every entry's (kind, mtime, sha256 or target) as the file system's own driver shows
    it (its modes are its own invention on FAT, exFAT and NTFS)."""
    if kind == "vfat":
        copy = part.with_suffix(".mtools")
        copy.mkdir()
        run("mcopy", "-s", "-p", "-m", "-i", part, "::/*", copy, env={"TZ": "UTC"})
        shown = tree_records(copy)
        shutil.rmtree(copy)
    else:
        with loop_device(str(part), read_only=True) as device, \
                mounted(device, part.with_suffix(".own"), OWN_DRIVERS[kind]) as mountpoint:
            shown = tree_records(mountpoint)
    shown.pop("lost+found", None)
    return {path: [entry_kind, mtime, content]
            for path, (entry_kind, _mode, mtime, content) in shown.items()}


def expected(kind: str, source: Path, uid: int) -> tuple[dict[str, list[object]],
                                                           dict[str, list[int]]]:
    """What the mount must show of `source` in a `kind` file system: its records at that
    file system's time resolution (modes 0755/0644 where it keeps none), and each entry's
    owner (as stored, or the mounting user where none is kept) and link count."""
    resolution = TIME_RESOLUTION_NS[kind]
    records, owners = {}, {}
    for path, (entry_kind, mode, mtime, content) in tree_records(source).items():
        if kind not in POSIX_MODES and entry_kind != "symlink":
            mode = 0o755 if entry_kind == "dir" else 0o644
        records[path] = [entry_kind, mode, mtime - mtime % resolution, content]
        links = (source / path).lstat().st_nlink if kind in POSIX_MODES else 1
        owners[path] = [0 if kind in POSIX_MODES else uid, links]
    return records, owners


@contextlib.contextmanager
def mounted_by(user_python: list[str], image: Path, directory: Path,
               *options: str) -> Iterator[dict[str, object]]:
    """`rescue mount` run by USER; yields its --json answer and unmounts (as USER) after."""
    directory.mkdir()
    shutil.chown(directory, USER)
    done = subprocess.run([*user_python, "-m", "rescue", "mount", str(image), str(directory),
                           "--json", *options], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    try:
        yield json.loads(done.stdout)
    finally:
        undone = subprocess.run([*user_python, "-m", "rescue", "umount", str(directory)],
                                capture_output=True, text=True, cwd="/")
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))
        assert undone.returncode == 0, undone.stderr


def test_a_user_without_root_reads_every_file_of_four_file_systems(
        four_kinds_disk: FourKinds, user_python: list[str],
        shared_dir: Path) -> None:
    disk, trees, judged = four_kinds_disk
    directory = shared_dir / "mnt"
    uid = int(run("id", "-u", USER))
    with mounted_by(user_python, disk, directory) as shown:
        assert [(p["partition"], p["fstype"], p["via"], p["loop"]) for p in shown["partitions"]
                ] == [(n, kind, "fuse", None) for n, kind in enumerate(KINDS, start=1)]
        assert is_our_mount(str(directory))
        with pytest.raises(PermissionError):  # the owner only: not even root gets in
            os.listdir(directory)
        for number, kind in enumerate(KINDS, start=1):
            source = trees[kind]
            inspected = subprocess.run(
                [*user_python, "-c", INSPECT, str(directory / f"p{number}"),
                 json.dumps(ODD_READS), BIG], capture_output=True, text=True, cwd="/")
            assert inspected.returncode == 0, inspected.stderr
            got = json.loads(inspected.stdout)
            records, owners = expected(kind, source, uid)
            if kind == "ext4":
                for name in ("records", "owners"):
                    got[name].pop("lost+found")
            assert got["records"] == records, kind
            assert {path: [entry_kind, mtime, content] for path, (entry_kind, _mode, mtime, content)
                    in got["records"].items()} == judged[kind], kind
            assert got["owners"] == owners, kind
            content = (source / BIG).read_bytes()
            assert got["reads"] == {
                f"{offset}+{length}": hashlib.sha256(
                    content[offset:offset + length]).hexdigest() for offset, length in ODD_READS}
            assert got["writes"] == [errno.EROFS] * 5, kind
            block, blocks, free, namemax = got["statvfs"]
            assert block * blocks == 64 << 20 and free == 0 and namemax == 255, kind
    assert not is_our_mount(str(directory)) and server_pids(str(directory)) == []


def test_kernel_mounts_need_root(four_kinds_disk: FourKinds,
                                 user_python: list[str], shared_dir: Path) -> None:
    directory = shared_dir / "kernel-mnt"
    directory.mkdir()
    shutil.chown(directory, USER)
    refused = subprocess.run([*user_python, "-m", "rescue", "mount", str(four_kinds_disk[0]),
                              str(directory), "--kernel"], capture_output=True, text=True,
                             cwd="/")
    assert refused.returncode == 2
    assert refused.stderr.startswith("rescue: --kernel") and "Traceback" not in refused.stderr
    assert not is_our_mount(str(directory))


def test_other_users_get_in_only_as_the_stored_modes_let_them(
        four_kinds_disk: FourKinds, user_python: list[str],
        shared_dir: Path) -> None:
    """With --allow-other the kernel checks the stored owners and modes, as for a kernel
    mount: USER reads a file open to all, not root's 0640 one."""
    disk, trees, _ = four_kinds_disk
    directory = shared_dir / "shared-mnt"
    directory.mkdir()
    try:
        result = rescue("mount", disk, directory, "--allow-other")
        assert result.returncode == 0, result.stderr
        ext4 = directory / "p1"
        assert stat.S_IMODE((ext4 / "readme.txt").stat().st_mode) == 0o640
        assert stat.S_IMODE((ext4 / "docs/deep/notes.txt").stat().st_mode) == 0o444
        probe = [*user_python[:4], "cat"]
        denied = subprocess.run([*probe, ext4 / "readme.txt"], capture_output=True, text=True)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        allowed = subprocess.run([*probe, ext4 / "docs/deep/notes.txt"], capture_output=True)
        assert allowed.stdout == (trees["ext4"] / "docs/deep/notes.txt").read_bytes()
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))


def test_an_untrusted_image_served_gives_nobody_a_program_or_a_device(
        shared_dir: Path) -> None:
    """The file view of partitions holding a set-user-ID root program and 0666 device nodes:
    the program cannot run and no node opens, for USER or root."""
    parts = [shared_dir / f"untrusted-{kind}.fs" for kind in KINDS]
    for kind, part in zip(KINDS, parts, strict=True):
        make_untrusted_filesystem(kind, part)
    disk = shared_dir / "untrusted.img"
    make_gpt_disk(parts, disk)
    directory = shared_dir / "untrusted-mnt"
    directory.mkdir()
    try:
        result = rescue("mount", disk, directory, "--allow-other")
        assert result.returncode == 0, result.stderr
        user = ["setpriv", f"--reuid={USER}", "--regid=nogroup", "--clear-groups"]
        nodes = 0
        for number, kind in enumerate(KINDS, start=1):
            program = directory / f"p{number}" / SETUID_PROGRAM
            assert program.read_bytes() == Path("/usr/bin/id").read_bytes(), kind
            for runner in ([], user):
                ran = subprocess.run([*runner, "env", program], capture_output=True, text=True)
                assert ran.returncode != 0 and "euid=0" not in ran.stdout, (kind, ran)
            for name, (node_kind, _major, _minor) in HOSTILE_NODES.items():
                node = directory / f"p{number}" / name
                if not os.path.lexists(node):
                    continue
                mode = node.lstat().st_mode
                nodes += 1  # ext4's, and NTFS's Interix ones, shown as the nodes they are
                assert (stat.S_ISCHR if node_kind == "c" else stat.S_ISBLK)(mode)
                with pytest.raises(PermissionError):
                    os.close(os.open(node, os.O_RDONLY))
        assert nodes == 2 * len(HOSTILE_NODES)  # ext4's and NTFS's
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))


# -- damage --------------------------------------------------------------------------------

BLOCK = 4096
FILE_BLOCKS = 64


DAMAGE_KINDS = ("ext4", "vfat", "ntfs")
# Bad sectors in two places of one file: (its block, from byte, length): one sector inside
# block 2, and the whole of block 40.
BAD_IN_FILE = ((2, 1024, 512), (40, 0, BLOCK))


@pytest.fixture(scope="module", params=DAMAGE_KINDS)
def partly_rescued(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """An image of a file system made by `rescue image` from a device with BAD_IN_FILE sectors
    failing, its map beside it: (image, the file's true content, its lost byte ranges)."""
    work = tmp_path_factory.mktemp(f"damaged-{request.param}")
    tree = work / "tree"
    tree.mkdir()
    content = os.urandom(FILE_BLOCKS * BLOCK)
    (tree / "big.bin").write_bytes(content)
    (tree / "intact.txt").write_bytes(b"fine\n")
    backing = work / "fs.img"
    make_filesystem(request.param, tree, backing)
    raw = backing.read_bytes()
    spec = []
    for block, at, length in BAD_IN_FILE:  # where the file's block lies: its unique bytes
        where = raw.find(content[block * BLOCK:(block + 1) * BLOCK])
        assert where >= 0 and raw.count(content[block * BLOCK:(block + 1) * BLOCK]) == 1
        spec.append(f"bad={where + at}+{length}")
    image = work / "fs.qcow2"
    with faulty_device(str(backing), f"sim:{','.join(spec)}") as device:
        imaging = rescue("image", device, image)
    assert imaging.returncode == 1, imaging.stderr
    lost = [(block * BLOCK + at, block * BLOCK + at + length)
            for block, at, length in BAD_IN_FILE]
    return image, content, lost


def test_bytes_the_image_lacks_read_as_eio_and_the_rest_reads(
        partly_rescued: tuple[Path, bytes, list[tuple[int, int]]], tmp_path: Path) -> None:
    image, content, lost = partly_rescued
    directory = tmp_path / "mnt"
    directory.mkdir()
    try:
        result = rescue("mount", image, directory)
        assert result.returncode == 0, result.stderr
        path = directory / "fs" / "big.bin"
        assert path.stat().st_size == len(content)
        assert (directory / "fs" / "intact.txt").read_bytes() == b"fine\n"
        with pytest.raises(OSError) as whole:
            path.read_bytes()
        assert whole.value.errno == errno.EIO
        handle = os.open(path, os.O_RDONLY)
        try:
            good = [(0, lost[0][0]), (lost[0][1], lost[1][0]), (lost[1][1], len(content))]
            for start, end in good:  # every good byte, to the edge of the lost ones
                for offset, length in ((start, end - start), (end - 1, 1), (start, 1)):
                    assert os.pread(handle, length, offset) == content[offset:offset + length]
            for start, end in lost:  # any read touching lost bytes, even by one byte
                for offset, length in ((start, 1), (end - 1, 1), (start - 1, 2), (end - 1, 2),
                                       (start - 100, end - start + 200), (start, end - start)):
                    with pytest.raises(OSError) as failed:
                        os.pread(handle, length, offset)
                    assert failed.value.errno == errno.EIO, (offset, length)
        finally:
            os.close(handle)
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))


@pytest.mark.parametrize("partly_rescued", ["ext4"], indirect=True)
def test_an_intact_file_is_a_regular_cached_file(
        partly_rescued: tuple[Path, bytes, list[tuple[int, int]]], tmp_path: Path) -> None:
    """Only damaged files bypass the page cache: an intact one can be mapped into memory."""
    image = partly_rescued[0]
    directory = tmp_path / "mnt"
    directory.mkdir()
    try:
        assert rescue("mount", image, directory).returncode == 0
        intact = directory / "fs" / "intact.txt"
        assert stat.S_ISREG(intact.stat().st_mode)
        with open(intact, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert mapped[:] == b"fine\n"
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(str(directory))


@pytest.mark.parametrize("partly_rescued", ["ext4"], indirect=True)
@pytest.mark.parametrize("options", [(), ("--kernel",)], ids=["files", "kernel"])
def test_a_killed_server_leaves_nothing_that_umount_does_not_clean(
        partly_rescued: tuple[Path, bytes, list[tuple[int, int]]], tmp_path: Path,
        options: tuple[str, ...]) -> None:
    """The file view unmounts itself when its server dies; under kernel mounts the tree stays
    for `rescue umount` to find, loop devices and all."""
    directory = tmp_path / "mnt"
    directory.mkdir()
    path = str(directory)
    try:
        result = rescue("mount", partly_rescued[0], directory, "--json", *options)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert [p["via"] for p in shown["partitions"]] == ["kernel" if options else "fuse"]
        os.kill(shown["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server_pids(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if options:
            assert mounts_below(path) and loops_backed_by(path)
            assert rescue("umount", directory).returncode == 0
        else:
            while is_our_mount(path) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert not is_our_mount(path) and mounts_below(path) == []
        assert loops_backed_by(path) == [] and server_pids(path) == []
    finally:
        with contextlib.suppress(UsageError):
            unmount_image(path)
