"""Clonezilla and Rescuezilla archives: a folder that one logical disk is read from.

The folder names its disk (`disk`) and saved partitions (`parts`), keeps the partition table
as sfdisk's dump (`<disk>-pt.sf`) and as raw copies (`<disk>-mbr`, `<disk>-gpt-1st` at the
start, `<disk>-gpt-2nd` at the end, `<disk>-hidden-data-after-mbr`), and each partition as a
partclone image (`<part>.<fs>-ptcl-img.<gz|zst|xz|bz2|uncomp>`) or a dd one
(`<part>.dd-img.<...>`), split into pieces `.aa`, `.ab`, ... The disk reads as: the table
copies where they lie, each partition's saved blocks at the partition's start, zeros elsewhere.

A compressed stream can only be read in order, so each partition's image is decompressed once,
on the first read that needs it, by a thread that writes its blocks into an unlinked sparse
file in $TMPDIR (as large as the partition's saved blocks, gone when the process ends; a
folder without room for them is refused before it starts, and a write that fails later stops
the job: neither passes for damage in the archive) and moves a watermark past every block
whose checksum it has verified. A read waits for the
watermark, so a reader in order follows right behind the decompression, and a file taken out
of the partition waits at most once. `check_structure` waits for every partition: `verify` and
`restore` know of any damage, and say where it is, before they write. Every reader of the same
archive in the process shares these files, so a restore's decoding threads and its read-back
decompress nothing again.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rescue.errors import DestinationError, FormatError
from rescue.formats import partclone
from rescue.formats.base import Capabilities, DamagedData, FdReader, Ranges
from rescue.units import human_size

MARKER = "clonezilla-img"  # the file Clonezilla writes into every image folder
_IMAGE_NAME = re.compile(r"^(?P<part>[^.]+)\.(?P<fs>[^.-]+)-(?P<kind>ptcl-img|img)\."
                         r"(?P<compression>[a-z0-9]+)(?:\.(?P<piece>[a-z]{2,}))?$")
_DECOMPRESSORS = ("gz", "zst", "xz", "bz2", "uncomp")
_GPT_TAIL_SECTORS = 33  # the backup entries (32 sectors of 512) and the backup header
_CHUNK = 1 << 20
# (partition offset, data to put there, offset below which all is in place and checked)
Unpacking = Iterator[tuple[int, bytes, int]]


def sniff_folder(path: str) -> bool:
    """True for a folder Clonezilla or Rescuezilla wrote."""
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, MARKER))
        or all(os.path.isfile(os.path.join(path, name)) for name in ("disk", "parts")))


@dataclass(frozen=True)
class SavedPartition:
    """One partition of the archive: where it lies on the disk and how it was saved."""

    name: str  # the kernel's name when saved: sda1, nvme0n1p2
    start: int
    size: int
    file_system: str  # as the image's name says: ext4, ntfs, vfat; "" for a dd image
    kind: str  # "partclone", "dd", or "none" (not saved: swap, an extended container)
    compression: str
    pieces: tuple[str, ...] = ()


@dataclass
class Archive:
    """A Clonezilla folder's layout, read from its text files and names alone."""

    folder: str
    disk: str
    sector_size: int
    size: int
    table: str  # gpt, dos, or "" when the folder has no table
    head: list[tuple[int, bytes]] = field(default_factory=list)  # raw table copies
    partitions: list[SavedPartition] = field(default_factory=list)


def read_archive(folder: str) -> Archive:
    """The layout of the Clonezilla folder, or a FormatError that says what is missing."""
    disks = _words(folder, "disk")
    if not disks:
        raise FormatError(f"{folder} is a Clonezilla archive of partitions alone (no disk "
                          "file): rescue reads archives of a whole disk")
    if len(disks) > 1:
        raise FormatError(f"{folder} holds {len(disks)} disks ({' '.join(disks)}); rescue "
                          "reads archives of one disk")
    disk = disks[0]
    dump = _text(folder, f"{disk}-pt.sf")
    if dump is None:
        raise FormatError(f"{folder} lacks {disk}-pt.sf, the disk's partition table")
    fields, entries = _parse_sfdisk(dump)
    sector = int(fields.get("sector-size", "512")) if fields.get("sector-size", "512"
                                                                ).isdigit() else 0
    if sector not in (512, 1024, 2048, 4096):
        raise FormatError(f"{disk}-pt.sf of {folder} gives no sector size rescue knows")
    size = _disk_size(folder, disk, sector, fields, entries)
    label = fields.get("label", "")
    archive = Archive(folder, disk, sector, size, label)
    archive.head = _table_copies(folder, disk, size, label, dump)
    saved = set(_words(folder, "parts"))
    images = _images(folder)
    if os.path.exists(os.path.join(folder, "lvm_vg_dev.list")):
        raise FormatError(f"{folder} holds LVM volumes, which rescue does not lay out again; "
                          "restore it with Clonezilla")
    strangers = sorted(set(images) - set(entries))
    if strangers:
        raise FormatError(f"{folder} holds images of {', '.join(strangers)}, which are not "
                          f"partitions of {disk}; restore it with Clonezilla")
    for name, (start, length) in entries.items():
        if name in saved and name not in images:
            raise FormatError(f"{folder} names partition {name} in its parts file but holds "
                              "no image of it")
        fs, kind, compression, pieces = images.get(name, ("", "none", "", ()))
        archive.partitions.append(SavedPartition(name, start * sector, length * sector, fs,
                                                 kind, compression, pieces))
    return archive


def _words(folder: str, name: str) -> list[str]:
    text = _text(folder, name)
    return text.split() if text else []


def _text(folder: str, name: str) -> str | None:
    try:
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FormatError(f"cannot read {name} of {folder}: {exc.strerror}") from None


def _parse_sfdisk(dump: str) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """The dump's header fields, and each partition's (start, size) in sectors by name."""
    fields: dict[str, str] = {}
    entries: dict[str, tuple[int, int]] = {}
    for line in dump.splitlines():
        device, colon, rest = line.partition(" : ")
        if colon:
            values = dict(part.strip().partition("=")[::2] for part in rest.split(","))
            try:
                start, length = int(values["start"]), int(values["size"])
            except (KeyError, ValueError):
                raise FormatError(f"sfdisk dump line without a start and size: {line!r}"
                                  ) from None
            if length:
                entries[os.path.basename(device.strip())] = (start, length)
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields, entries


def _disk_size(folder: str, disk: str, sector: int, fields: dict[str, str],
               entries: dict[str, tuple[int, int]]) -> int:
    """The source disk's size: parted's listing says it; else a GPT's last usable sector
    and its backup; else the end of the last partition."""
    parted = _text(folder, f"{disk}-pt.parted") or ""
    found = re.search(r"^Disk \S+: (\d+)s$", parted, re.MULTILINE)
    if found:
        return int(found.group(1)) * sector
    if "last-lba" in fields:
        return (int(fields["last-lba"]) + 1) * sector + _GPT_TAIL_SECTORS * 512
    return max((start + length for start, length in entries.values()), default=0) * sector


def _table_copies(folder: str, disk: str, size: int, label: str, dump: str
                  ) -> list[tuple[int, bytes]]:
    """(offset, bytes) of the partition table, later pieces laid over earlier ones.

    A GPT is taken from its raw copies where the folder has them. An MBR table is written by
    sfdisk from the dump, as Clonezilla restores one, because its raw copy lacks the extended
    boot records of logical partitions; the saved boot code (the first 446 bytes) and the
    data hidden between the MBR and the first partition are laid over it.
    """
    def saved(name: str) -> bytes | None:
        try:
            with open(os.path.join(folder, f"{disk}-{name}"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    first, second = saved("gpt-1st"), saved("gpt-2nd")
    if label == "gpt" and first and second:
        return [(0, first), (size - len(second), second)]
    copies = _tables_from_dump(dump, size)
    boot, hidden = saved("mbr"), saved("hidden-data-after-mbr")
    if label == "dos" and boot:
        copies.append((0, boot[:446]))
    if label == "dos" and hidden:
        copies.append((512, hidden))
    return copies


def _tables_from_dump(dump: str, size: int) -> list[tuple[int, bytes]]:
    """What sfdisk writes from the dump onto a sparse scratch file of the disk's size: every
    sector it wrote (the MBR and extended boot records, or both GPTs), found as the file's
    data between its holes."""
    lines = [line for line in dump.splitlines() if not line.startswith("device:")]
    with tempfile.NamedTemporaryFile(prefix="rescue-table-") as scratch:
        scratch.truncate(size)
        try:
            result = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
                                     scratch.name], input="\n".join(lines) + "\n",
                                    capture_output=True, text=True, timeout=60)
        except OSError as exc:
            raise FormatError(f"cannot run sfdisk to lay out the archive's table: "
                              f"{exc.strerror}") from None
        if result.returncode:
            raise FormatError(f"sfdisk cannot write the archive's table: "
                              f"{result.stderr.strip()}")
        written: list[tuple[int, bytes]] = []
        fd, position = scratch.fileno(), 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing written past `position`
                break
            position = os.lseek(fd, start, os.SEEK_HOLE)
            written.append((start, os.pread(fd, position - start, start)))
        return written


def _images(folder: str) -> dict[str, tuple[str, str, str, tuple[str, ...]]]:
    """Partition name -> (file system, kind, compression, pieces in order)."""
    found: dict[str, tuple[str, str, str, list[tuple[str, str]]]] = {}
    for name in os.listdir(folder):
        match = _IMAGE_NAME.match(name)
        if not match:
            continue
        part, fs, kind, compression = match.group("part", "fs", "kind", "compression")
        if kind == "img" and fs != "dd":
            tool = "ntfsclone" if fs == "ntfs" else "partimage"
            raise FormatError(f"{name} in {folder} is a {tool} image, which rescue does not "
                              f"read; restore it with Clonezilla")
        if compression not in _DECOMPRESSORS:
            raise FormatError(f"{name} in {folder} is compressed with {compression}, which "
                              f"rescue does not read (it reads {', '.join(_DECOMPRESSORS)})")
        saved = "dd" if fs == "dd" else "partclone"
        entry = found.setdefault(part, ("" if saved == "dd" else fs, saved, compression, []))
        entry[3].append((match.group("piece") or "", os.path.join(folder, name)))
    return {part: (fs, kind, compression, _in_order(pieces))
            for part, (fs, kind, compression, pieces) in found.items()}


def _in_order(pieces: list[tuple[str, str]]) -> tuple[str, ...]:
    """The paths of the pieces `split` cut an image into, given as (suffix, path), in split's
    order, or a FormatError naming the first one missing."""
    ordered = sorted(pieces, key=lambda piece: (len(piece[0]), piece[0]))
    for index, (suffix, path) in enumerate(ordered):
        if suffix and _piece_number(suffix) != index:
            stem = os.path.basename(path)[:-len(suffix) - 1]
            raise FormatError(f"{os.path.dirname(path)} lacks piece {index + 1} of {stem} "
                              f"(the pieces go on with .{suffix})")
    return tuple(path for _, path in ordered)


def _piece_number(suffix: str) -> int:
    """Where GNU split puts a suffix: aa..yz, then zaaa..zyzz, then zzaaaa, and so on."""
    widened = (len(suffix) - 2) // 2
    number = 0
    for letter in suffix[widened:]:
        number = number * 26 + ord(letter) - ord("a")
    return sum(25 * 26 ** (i + 1) for i in range(widened)) + number


class _Pieces(io.RawIOBase):
    """The split pieces of one image, read as the single file they were cut from."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths, self.index = paths, 0
        self.file = open(paths[0], "rb")  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    @property
    def current(self) -> str:
        return os.path.basename(self.paths[self.index])

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            count = self.file.readinto(buffer)
            if count or self.index == len(self.paths) - 1:
                return count or 0
            self.file.close()
            self.index += 1
            self.file = open(self.paths[self.index], "rb")  # noqa: SIM115

    def close(self) -> None:
        self.file.close()
        super().close()


class _Decompressed:
    """One image's decompressed stream; a failed decompression becomes a ChecksumError that
    names the piece it was in."""

    def __init__(self, pieces: tuple[str, ...], compression: str) -> None:
        self.raw = _Pieces(pieces)
        buffered = io.BufferedReader(self.raw, _CHUNK)
        self.stream: io.BufferedIOBase | io.RawIOBase
        self.failures: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error,
                                                      lzma.LZMAError, ValueError)
        if compression == "gz":
            self.stream = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif compression == "xz":
            self.stream = lzma.LZMAFile(buffered)  # noqa: SIM115 - closed in close()
        elif compression == "bz2":
            self.stream = bz2.BZ2File(buffered)
        elif compression == "zst":
            import zstandard

            self.stream = zstandard.ZstdDecompressor().stream_reader(  # type: ignore[assignment]
                buffered, read_across_frames=True)
            self.failures += (zstandard.ZstdError,)
        else:
            self.stream = buffered

    def read(self, size: int) -> bytes:
        try:
            return self.stream.read(size) or b""
        except self.failures as exc:
            raise partclone.ChecksumError(
                f"{self.raw.current} cannot be decompressed ({exc or type(exc).__name__})"
            ) from None

    def close(self) -> None:
        self.stream.close()
        self.raw.close()


class _Unpacked:
    """One partition's saved bytes in an unlinked sparse scratch file, filled in order by a
    thread; `ready` is the partition offset below which every byte is in place and checked.
    It starts only where the scratch folder has room for all of them, besides what other
    unpackings still need: a full folder must never pass for a damaged archive."""

    def __init__(self, partition: SavedPartition, blocks: Callable[[], Unpacking],
                 runs: list[tuple[int, int]], others: int) -> None:
        self.partition = partition
        self.need, self.written = 0, 0
        try:
            self.file = tempfile.TemporaryFile(prefix="rescue-clonezilla-")  # noqa: SIM115
        except OSError as exc:
            raise _scratch_failed(partition, exc) from None
        try:
            stats = os.fstatvfs(self.file.fileno())
            self.need = _allocated(runs, max(stats.f_frsize, 1))
            free = stats.f_bavail * stats.f_frsize
            if self.need + others > free:
                raise DestinationError(
                    f"unpacking partition {partition.name} of the Clonezilla archive needs "
                    f"{human_size(self.need + others)} in {tempfile.gettempdir()}, which has "
                    f"{human_size(free)} free; set TMPDIR to a folder with room")
            self.file.truncate(partition.size)
        except OSError as exc:  # a file system whose files cannot be that large (FAT32)
            self.file.close()
            raise _scratch_failed(partition, exc) from None
        except BaseException:
            self.file.close()
            raise
        self.ready = 0
        self.error: Exception | None = None
        self.scratch_error: OSError | None = None  # writing the scratch file failed
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._fill, args=(blocks,), daemon=True,
                                       name=f"unpack-{partition.name}")
        self.thread.start()

    def _fill(self, blocks: Callable[[], Unpacking]) -> None:
        fd = self.file.fileno()
        try:
            for offset, data, checked in blocks():
                if data:
                    try:
                        os.pwrite(fd, data, offset)
                    except OSError as exc:
                        self.scratch_error = exc
                        raise
                    self.written += len(data)
                with self.changed:
                    self.ready = max(self.ready, min(checked, self.partition.size))
                    self.changed.notify_all()
            failure: Exception | None = None
        except (partclone.ChecksumError, FormatError, OSError) as exc:
            failure = exc
        with self.changed:
            self.error = failure
            self.ready = self.partition.size if failure is None else self.ready
            self.changed.notify_all()

    def read(self, offset: int, length: int) -> tuple[bytes, int]:
        """Bytes [offset, offset+length) of the partition once they are unpacked, and how many
        of them are good: fewer than `length` when the image is damaged before their end
        (the rest read as zeros)."""
        with self.changed:
            self.changed.wait_for(lambda: self.ready >= offset + length or bool(self.error))
            good = max(0, min(length, self.ready - offset))
        if good < length and self.scratch_error is not None:
            raise _scratch_failed(self.partition, self.scratch_error)
        data = os.pread(self.file.fileno(), good, offset) if good else b""
        return data + bytes(length - good), good

    def damage(self) -> str:
        return f"partition {self.partition.name} of the Clonezilla archive: {self.error}"


_SHARED: dict[tuple[str, int], _Unpacked] = {}
_SHARED_LOCK = threading.Lock()


def _unpacked(partition: SavedPartition, blocks: Callable[[], Unpacking],
              runs: list[tuple[int, int]]) -> _Unpacked:
    """The process's one scratch copy of this partition image (its saved `runs`), started on
    first use."""
    first = partition.pieces[0]
    key = (os.path.realpath(first), os.stat(first).st_mtime_ns)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            others = sum(max(0, copy.need - copy.written) for copy in _SHARED.values()
                         if copy.error is None and copy.ready < copy.partition.size)
            found = _SHARED[key] = _Unpacked(partition, blocks, runs, others)
        return found


def _scratch_failed(partition: SavedPartition, error: OSError) -> DestinationError:
    return DestinationError(
        f"cannot unpack partition {partition.name} of the Clonezilla archive into "
        f"{tempfile.gettempdir()}: {error.strerror or error}; set TMPDIR to a folder with room "
        "on a Linux file system")


def _allocated(runs: list[tuple[int, int]], unit: int) -> int:
    """Bytes that writing `runs` (offset, length; in order) allocates in a sparse file whose
    file system allocates `unit` bytes at a time: runs smaller than a unit take whole ones."""
    total, covered = 0, 0  # the end of the last unit counted
    for start, length in runs:
        first = max(start // unit * unit, covered)
        end = -(-(start + length) // unit) * unit
        if end > first:
            total += end - first
            covered = end
    return total


class _Saved:
    """Reads of one saved partition: its used runs known from the partclone header, its bytes
    from the shared scratch copy."""

    def __init__(self, partition: SavedPartition) -> None:
        self.partition = partition
        self.header: partclone.Header | None = None
        self.runs: list[tuple[int, int]] = [(0, partition.size)]  # dd: all of it, in bytes
        if partition.kind == "partclone":
            stream = _Decompressed(partition.pieces, partition.compression)
            try:
                self.header, bitmap = partclone.read_header(stream)
            except partclone.ChecksumError as exc:
                raise FormatError(f"damaged Clonezilla archive: partition {partition.name}: "
                                  f"{exc}") from None
            finally:
                stream.close()
            size = self.header.block_size
            self.runs = [(first * size, count * size)
                         for first, count in partclone.used_runs(self.header, bitmap)]
            self.runs = [(start, min(length, partition.size - start))
                         for start, length in self.runs if start < partition.size]
        self.copy: _Unpacked | None = None

    def _blocks(self) -> Unpacking:
        """(partition offset, data, offset below which all is in place and checked)."""
        stream = _Decompressed(self.partition.pieces, self.partition.compression)
        try:
            if self.header is None:
                yield from self._dd(stream)
                return
            header, bitmap = partclone.read_header(stream)
            size, limit = header.block_size, self.partition.size
            for first, data, checked in partclone.blocks(stream, header,
                                                         partclone.used_runs(header, bitmap)):
                offset = first * size
                yield offset, data[:max(0, limit - offset)], checked * size
        finally:
            stream.close()

    def _dd(self, stream: _Decompressed) -> Unpacking:
        offset = 0
        while offset < self.partition.size:
            data = stream.read(min(_CHUNK, self.partition.size - offset))
            if not data:
                raise partclone.ChecksumError(f"the dd image ends at byte {offset:#x}, before "
                                              "the partition's end")
            yield offset, data, offset + len(data)
            offset += len(data)

    def check(self) -> Ranges:
        """The damaged ranges of the partition (its offsets), once all of it is unpacked:
        every saved byte from where the image failed on."""
        if not self.runs:
            return []
        last, size = self.runs[-1]
        _, damaged = self.read(last + size - 1, 1)  # waits for the end of the unpacking
        if not damaged or self.copy is None:
            return []
        ready = self.copy.ready
        return [(max(start, ready), start + size - max(start, ready))
                for start, size in self.runs if start + size > ready]

    def read(self, offset: int, length: int) -> tuple[bytes, Ranges]:
        """Bytes of the partition, and the damaged ranges among them (partition offsets),
        which read as zeros; what no run covers is zeros without waiting."""
        out = bytearray(length)
        damaged: Ranges = []
        for start, size in self.runs:
            low, high = max(start, offset), min(start + size, offset + length)
            if low < high:
                self.copy = self.copy or _unpacked(self.partition, self._blocks, self.runs)
                data, good = self.copy.read(low, high - low)
                out[low - offset:high - offset] = data
                if good < high - low:
                    damaged.append((low + good, high - low - good))
        return bytes(out), damaged


class ClonezillaReader(FdReader):
    """A Clonezilla or Rescuezilla folder read as the disk it was saved from. It checks
    itself: partclone's checksums, and gzip's, xz's and zstd's own as they decompress."""

    capabilities = Capabilities(checks=True, checksums=True)

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.archive = read_archive(folder)
        self.size = self.archive.size
        self.saved = [_Saved(p) for p in self.archive.partitions if p.kind != "none"]

    def read(self, offset: int, length: int) -> bytes:
        data, damaged = self.read_checked(offset, length)
        if damaged:
            at, size = damaged[0]
            raise DamagedData(at, size, self._damage_at(at))
        return data

    def check_structure(self) -> tuple[Ranges, list[str]]:
        """Every partition image decompressed and checked against its checksums: a stream
        has no structure to check apart from its content. The copies it leaves are what
        later reads are served from, so a restore checks the whole archive before it writes,
        at the cost of decompressing it first."""
        damaged: Ranges = []
        problems: list[str] = []
        for saved in self.saved:
            bad = saved.check()
            if bad:
                damaged += [(saved.partition.start + at, size) for at, size in bad]
                problems.append(saved.copy.damage() if saved.copy else saved.partition.name)
        return damaged, problems

    def read_checked(self, offset: int, length: int) -> tuple[bytes, Ranges]:
        length = max(0, min(length, self.size - offset))
        out = bytearray(length)
        damaged: Ranges = []
        for at, data in self.archive.head:
            low, high = max(at, offset), min(at + len(data), offset + length)
            if low < high:
                out[low - offset:high - offset] = data[low - at:high - at]
        for saved in self.saved:
            start = saved.partition.start
            low, high = max(start, offset), min(start + saved.partition.size, offset + length)
            if low < high:
                data, bad = saved.read(low - start, high - low)
                out[low - offset:high - offset] = data
                damaged += [(start + at, size) for at, size in bad]
        return bytes(out), damaged

    def _damage_at(self, offset: int) -> str:
        """The account of the damage in the partition that holds `offset`."""
        for saved in self.saved:
            start = saved.partition.start
            if start <= offset < start + saved.partition.size and saved.copy:
                return saved.copy.damage()
        return f"the Clonezilla archive is damaged at byte {offset:#x}"

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        used = sorted([(at, len(data)) for at, data in self.archive.head]
                      + [(s.partition.start + start, length)
                         for s in self.saved for start, length in s.runs])
        position = 0
        for start, length in used:
            start, end = max(start, position), min(start + length, self.size)
            if start >= end:
                continue
            if start > position:
                yield position, start - position, False
            yield start, end - start, True
            position = end
        if position < self.size:
            yield position, self.size - position, False

    def details(self) -> dict[str, object]:
        archive = self.archive
        return {"archive": "Clonezilla", "disk": archive.disk, "table": archive.table or None,
                "partitions": [
                    {"name": p.name, "start": p.start, "size": p.size,
                     "file_system": p.file_system or None, "saved_as": p.kind,
                     "compression": p.compression or None, "pieces": len(p.pieces)}
                    for p in archive.partitions]}
