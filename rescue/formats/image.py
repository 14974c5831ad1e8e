"""Every image format in one place: names, detection, and opening a reader or a writer.

Each format module knows its own signature (`sniff`); this registry asks them in turn, knows
the foreign containers rescue refuses, and is the one place that turns a format name into a
reader or writer, and a manifest into where it is kept. The format modules are imported when
first needed: they pull in zstandard, which a command that opens no image should not wait for.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from rescue.errors import FormatError, UsageError
from rescue.formats.base import (
    ImageReader,
    ImageWriter,
    holds_manifest,
    keeps_manifest,
)
from rescue.formats.manifest import Manifest, read_sidecar, write_sidecar

FORMATS = ("raw", "qcow2", "zst")
ARCHIVE = "clonezilla"  # read only: a Clonezilla or Rescuezilla folder, found by its files
# the formats QEMU reads for us (see qemuexport), by QEMU's driver name, and their names
QEMU_FORMATS = {"vmdk": "VMDK", "vhdx": "VHDX", "vdi": "VDI", "vpc": "VHD", "qed": "QED"}
READ_FORMATS = (*FORMATS, *QEMU_FORMATS)
QEMU_EXTENSIONS = (".vmdk", ".vhdx", ".vhd", ".vdi", ".qed")  # their tools' names for them
COMPRESSED = ("qcow2", "zst")  # the formats whose writers compress, at a level of LEVELS
LEVELS = range(1, 20)  # zstd's compression levels
DEFAULT_LEVEL = 3
MAX_THREADS = 256  # worker threads for compressing or decoding: more only wastes memory
MIN_IMAGE_SIZE = 512  # one sector: anything smaller holds no disk
_HEAD = 4096
_TAIL = 512
RAW_EXTENSIONS = (".img", ".raw", ".dd", ".bin", ".iso")
_EXTENSIONS = ((".img.zst", "zst"), (".zst", "zst"), (".qcow2", "qcow2"),
               *((ext, "raw") for ext in RAW_EXTENSIONS))
EXTENSION_OF = {"raw": ".img", "qcow2": ".qcow2", "zst": ".img.zst"}  # a new image's name


@dataclass(frozen=True)
class Foreign:
    """A format not ours, known by its published signature: read through QEMU's `driver`,
    or refused with what to do."""

    what: str
    magic: bytes
    offset: int  # where the signature lies; negative: counted from the end of the file
    advice: str
    raw_image_may_start_so: bool = False  # a raw image of a partition can begin with it
    driver: str = ""  # QEMU's driver that reads it for us (see qemuexport)


_UNPACK = "decompress it first ({tool} {path}), then use the raw image"
FOREIGN = (
    Foreign("a VMDK disk (VMware)", b"KDMV", 0, "", driver="vmdk"),
    Foreign("a VMDK disk (VMware ESX)", b"COWD", 0, "", driver="vmdk"),
    Foreign("a VMDK descriptor (VMware)", b"# Disk DescriptorFile", 0, "", driver="vmdk"),
    Foreign("a VHDX disk (Hyper-V)", b"vhdxfile", 0, "", driver="vhdx"),
    Foreign("a VHD disk (Virtual PC, Hyper-V)", b"conectix", 0, "", driver="vpc"),
    Foreign("a VHD disk (Virtual PC, Hyper-V)", b"conectix", -512, "", driver="vpc"),
    Foreign("a VDI disk (VirtualBox)", b"\x7f\x10\xda\xbe", 0x40, "", driver="vdi"),
    Foreign("a QED disk (QEMU)", b"QED\x00", 0, "", driver="qed"),
    Foreign("a partclone image", b"partclone-image", 0,
            "restore it with partclone.restore, or partclone.<fs> -r -W -s {path} -o disk.img"),
    Foreign("an EnCase (E01) evidence file", b"EVF\x09\x0d\x0a\xff\x00", 0,
            "export it to raw first: ewfexport -t disk {path}"),
    Foreign("an EnCase (Ex01) evidence file", b"EVF2\x0d\x0a\x81\x00", 0,
            "export it to raw first: ewfexport -t disk {path}"),
    Foreign("a gzip stream", b"\x1f\x8b", 0, _UNPACK.replace("{tool}", "gunzip -k")),
    Foreign("an xz stream", b"\xfd7zXZ\x00", 0, _UNPACK.replace("{tool}", "unxz -k")),
    Foreign("a bzip2 stream", b"BZh", 0, _UNPACK.replace("{tool}", "bunzip2 -k")),
    Foreign("an lz4 stream", b"\x04\x22\x4d\x18", 0, _UNPACK.replace("{tool}", "lz4 -d")),
    Foreign("a LUKS encrypted container", b"LUKS\xba\xbe", 0,
            "open it with cryptsetup and image the mapped device; if it is a raw image of an "
            "encrypted partition, name it .img or pass --format raw",
            raw_image_may_start_so=True),
)


def format_for(path: str, override: str | None = None) -> str:
    """The format an image written to `path` gets: --format, else the name; raw otherwise.

    A --format that contradicts a .qcow2 or .img.zst name is refused: the file would carry a
    name that promises a signature its bytes lack, which every reader, ours included, calls
    damaged. qcow2 or .img.zst under a raw name is found by its signature, so it is allowed.
    """
    named = named_format(path)
    if override is None:
        return named or "raw"
    if override not in FORMATS:
        raise UsageError(f"unknown format {override!r}; choose one of {', '.join(FORMATS)}")
    if named in ("qcow2", "zst") and named != override:
        raise UsageError(f"{path} is named as a {named} image but --format {override} was "
                         f"given; drop --format, or pick a name that ends in "
                         f"{EXTENSION_OF[override]}")
    return override


def require_format(path: str, fmt: str) -> None:
    """Refuse to continue an existing image at `path` that holds another of our formats:
    writing `fmt` into it would destroy the earlier work."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return
            head, tail = _ends(f)
    except OSError:
        return  # nothing there yet, or not ours to judge: the writer reports why
    found = _our_format(head, tail)
    if found not in (None, fmt):
        raise UsageError(f"{path} already holds a {found} image; writing {fmt} into it would "
                         f"destroy it; give a new name, or continue it as {found}")


def detect_format(path: str, override: str | None = None) -> str:
    """The format rescue reads `path` as, or a FormatError that says what it is instead.

    Our formats are known by their signatures (an image may be renamed), foreign containers
    by theirs and refused with what to do. A raw image has no signature, so it is taken only
    when the name says raw, for a block device, or when --format says so; anything else is
    refused rather than read as a disk. A name that promises qcow2 or .img.zst without the
    signature is a damaged image.
    """
    if override is not None and override not in READ_FORMATS:
        raise UsageError(f"unknown format {override!r}; choose one of {', '.join(READ_FORMATS)}")
    if os.path.isdir(path):
        from rescue.formats.clonezilla import sniff_folder

        if sniff_folder(path):
            return ARCHIVE
        raise FormatError(f"{path} is a directory, not an image nor a Clonezilla archive")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISBLK(st.st_mode):
                return override or "raw"  # a disk is its bytes
            if not stat.S_ISREG(st.st_mode):
                raise FormatError(f"{path} is not a regular file or a block device")
            head, tail = _ends(f)
    except OSError as exc:
        raise FormatError(f"cannot open image {path}: {exc.strerror}") from None
    named = named_format(path)
    if st.st_size < MIN_IMAGE_SIZE:
        what = "empty" if not st.st_size else f"only {st.st_size} bytes long"
        damaged = "damaged image: " if named in ("qcow2", "zst") else ""
        raise FormatError(f"{damaged}{path} is {what}: too small to be a disk image")
    if override is not None:
        return override
    foreign = _foreign(head, tail)
    if foreign is not None and foreign.driver:
        return foreign.driver
    if foreign is not None and not (foreign.raw_image_may_start_so and named == "raw"):
        raise FormatError(f"{path} is {foreign.what}, not an image rescue reads; "
                          + foreign.advice.format(path=path))
    found = _our_format(head, tail)
    if found == "zstd":
        raise FormatError(f"{path} is a plain zstd stream without a seek table, not a seekable "
                          ".img.zst; decompress it (zstd -d) and convert the raw image")
    if found is not None:
        return found
    if named == "raw":
        return "raw"
    if named is not None:
        raise FormatError(f"damaged image: {path} is named as a {named} image but does not "
                          f"begin with the {named} signature")
    raise FormatError(f"{path} is not a disk image rescue knows: neither qcow2 nor .img.zst, "
                      f"and its name does not end in {', '.join(RAW_EXTENSIONS)}; if it is a "
                      "raw image, pass --format raw")


def named_format(path: str) -> str | None:
    """The format a file's name promises (by its extension), or None: not named as an image."""
    lower = path.lower()
    return next((fmt for ext, fmt in _EXTENSIONS if lower.endswith(ext)), None)


def is_image_name(name: str) -> bool:
    """Whether a file's name says it holds a disk rescue reads: one of ours, or one QEMU
    reads for us (found by its signature when opened, whatever the name says)."""
    return named_format(name) is not None or name.lower().endswith(QEMU_EXTENSIONS)


def _ends(f: BinaryIO) -> tuple[bytes, bytes]:
    """The first and last bytes of an open file, where signatures live."""
    head = f.read(_HEAD)
    f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
    return head, f.read(_TAIL)


def _foreign(head: bytes, tail: bytes) -> Foreign | None:
    for known in FOREIGN:
        data, at = (head, known.offset) if known.offset >= 0 else (tail, len(tail) + known.offset)
        if at >= 0 and data[at:at + len(known.magic)] == known.magic:
            return known
    return None


def _our_format(head: bytes, tail: bytes) -> str | None:
    """qcow2, zst (seekable) or zstd (a plain stream), by each module's own signatures."""
    from rescue.formats import qcow2, zstseek

    if qcow2.sniff(head, tail):
        return "qcow2"
    if zstseek.sniff(head, tail):
        return "zst"
    return "zstd" if zstseek.is_zstd(head) else None


def open_reader(path: str, fmt: str | None = None) -> ImageReader:
    """Random access to any image rescue reads: qcow2 (through its backing chain), seekable
    zstd, raw file or device, a Clonezilla folder, and through QEMU the foreign formats and
    the qcow2 features our reader refuses. `fmt` is --format, or a format `detect_format`
    already gave."""
    fmt = detect_format(path, fmt) if fmt != ARCHIVE else fmt
    if fmt == ARCHIVE:
        from rescue.formats.clonezilla import ClonezillaReader

        return ClonezillaReader(path)
    if fmt in QEMU_FORMATS:
        return _through_qemu(path, fmt)
    if fmt == "qcow2":
        from rescue.formats.qcow2chain import BrokenChain, Qcow2ChainReader

        try:
            return Qcow2ChainReader(path)  # an incremental image reads through its backing files
        except BrokenChain:
            raise
        except FormatError:
            if not _qcow2_for_qemu(path):
                raise
            return _through_qemu(path, "qcow2")
    if fmt == "zst":
        from rescue.formats.zstseek import ZstSeekReader

        return ZstSeekReader(path)
    from rescue.formats.raw import RawReader

    return RawReader(path)


def _qcow2_for_qemu(path: str) -> bool:
    """Whether a qcow2 our reader refused asks for what QEMU reads (encryption, a backing
    chain, an external data file, subclusters), rather than being damaged."""
    from rescue.formats.qemuexport import qcow2_needs_qemu

    with open(path, "rb") as f:
        return qcow2_needs_qemu(f.read(_HEAD))


def _through_qemu(path: str, driver: str) -> ImageReader:
    from rescue.formats import qemuexport

    return qemuexport.ExportedReader(path, driver,
                                     qemuexport.passphrase_if_encrypted(path, driver))


def require_encryptable(fmt: str, encrypt: bool) -> None:
    """Only a qcow2 image carries QEMU's LUKS encryption."""
    if encrypt and fmt != "qcow2":
        raise UsageError(f"--encrypt makes an encrypted qcow2 image, not {fmt}; name the image "
                         ".qcow2")


def require_level(fmt: str, level: int) -> None:
    """Refuse a compression level zstd does not have, for a format that compresses; a raw
    image ignores the level, so any is fine there."""
    if fmt in COMPRESSED and level not in LEVELS:
        raise UsageError(f"the level must be between {LEVELS.start} and {LEVELS.stop - 1}")


def default_threads() -> int:
    """Worker threads for compressing and decoding when none are asked for: one per CPU this
    process may run on (its affinity, which a container or `taskset` narrows)."""
    return max(1, len(os.sched_getaffinity(0)))


def require_threads(threads: int | None) -> None:
    """Refuse a worker-thread count no job could use; None is the default."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, got {threads}")


def open_writer(path: str, fmt: str, size: int, level: int,
                threads: int | None = None, encrypt: bool = False) -> ImageWriter:
    """A writer of `fmt` at `path`: a new image, or the continuation of a qcow2 or raw image
    an interrupted rescue left there (a conversion makes sure nothing is there); compressed
    formats compress on `threads` worker threads (default: `default_threads()`). `encrypt`:
    a qcow2 encrypted with LUKS by QEMU, uncompressed (see qemuexport).

    qcow2 and raw take writes in any order; .img.zst only in order (see SequentialWriter).
    """
    require_level(fmt, level)
    require_threads(threads)
    require_encryptable(fmt, encrypt)
    if encrypt:
        from rescue.formats.qemuexport import EncryptedWriter, passphrase_for

        return EncryptedWriter(path, size, passphrase_for(path))
    if fmt == "qcow2":
        from rescue.formats.qcow2 import Qcow2Writer

        return Qcow2Writer(path, size, level=level, threads=threads or default_threads())
    if fmt == "zst":
        from rescue.formats.zstseek import ZstSeekWriter

        return ZstSeekWriter(path, size, level=level, threads=threads or default_threads())
    from rescue.formats.raw import RawWriter

    return RawWriter(path, size)


def read_manifest(path: str, reader: ImageReader) -> Manifest | None:
    """The manifest kept inside the image, or beside a raw image."""
    if holds_manifest(reader):
        data = reader.manifest()
        return Manifest.from_bytes(data, path) if data else None
    return read_sidecar(path)


def store_manifest(writer: ImageWriter, path: str, manifest: Manifest) -> None:
    """Keep the manifest inside the image when its format has room for it, else beside the
    image `path` names; a disk written in place has no room beside it."""
    if keeps_manifest(writer):
        writer.set_manifest(manifest.to_bytes())
    elif not writer.capabilities.device:
        write_sidecar(path, manifest)

