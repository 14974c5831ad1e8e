"""Zstandard seekable format (.img.zst): independent zstd frames plus a seek table.

Layout, as in zstd's contrib/seekable_format/zstd_seekable_compression_format.md (v0.1.0):

    header skippable frame   (ours: marks a file this module started, so an unfinished one is
                              recognised as such)
    zstd frame 0 .. N        (each holds `frame_size` image bytes, compressed on its own, with
                              the zstd content checksum and content size)
    manifest skippable frame (optional: an opaque blob the caller stores with the image)
    seek table skippable frame

Every frame, skippable ones included, has a seek table entry, because the spec defines a frame's
file offset as the sum of the compressed sizes before it; skippable frames have decompressed
size 0. Plain `zstd -d` skips skippable frames, so it turns the file into the raw image.

The default frame size is 1 MiB: a random 4 KiB read then costs one 1 MiB decompression
(about a millisecond), the seek table costs 12 bytes per MiB, and independent frames lose only
a percent or two of ratio against one long zstd stream.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from rescue.errors import DestinationError, FormatError, UsageError
from rescue.formats.base import AbandonableWriter, Capabilities, DamagedData, FdReader

VERSION = 1
SUPPORTED_VERSIONS = (1,)

ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MAGIC = 0x184D2A50  # 0x184D2A50..0x184D2A5F: zstd skips these frames
SKIPPABLE_MAGIC_MASK = 0xFFFFFFF0
SEEK_TABLE_MAGIC = 0x184D2A5E  # skippable frame that holds the seek table (spec)
SEEKABLE_MAGIC = 0x8F92EAB1  # last four bytes of every seekable file (spec)
HEADER_MAGIC = 0x184D2A5A  # our header frame (0x184D2A50 is taken by pzstd)
MANIFEST_MAGIC = 0x184D2A5B  # our manifest frame
HEADER_TAG = b"RESCUEZS"
MANIFEST_TAG = b"RESCUEMF"

CHECKSUM_FLAG = 0x80  # seek table descriptor bit 7: entries carry checksums
RESERVED_BITS = 0x7C  # descriptor bits 6-2: must be zero
MAX_FRAMES = 0x8000000  # limits of the reference implementation, kept for interoperability
MAX_FRAME_SIZE = 0x40000000
MAX_SKIPPABLE_PAYLOAD = 0xFFFFFFFF
ZSTD_BLOCK_MAX = 128 * 1024
DEFAULT_FRAME_SIZE = 1024 * 1024

SKIPPABLE_HEADER = struct.Struct("<II")  # magic u32, payload size u32
HEADER_PAYLOAD = struct.Struct("<8sHH")  # tag 8s, format version u16, reserved u16
ENTRY_WITH_CHECKSUM = struct.Struct("<III")  # compressed u32, decompressed u32, checksum u32
ENTRY_WITHOUT_CHECKSUM = struct.Struct("<II")  # compressed u32, decompressed u32
Entry = tuple[int, int, int]  # a seek table entry: compressed size, decompressed size, checksum
FOOTER = struct.Struct("<IBI")  # number of frames u32, descriptor u8, seekable magic u32

_FASTEST_LEVEL = -131072  # ZSTD_minCLevel(): near-raw blocks, used only to get a checksum


def _xxh64_low32(data: bytes) -> int:
    """Low 32 bits of XXH64(data), the checksum the seek table stores.

    libzstd computes exactly this value as a frame's content checksum, so compressing at the
    fastest level and reading the frame's last four bytes gives it at C speed without another
    dependency. Our own frames carry the checksum already; this serves frames from other writers.
    """
    frame = zstandard.ZstdCompressor(level=_FASTEST_LEVEL, write_checksum=True).compress(data)
    return int.from_bytes(frame[-4:], "little")


EMPTY_CHECKSUM = _xxh64_low32(b"")  # seek table checksum of a skippable frame


def is_zstd(head: bytes) -> bool:
    """Whether a file starting with `head` starts with a zstd frame or a skippable frame."""
    magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
    return magic == ZSTD_MAGIC or (magic is not None
                                   and magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC)


def sniff(head: bytes, tail: bytes) -> bool:
    """Whether a file is a seekable zstd one, from its first and last bytes: it begins with
    our header frame (finished or not: the reader tells which), or ends with the seek table's
    magic (any writer of the format)."""
    ours = SKIPPABLE_HEADER.pack(HEADER_MAGIC, HEADER_PAYLOAD.size) + HEADER_TAG
    return is_zstd(head) and (head.startswith(ours)
                              or tail[-4:] == SEEKABLE_MAGIC.to_bytes(4, "little"))


FRAME_HEADER_MAX = 18  # a zstd frame header's largest size


def frame_span(block_header: Callable[[int], bytes], position: int,
               has_checksum: bool) -> int | None:
    """Bytes a zstd frame takes, from its block headers (`zstd -d` reads the next frame from
    there): walked from `position`, past the frame header; `block_header(offset)` gives the
    frame's 3 bytes at `offset`, fewer past the end of the data (None: cut short)."""
    while len(header := block_header(position)) == 3:
        block = int.from_bytes(header, "little")
        kind, size = block >> 1 & 3, block >> 3
        position += 3 + (1 if kind == 1 else size)  # kind 1: a run of one repeated byte
        if block & 1:
            return position + 4 * has_checksum
    return None


def _skippable_frame(magic: int, payload: bytes) -> bytes:
    return SKIPPABLE_HEADER.pack(magic, len(payload)) + payload


@functools.lru_cache(maxsize=2)
def _zeros(length: int) -> bytes:
    """Zero bytes to compare frames with; frames mostly share one length, so this is reused."""
    return bytes(length)


def _done(frame: bytes) -> Future[bytes]:
    future: Future[bytes] = Future()
    future.set_result(frame)
    return future


class ZstSeekWriter(AbandonableWriter):
    """Streams an image, strictly in order, into a zstd seekable file.

    Frames are compressed by a thread pool (zstandard releases the GIL) while the caller reads
    the next data; at most `2 * threads` frames are in flight, so memory stays bounded, and they
    are written in order. Holes: write zeros, or call `write_zeros` which reuses one compressed
    all-zero frame. A file whose writer died before `close` has no seek table and is reported
    as unfinished by `ZstSeekReader`.
    """

    capabilities = Capabilities(manifest=True, checksums=True, sequential=True, abandon=True)

    def __init__(self, path: str, size: int, *, level: int = 3,
                 frame_size: int = DEFAULT_FRAME_SIZE, threads: int = 2,
                 kept: list[Entry] | None = None) -> None:
        """`kept`: the seek table entries of the frames an unfinished file at `path` begins
        with (its header's first); the file is cut after them and continued."""
        if size < 0:
            raise UsageError(f"image size must not be negative, got {size}")
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise UsageError(f"frame size must be 1..{MAX_FRAME_SIZE} bytes, got {frame_size}")
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        if -(-size // frame_size) + 2 > MAX_FRAMES:
            raise UsageError(f"a {size}-byte image needs more than {MAX_FRAMES} frames of "
                             f"{frame_size} bytes; use a larger frame size")
        self.path = path
        self.size = size
        self.frame_size = frame_size
        self._level = level
        self._position = sum(length for _, length, _ in kept or ())
        self._buffer = bytearray()
        self._pending: deque[tuple[Future[bytes], int]] = deque()
        self._max_pending = 2 * threads
        self._entries: list[Entry] = list(kept or ())
        self._manifest: bytes | None = None
        self._zero_frame: bytes | None = None
        self._local = threading.local()
        self._closed = False
        end = sum(compressed for compressed, _, _ in self._entries)
        try:
            # read-write: an SMB client truncates only a file it may also read
            self._file = open(path, "r+b" if kept else "w+b")  # noqa: SIM115 - the writer's own
            self._file.truncate(end)  # a torn frame, or frames not wanted, are cut off
            self._file.seek(end)
        except OSError as error:
            raise DestinationError(f"cannot create {path}: {error.strerror}") from error
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="zstseek")
        try:
            if not kept:
                self._emit_skippable(HEADER_MAGIC, HEADER_PAYLOAD.pack(HEADER_TAG, VERSION, 0))
        except DestinationError:
            self._shutdown()
            raise

    @property
    def position(self) -> int:
        """Image bytes written so far: where the next write must start."""
        return self._position

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Append `data`, which must start where the previous write ended."""
        view = memoryview(data).cast("B")
        self._check_append(offset, len(view))
        self._append(view)

    def write_zeros(self, length: int) -> None:
        """Append `length` zero bytes cheaply: whole zero frames are compressed only once."""
        self._check_append(self._position, length)
        head = min(length, -len(self._buffer) % self.frame_size)
        self._append(memoryview(bytes(head)))
        whole, tail = divmod(length - head, self.frame_size)
        if whole:
            if self._zero_frame is None:
                self._zero_frame = self._compress(bytes(self.frame_size))
            for _ in range(whole):
                self._queue(_done(self._zero_frame), self.frame_size)
                self._position += self.frame_size
        self._append(memoryview(bytes(tail)))

    def set_manifest(self, data: bytes) -> None:
        """Store an opaque blob in its own skippable frame, written by `close`."""
        if len(data) + len(MANIFEST_TAG) > MAX_SKIPPABLE_PAYLOAD:
            raise UsageError(f"manifest of {len(data)} bytes does not fit a skippable frame")
        self._manifest = bytes(data)

    def sync(self) -> None:
        """Make every byte written so far durable: the partial frame is closed early."""
        self._check_open()
        self._flush_buffer()
        self._drain(0)
        self._fsync()

    def close(self) -> None:
        """Pad the unwritten tail with zeros, then write the manifest and the seek table."""
        if self._closed:
            return
        try:
            self.write_zeros(self.size - self._position)
            self._flush_buffer()
            self._drain(0)
            if self._manifest is not None:
                self._emit_skippable(MANIFEST_MAGIC, MANIFEST_TAG + self._manifest)
            self._write_seek_table()
            self._fsync()
        finally:
            self._shutdown()

    def abandon(self) -> None:
        """Stop without a seek table, leaving a file the reader reports as unfinished."""
        if not self._closed:
            self._shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"{self.path} is already closed")

    def _check_append(self, offset: int, length: int) -> None:
        self._check_open()
        if offset != self._position:
            raise UsageError(f"zstd seekable images are written in order: expected offset "
                             f"{self._position}, got {offset}")
        if length < 0 or offset + length > self.size:
            raise UsageError(f"write of {length} bytes at {offset} goes past the end of the "
                             f"{self.size}-byte image")

    def _append(self, view: memoryview) -> None:
        while view:
            take = min(len(view), self.frame_size - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            self._position += take
            if len(self._buffer) == self.frame_size:
                self._flush_buffer()

    def _flush_buffer(self) -> None:
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            self._queue(self._pool.submit(self._compress, data), len(data))

    def _compress(self, data: bytes | bytearray) -> bytes:
        """Compress one frame; each pool thread keeps its own compressor (they are not shared)."""
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level, write_checksum=True,
                                                  write_content_size=True)
            self._local.compressor = compressor
        return compressor.compress(data)

    def _queue(self, future: Future[bytes], length: int) -> None:
        self._pending.append((future, length))
        self._drain(self._max_pending)

    def _drain(self, keep: int) -> None:
        """Write finished frames in order; wait for the oldest while more than `keep` wait."""
        while self._pending and (len(self._pending) > keep or self._pending[0][0].done()):
            future, length = self._pending.popleft()
            frame = future.result()
            self._emit(frame)
            self._entries.append((len(frame), length, int.from_bytes(frame[-4:], "little")))

    def _emit_skippable(self, magic: int, payload: bytes) -> None:
        frame = _skippable_frame(magic, payload)
        self._emit(frame)
        self._entries.append((len(frame), 0, EMPTY_CHECKSUM))

    def _write_seek_table(self) -> None:
        payload = b"".join(ENTRY_WITH_CHECKSUM.pack(*entry) for entry in self._entries)
        payload += FOOTER.pack(len(self._entries), CHECKSUM_FLAG, SEEKABLE_MAGIC)
        self._emit(_skippable_frame(SEEK_TABLE_MAGIC, payload))

    def _emit(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:
            raise DestinationError(f"cannot write {self.path}: {error.strerror}") from error

    def _fsync(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise DestinationError(f"cannot sync {self.path}: {error.strerror}") from error

    def _shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        try:
            self._file.close()
        except OSError as error:
            raise DestinationError(f"cannot close {self.path}: {error.strerror}") from error


@dataclass(frozen=True)
class FrameInfo:
    """One zstd frame holding image bytes [offset, offset + length)."""

    offset: int
    length: int
    compressed_offset: int
    compressed_size: int
    checksum: int | None  # low 32 bits of XXH64 of the frame's content, if the table has it


class ZstSeekReader(FdReader):
    """Random access to a zstd seekable image, decompressing only the frames a read needs.

    The last two decompressed frames are cached, which serves sequential reads and the
    small back-and-forth reads of file-system code. The cache and the decompressor are guarded
    by one lock, so a reader may serve several threads (a FUSE mount).
    """

    CACHED_FRAMES = 2

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise FormatError(f"cannot open {path}: {error.strerror}") from error
        try:
            self._frames, self._skippable, self._manifest_span = self._parse()
        except OSError as error:
            os.close(self._fd)
            raise FormatError(f"cannot read {path}: {error.strerror}") from error
        except BaseException:
            os.close(self._fd)
            raise
        self._starts = [frame.offset for frame in self._frames]
        self.size = self._frames[-1].offset + self._frames[-1].length if self._frames else 0
        # a seek table from another writer may keep no checksum of the frames
        self.capabilities = Capabilities(manifest=True, checks=True, checksums=all(
            frame.checksum is not None for frame in self._frames))
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def frames(self) -> tuple[FrameInfo, ...]:
        """The frames that hold image bytes, in image order (skippable frames left out)."""
        return self._frames

    def read(self, offset: int, length: int) -> bytes:
        """Image bytes [offset, offset + length), cut short at the end of the image; a frame
        that fails its checks or its read raises DamagedData."""
        if offset < 0 or length < 0:
            raise UsageError(f"cannot read {length} bytes at offset {offset}")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts: list[memoryview] = []
        index = bisect_right(self._starts, offset) - 1
        with self._lock:
            while offset < end:
                frame = self._frames[index]
                stop = min(end, frame.offset + frame.length)
                try:
                    data = self._cached(index)
                except FormatError as error:  # a damaged frame, or the file failed to read
                    raise DamagedData(frame.offset, frame.length, str(error)) from error
                parts.append(memoryview(data)[offset - frame.offset:stop - frame.offset])
                offset = stop
                index += 1
        return b"".join(parts)

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, allocated) runs covering the image.

        Every frame counts as allocated except all-zero ones that are cheap to recognise: a
        frame whose compressed size is no more than zstd needs for run-length blocks (about
        four bytes per 128 KiB) is decompressed and compared with zeros; others are not read.
        A frame that fails to decode counts as allocated, so its damage surfaces on read.
        """
        run_start, run_end, run_allocated = 0, 0, True
        for frame in self._frames:
            allocated = not self._is_zero_frame(frame)
            if allocated != run_allocated and run_end > run_start:
                yield run_start, run_end - run_start, run_allocated
                run_start = frame.offset
            run_end, run_allocated = frame.offset + frame.length, allocated
        if run_end > run_start:
            yield run_start, run_end - run_start, run_allocated

    def manifest(self) -> bytes | None:
        """The blob stored with `ZstSeekWriter.set_manifest`, or None. In a file we wrote,
        every skippable frame past our header is the manifest: one not recognised as such is
        a damaged manifest, not an absent one."""
        if self._manifest_span is None:
            head = self._pread(SKIPPABLE_HEADER.size + HEADER_PAYLOAD.size, 0)
            if len(self._skippable) > 1 and self._check_header(head):
                raise FormatError(f"{self.path}: the manifest frame is damaged")
            return None
        offset, length = self._manifest_span
        return self._pread(length, offset)

    def read_checked(self, offset: int, length: int) -> tuple[bytes, list[tuple[int, int]]]:
        """Image bytes, a frame that fails its checks read as zeros and returned as a damaged
        range (clipped to the request)."""
        end = min(offset + length, self.size)
        parts: list[bytes] = []
        damaged: list[tuple[int, int]] = []
        index = bisect_right(self._starts, offset) - 1
        while offset < end:
            frame = self._frames[index]
            stop = min(end, frame.offset + frame.length)
            try:
                parts.append(self.read(offset, stop - offset))
            except DamagedData:
                parts.append(_zeros(stop - offset))
                damaged.append((offset, stop - offset))
            offset = stop
            index += 1
        return b"".join(parts), damaged

    def check_structure(self) -> tuple[list[tuple[int, int]], list[str]]:
        """The frames as `zstd -d` walks them: each skippable frame's header must give the
        size the seek table gives, and each data frame's header the content size; past a
        frame that disagrees, the table places every later byte wrongly."""
        problems = []
        for offset, size in self._skippable:
            magic, payload = SKIPPABLE_HEADER.unpack(self._pread(SKIPPABLE_HEADER.size, offset))
            if magic & SKIPPABLE_MAGIC_MASK != SKIPPABLE_MAGIC or payload != size - 8:
                problems.append(f"the skippable frame at file offset {offset:#x} is damaged "
                                "(`zstd -d` cannot read past it)")
        for frame in self._frames:
            head = self._pread(min(frame.compressed_size, FRAME_HEADER_MAX),
                               frame.compressed_offset)
            try:
                content = zstandard.frame_content_size(head)  # -1: not recorded
            except zstandard.ZstdError:
                content = -1  # a damaged header: decoding the frame reports it
            if content not in (frame.length, -1):
                return [(frame.offset, self.size - frame.offset)], problems
        return [], problems

    def _pread(self, length: int, offset: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as error:
            raise FormatError(f"cannot read {self.path}: {error.strerror}") from error
        if len(data) != length:
            raise FormatError(f"{self.path} is truncated: cannot read {length} bytes at "
                              f"file offset {offset}")
        return data

    def _parse(self) -> tuple[tuple[FrameInfo, ...], list[tuple[int, int]],
                              tuple[int, int] | None]:
        """Read and cross-check the seek table; return data frames, (file offset, size) of the
        skippable frames and the manifest's span."""
        file_size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, SKIPPABLE_HEADER.size + HEADER_PAYLOAD.size, 0)
        if not is_zstd(head):
            raise FormatError(f"{self.path} is not a zstd file")
        ours = int.from_bytes(head[:4], "little") == HEADER_MAGIC and self._check_header(head)
        table_min = SKIPPABLE_HEADER.size + FOOTER.size
        footer = os.pread(self._fd, FOOTER.size, file_size - FOOTER.size) \
            if file_size >= table_min else b""
        if len(footer) != FOOTER.size or FOOTER.unpack(footer)[2] != SEEKABLE_MAGIC:
            if ours:
                raise FormatError(f"{self.path} is unfinished or truncated: no seek table at "
                                  f"its end (`zstd -d` can still recover its complete frames)")
            raise FormatError(f"{self.path} is a plain zstd file without a seek table; "
                              f"decompress it (`zstd -d`) and convert the raw image to .img.zst")
        count, descriptor, _ = FOOTER.unpack(footer)
        if descriptor & RESERVED_BITS:
            raise FormatError(f"{self.path}: unsupported seek table (descriptor {descriptor:#04x} "
                              f"sets reserved bits)")
        entry = ENTRY_WITH_CHECKSUM if descriptor & CHECKSUM_FLAG else ENTRY_WITHOUT_CHECKSUM
        table_size = table_min + count * entry.size
        if table_size > file_size:
            raise FormatError(f"{self.path}: seek table lists {count} frames, more than the "
                              f"{file_size}-byte file can hold (truncated or damaged)")
        table = self._pread(table_size, file_size - table_size)
        if SKIPPABLE_HEADER.unpack_from(table) != (SEEK_TABLE_MAGIC, table_size - 8):
            raise FormatError(f"{self.path}: the seek table's frame header is damaged")
        frames, skippable, used = self._layout(table[8:8 + count * entry.size], entry)
        data_size = file_size - table_size
        if used != data_size:
            raise FormatError(f"{self.path}: seek table does not match the file size: its frames "
                              f"take {used} bytes, the file holds {data_size} before the table")
        return frames, skippable, self._find_manifest(skippable)

    def _layout(self, entries: bytes, entry: struct.Struct
                ) -> tuple[tuple[FrameInfo, ...], list[tuple[int, int]], int]:
        """Seek table entries as data frames, (offset, size) of empty frames, and their total."""
        frames: list[FrameInfo] = []
        empty: list[tuple[int, int]] = []
        compressed_offset = offset = 0
        for fields in entry.iter_unpack(entries):
            compressed_size, length = fields[0], fields[1]
            checksum = fields[2] if len(fields) == 3 else None
            if length:
                frames.append(FrameInfo(offset, length, compressed_offset, compressed_size,
                                        checksum))
            else:
                empty.append((compressed_offset, compressed_size))
            compressed_offset += compressed_size
            offset += length
        return tuple(frames), empty, compressed_offset

    def _check_header(self, head: bytes) -> bool:
        """Whether the file starts with our header frame, of a version we read."""
        if len(head) < SKIPPABLE_HEADER.size + HEADER_PAYLOAD.size:
            raise FormatError(f"{self.path} is truncated inside its header")
        tag, version, _ = HEADER_PAYLOAD.unpack_from(head, SKIPPABLE_HEADER.size)
        if tag != HEADER_TAG:
            return False
        if version not in SUPPORTED_VERSIONS:
            raise FormatError(f"{self.path} uses image format version {version}; this version "
                              f"of rescue reads {', '.join(map(str, SUPPORTED_VERSIONS))}")
        return True

    def _find_manifest(self, skippable: list[tuple[int, int]]) -> tuple[int, int] | None:
        """(file offset, length) of the manifest blob among the empty frames, if any."""
        prefix = SKIPPABLE_HEADER.size + len(MANIFEST_TAG)
        for offset, size in skippable:
            if size < prefix:
                continue
            head = self._pread(prefix, offset)
            if SKIPPABLE_HEADER.unpack_from(head) == (MANIFEST_MAGIC, size - 8) and \
                    head[8:] == MANIFEST_TAG:
                return offset + prefix, size - prefix
        return None

    def _cached(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is None:
            data = self._decode(self._frames[index])
            self._cache[index] = data
            if len(self._cache) > self.CACHED_FRAMES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return data

    def _decode(self, frame: FrameInfo) -> bytes:
        """Decompress one frame and check it against its zstd checksum and its table entry."""
        raw = self._pread(frame.compressed_size, frame.compressed_offset)
        where = (f"{self.path}: frame for image bytes {frame.offset}-"
                 f"{frame.offset + frame.length - 1} is damaged")
        try:
            with self._lock:
                data = self._decompressor.decompress(raw, max_output_size=frame.length)
            has_checksum = zstandard.get_frame_parameters(raw).has_checksum
        except zstandard.ZstdError as error:
            raise FormatError(f"{where} ({error})") from error
        if len(data) != frame.length:
            raise FormatError(f"{where} (holds {len(data)} bytes, the seek table says "
                              f"{frame.length})")
        span = frame_span(lambda at: raw[at:at + 3], zstandard.frame_header_size(raw),
                          has_checksum)
        if span != len(raw):
            raise FormatError(f"{where} (it does not end where the seek table says)")
        if frame.checksum is not None:
            actual = int.from_bytes(raw[-4:], "little") if has_checksum else _xxh64_low32(data)
            if actual != frame.checksum:
                raise FormatError(f"{where} (checksum {actual:#010x}, the seek table says "
                                  f"{frame.checksum:#010x})")
        return data

    def _is_zero_frame(self, frame: FrameInfo) -> bool:
        run_length_size = 64 + 4 * -(-frame.length // ZSTD_BLOCK_MAX)
        if frame.compressed_size > run_length_size:
            return False
        try:
            data = self._decode(frame)
        except FormatError:
            return False
        return data == _zeros(frame.length)
