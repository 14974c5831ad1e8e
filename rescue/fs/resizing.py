"""File systems measured, grown, shrunk and checked by their own tools.

Each file system's own tool knows best how small it can get and how to resize it: `resize2fs`
for ext2/3/4, `ntfsresize` for NTFS, `fatresize` (libparted) for FAT16 and FAT32. Those tools
want a file or a device, so an image's partition is shown to them through a read-only loop
device at the partition's offset (a qcow2 image first through a read-only FUSE export by
`qemu-storage-daemon`), and nothing of the image can change; shrinking writes into a qcow2
copy-on-write layer over the image instead. A file system is never resized by a tool that is
not there, and exFAT keeps its size: exfatprogs has no resizer.

`fatresize` has its quirks, each met here: it works only on a partition of a partitioned disk
(so it gets a loop device over the whole disk, partitions added by partx), rewrites that
partition's table entry to the size it made (the caller writes the planned table back), aborts
when asked for the partition's exact size (it is asked for 1 MiB less) and turns FAT16 into
FAT32 or back when the size calls for it. The type never changes: the planner keeps a FAT
within the cluster counts its type allows at its cluster size (`fat_sizing`), and fatresize's
question whether to convert is answered "No", so a conversion it would need anyway is
cancelled and the restore fails with its words instead (`FATRESIZE_ANSWERS`)."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from rescue.errors import DestinationError, FormatError, UsageError
from rescue.formats.image import QEMU_FORMATS
from rescue.formats.qemuexport import exported, passphrase_if_encrypted
from rescue.formats.raw import RawReader
from rescue.fs.domain import detect, open_fs
from rescue.fs.layout import Sizing, kept_type
from rescue.fs.partitions import PartitionTable, SliceReader
from rescue.fs.used.fat import FatFS
from rescue.io.reader import Reader

RESIZERS = {"ext": "resize2fs", "ntfs": "ntfsresize", "fat": "fatresize"}
MIB = 1 << 20
# the cluster counts FAT16 and FAT32 allow; a resize stays this many clusters inside them
FAT_CLUSTERS = {16: (4085, 65524), 32: (65525, 0x0FFFFFF5)}
FAT_MARGIN = 256
# libparted's questions: "Fix/Ignore" a GPT that does not span the disk (the planned table is
# written back after it anyway), "Yes/No/Cancel" to make a FAT16 a FAT32. An answer a question
# does not take is asked again with the next one; the end of them cancels, so a conversion
# fatresize needs ("OK/Cancel") is never agreed to.
FATRESIZE_ANSWERS = "Ignore\nNo\n" * 3
CHECKERS = {"ext": ["e2fsck", "-f", "-n"], "ntfs": ["ntfsfix", "-n"], "fat": ["fsck.vfat", "-n"],
            "exfat": ["fsck.exfat", "-n"]}


def _run(args: list[str], what: str, timeout: float = 3600, answers: str | None = None
         ) -> str:
    """A tool's output; its failure is one line naming `what` it was done to. `answers` are
    what the tool reads if it asks anything, then the end of its input; without them it
    reads /dev/null."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              input=answers,
                              stdin=subprocess.DEVNULL if answers is None else None)
    except FileNotFoundError:
        raise DestinationError(f"{args[0]} is not installed; it is needed for {what}") from None
    if done.returncode:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise DestinationError(f"{args[0]} failed on {what}: {(lines or ['no output'])[-1]}")
    return done.stdout


@contextlib.contextmanager
def loop_device(path: str, start: int, size: int | None, *, read_only: bool) -> Iterator[str]:
    """Bytes [start, start + size) of a file or device as a loop device of their own; with
    no `size`, the whole disk with its partitions (this kernel does not scan them itself)."""
    args = ["losetup", "--find", "--show", "--offset", str(start),
            *(["--sizelimit", str(size)] if size is not None else [])]
    device = _run([*args, *(["--read-only"] if read_only else []), path],
                  f"{path} at byte {start}").strip()
    try:
        if size is None:
            _run(["partx", "-a", device], f"the partitions of {path}")
        yield device
    finally:
        if size is None:
            subprocess.run(["partx", "-d", device], capture_output=True)
        for _ in range(50):  # a closing tool can hold it busy a moment
            if subprocess.run(["losetup", "-d", device], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


@contextlib.contextmanager
def image_file(image: str, image_format: str) -> Iterator[str]:
    """The image's disk bytes as a file, read-only: a raw image is one already, a qcow2 one
    or one QEMU reads is exported through FUSE by qemu-storage-daemon."""
    if image_format == "raw":
        yield image
        return
    _exportable(image_format)
    passphrase = passphrase_if_encrypted(image, image_format)
    with exported(image, image_format, passphrase=passphrase) as raw:
        yield raw


def _scratch(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder named after this process; those of processes that are gone (a
    restore killed while it shrank) are removed first, layers can be large."""
    for stale in glob.glob(os.path.join(tempfile.gettempdir(), f"{kind}-*-*")):
        pid = os.path.basename(stale).removeprefix(f"{kind}-").split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{kind}-{os.getpid()}-")


def _exportable(image_format: str) -> None:
    if image_format not in ("raw", "qcow2", *QEMU_FORMATS):
        raise UsageError(f"a {image_format} image cannot be resized while restoring; convert "
                         "it to qcow2 first (rescue convert)")


@contextlib.contextmanager
def shrunk_image(image: str, image_format: str,
                 shrinks: list[tuple[str, int, int, int, int]]) -> Iterator[str]:
    """The image's disk bytes with file systems shrunk, each (kind, partition number, start,
    old size, new size), as a raw file: the shrinking writes into a qcow2 copy-on-write
    layer over the image, in a temporary folder, and the image itself is never written."""
    _exportable(image_format)
    with _scratch("rescue-shrink") as folder:
        overlay = os.path.join(folder, "overlay.qcow2")
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(image),
              "-F", image_format, overlay], f"a layer over {image}")
        with exported(overlay, "qcow2", writable=True) as raw:
            for kind, number, start, old_size, new_size in shrinks:
                resize(kind, raw, number, start, old_size, new_size)
            yield raw


def minimum_size(kind: str, device: str) -> int:
    """The fewest bytes the file system on `device` can shrink to, by its own tool."""
    if kind == "ext":
        blocks = re.search(r"minimum size of the filesystem: (\d+)",
                           _run(["resize2fs", "-P", device], f"the ext file system on {device}"))
        size = re.search(r"Block size:\s+(\d+)",
                         _run(["dumpe2fs", "-h", device], f"the ext file system on {device}"))
        if blocks and size:
            return int(blocks[1]) * int(size[1])
    elif kind == "ntfs":
        report = _run(["ntfsresize", "--info", "--force", "--no-action", device],
                      f"the NTFS on {device}")
        found = re.search(r"resize at (\d+) bytes", report)
        if found:
            return int(found[1])
    raise FormatError(f"cannot tell how small the {kind} file system on {device} can get")


def measure(reader: Reader, table: PartitionTable, image: str, image_format: str
            ) -> dict[int, Sizing]:
    """Every partition's file system and, for those that may change size, the size its own
    tool says it can shrink to; the image is exposed to the tools only when one is needed."""
    sizings = {}
    with contextlib.ExitStack() as stack:
        exposed = None
        for entry in table.file_systems:
            volume = SliceReader(reader, entry.start, entry.size)
            kind = detect(volume)
            if kind in ("fat", "exfat"):
                sizings[entry.number] = fat_sizing(volume, kind, bool(kept_type(table, entry)))
                continue
            if kind not in RESIZERS or kept_type(table, entry):
                sizings[entry.number] = Sizing(kind, None)
                continue
            exposed = exposed or stack.enter_context(image_file(image, image_format))
            with loop_device(exposed, entry.start, entry.size, read_only=True) as device:
                sizings[entry.number] = Sizing(kind, minimum_size(kind, device))
    return sizings


def _used_end(volume: SliceReader) -> int | None:
    """Where the last used cluster of a FAT or exFAT file system ends: `fatresize` only cuts
    free space off the end, so that is as small as it could get; None when unreadable."""
    try:
        return max((offset + length for offset, length in open_fs(volume).used()), default=0)
    except FormatError:
        return None


def fat_sizing(volume: SliceReader, kind: str, kept: bool) -> Sizing:
    """A FAT's least size (its last used cluster's end, and at its cluster size the fewest
    clusters its type allows) and, for FAT16, its most; `kept`: it keeps its size. exFAT,
    FAT12 and any FAT without fatresize here keep theirs."""
    used_end = _used_end(volume)
    if kind != "fat" or kept or used_end is None or shutil.which("fatresize") is None:
        return Sizing(kind, None, used_end=used_end)
    try:
        fat = FatFS(volume)
    except FormatError:
        return Sizing(kind, None, used_end=used_end)
    if fat.bits not in FAT_CLUSTERS:
        return Sizing(kind, None, used_end=used_end)
    fewest, most = FAT_CLUSTERS[fat.bits]
    floor = fat.data_offset + (fewest + FAT_MARGIN) * fat.cluster_size
    table_most = -(-(most + 2) * fat.bits // 8 // fat.sector) * fat.sector
    top = (fat.fat_offset + fat.fats * table_most + fat.root_size
           + (most - FAT_MARGIN) * fat.cluster_size)
    return Sizing("fat", max(used_end, floor), used_end=used_end,
                  maximum=top if fat.bits == 16 else None)


def resize(kind: str, disk: str, number: int, start: int, size: int,
           new_size: int | None) -> None:
    """Resize the file system of partition `number` of `disk` ([start, start + size)) to
    `new_size` bytes, or grow it to its whole partition."""
    if kind == "fat":
        _fatresize(disk, number, start, new_size or size)
        return
    with loop_device(disk, start, size, read_only=False) as device:
        _resize(kind, device, new_size)


def _fatresize(disk: str, number: int, start: int, size: int) -> None:
    """fatresize on partition `number` of `disk`, asked for 1 MiB under `size`, as its quirks
    want (see above); the FAT it made is checked to end within `size`."""
    what = f"the FAT file system of partition {number} of {disk}"
    with loop_device(disk, 0, None, read_only=False) as device:
        _run(["fatresize", "--size", str(size - MIB), "--partition", str(number), device],
             what, answers=FATRESIZE_ANSWERS)
    reader = RawReader(disk)
    try:
        made = FatFS(SliceReader(reader, start, size)).size
    finally:
        reader.close()
    if made > size:
        raise DestinationError(f"fatresize made {what} {made} bytes, over its {size}")


def _resize(kind: str, device: str, size: int | None) -> None:
    """The file system's own resizer: to `size` bytes, or to the whole device."""
    what = f"the {kind} file system on {device}"
    if kind == "ext":
        # resize2fs wants a freshly checked file system; preen fixes only what is safe
        done = subprocess.run(["e2fsck", "-f", "-p", device], capture_output=True, text=True)
        if done.returncode >= 4:
            raise DestinationError(f"e2fsck found errors in {what}: {done.stdout.strip()}")
        _run(["resize2fs", device, *([f"{size // 1024}K"] if size else [])], what)
    elif kind == "ntfs":
        _run(["ntfsresize", "--force", "--no-progress-bar",
              *(["--size", str(size)] if size else []), device], what)
    else:
        raise FormatError(f"no resizer for {kind} here")


def check(kind: str | None, device: str) -> None:
    """The file system's own checker, changing nothing; DestinationError when it complains."""
    if kind in CHECKERS:
        _run([*CHECKERS[kind], device], f"the {kind} file system on {device}")
