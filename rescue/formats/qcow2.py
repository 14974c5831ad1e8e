"""qcow2 images (QEMU's format, docs/interop/qcow2.txt): a sparse, compressed, random-access image.

Writer layout and the rules it keeps:

* Version 3, 16-bit refcounts, `compression_type` zstd (incompatible feature bit 3, as QEMU sets
  it) or zlib (raw deflate with a 4 KiB window, readable by any QEMU).
* Every allocated cluster is stored as a *compressed* cluster, packed byte after byte into host
  clusters. Incompressible data stays a zstd frame of raw blocks (payload stored verbatim, about
  20 bytes of framing), so every cluster carries a checksum: zstd frames their content checksum,
  deflate streams a CRC-32 we append after the stream (QEMU's inflate ignores trailing bytes).
  All-zero clusters are never allocated: holes read as zeros.
* Crash safety by copy-on-write: data, L2 tables, the L1 table, refcount blocks and the refcount
  table only ever go to clusters that the committed image does not use; after an fsync, one
  small header write (well inside one sector) switches to the new metadata, and another fsync
  makes it durable. A kill -9 at any moment leaves either the old or the new image, both exact:
  `qemu-img check` finds neither errors nor leaks. Reopening also rebuilds the refcounts from
  the L1/L2 tables and rewrites whatever differs, so leaks left by other tools vanish too.
* The manifest (an opaque blob) lives in the area past the end of the virtual disk that qcow2
  reserves for VM state: L1 entries beyond the disk map it like any data, so it is counted in
  refcounts (check stays clean), copied by `cp`, and invisible to the guest and to
  `qemu-img convert`. Our header extension records where it is, its length and its CRC-32.

Writes arrive in any order and may cover parts of clusters. Whole clusters go straight to a
thread pool (zstandard and zlib release the GIL); partial clusters are completed in a bounded
set of buffers, seeded with the cluster's current contents, and compressed once complete, when
evicted, or at `sync`. Rewriting a cluster always allocates new space and frees the old.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from heapq import heappop, heappush

import zstandard

from rescue.errors import DestinationError, FormatError, UsageError
from rescue.formats.base import (
    AbandonableWriter,
    Capabilities,
    DamagedData,
    FdReader,
    ImageReader,
)
from rescue.formats.buffers import Buffers
from rescue.formats.manifest import MAX_SIZE as MANIFEST_MAX_SIZE
from rescue.formats.qcow2header import (
    BACKING_FORMAT_EXT,
    COMPRESSION_CODES,
    DEFAULT_CLUSTER_SIZE,
    EXT_END,
    EXTENSION,
    FLAG_DEFLATE_CRC,
    HEADER_LENGTH,
    HEADER_V2,
    HEADER_V3,
    INCOMPAT_COMPRESSION,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    L1_RESERVED,
    L2_RESERVED,
    MAGIC,
    MAX_CLUSTER_BITS,
    MAX_L1_ENTRIES,
    MAX_REFCOUNT,
    MIN_CLUSTER_BITS,
    OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    OFLAG_ZERO,
    REFCOUNT_ORDER,
    RESCUE_EXT,
    RESCUE_EXT_MAGIC,
    RESCUE_EXT_VERSION,
    SECTOR,
    VERSION,
    Geometry,
    Header,
    ceil_div,
    parse_header,
    read_at,
    to_disk,
    to_host,
)


def sniff(head: bytes, tail: bytes) -> bool:
    """Whether a file is a qcow2 image (any writer, any version), from its first bytes."""
    return head.startswith(MAGIC)


def merged_runs(pieces: Iterable[tuple[int, int, bool]], size: int
                ) -> Iterator[tuple[int, int, bool]]:
    """Contiguous (offset, length, allocated) pieces from 0 as the fewest runs up to `size`."""
    start, state = 0, False
    for offset, _, allocated in pieces:
        if allocated != state:
            if offset > start:
                yield start, offset - start, state
            start, state = offset, allocated
    if size > start:
        yield start, size - start, state


class _Image:
    """What reader and writer share: header, L1/L2 lookup, and decoding one cluster."""

    def __init__(self, fd: int, path: str, header: Header | None = None) -> None:
        """Open the image behind `fd`; a writer creating one passes its `header` instead."""
        self._fd = fd
        self.path = path
        self._header = parse_header(fd, path) if header is None else header
        self._geometry = Geometry(self._header.cluster_bits)
        self.size = self._header.size
        self.cluster_size = self._geometry.cluster_size
        self.compression = self._header.compression
        self._l1 = self._read_l1() if self._header.l1_offset else [0] * self._header.l1_size
        self._l2_cache: OrderedDict[int, array] = OrderedDict()
        self._l2_cache_limit = 64
        self._zeros = bytes(self.cluster_size)  # what an unallocated cluster reads as
        self._local = threading.local()  # a zstd context each: they are not thread-safe
        self.backing: ImageReader | None = None  # an overlay's older image, opened by its owner

    def _read_l1(self) -> list[int]:
        count = self._header.l1_size
        raw = read_at(self._fd, count * 8, self._header.l1_offset, "the L1 table") if count else b""
        return [entry & OFFSET_MASK for entry in to_host(raw, "Q")]

    def _l2_table(self, l1_index: int) -> array | None:
        """The L2 table behind an L1 entry (cached), or None if that range is a hole."""
        table = self._l2_cache.get(l1_index)
        if table is not None:
            self._l2_cache.move_to_end(l1_index)
            return table
        if l1_index >= len(self._l1) or not self._l1[l1_index]:
            return None
        offset = self._l1[l1_index]
        if offset % self.cluster_size:
            raise FormatError(f"{self.path}: qcow2 L2 table offset 0x{offset:x} is not aligned")
        table = to_host(read_at(self._fd, self.cluster_size, offset, "an L2 table"), "Q")
        self._l2_cache[l1_index] = table
        if len(self._l2_cache) > self._l2_cache_limit:
            self._l2_cache.popitem(last=False)
        return table

    def _entry(self, cluster_index: int) -> int:
        table = self._l2_table(cluster_index // self._geometry.l2_entries)
        return 0 if table is None else table[cluster_index % self._geometry.l2_entries]

    def _is_data(self, entry: int) -> bool:
        """Does this L2 entry hold data (as opposed to a hole or a zero cluster)?"""
        if entry & OFLAG_COMPRESSED:
            return True
        if self._header.version >= 3 and entry & OFLAG_ZERO:
            return False
        return bool(entry & OFFSET_MASK)

    def _unallocated(self, entry: int) -> bool:
        """An entry that says nothing of its cluster: in an overlay, the backing file's bytes
        show through (a zero cluster does not let them)."""
        return not self._is_data(entry) and not (self._header.version >= 3 and entry & OFLAG_ZERO)

    def _decode(self, entry: int, logical: int) -> bytes | None:
        """The cluster's bytes, or None when it reads as zeros; damage raises FormatError."""
        if not self._is_data(entry):
            return None
        where = f"cluster at logical offset {logical} (length {self.cluster_size})"
        if self._header.ours and not entry & OFLAG_COMPRESSED:
            raise FormatError(f"{self.path}: {where} is stored without its checksum")
        if entry & OFLAG_COMPRESSED:
            offset, length = self._geometry.compressed_range(entry)
            try:
                payload = os.pread(self._fd, length, offset)
            except OSError as error:
                raise FormatError(f"{self.path}: cannot read {where}: {error.strerror}") from error
            if len(payload) + SECTOR <= length:  # the last sector may legitimately be short
                raise FormatError(f"{self.path}: truncated qcow2 image: {where} lies past the end "
                                  "of the file")
            return self._decompress(payload, where)
        offset = entry & OFFSET_MASK
        if offset % self.cluster_size:
            raise FormatError(f"{self.path}: {where} has an unaligned host offset 0x{offset:x}")
        return read_at(self._fd, self.cluster_size, offset, where)

    def _decompress(self, payload: bytes, where: str) -> bytes:
        try:
            if self.compression == "zstd":
                if self._header.ours and not zstandard.get_frame_parameters(
                        payload).has_checksum:
                    raise FormatError("its zstd frame lost its checksum flag")
                data = self._zstd().decompress(payload, max_output_size=self.cluster_size)
            else:
                inflater = zlib.decompressobj(-15)
                data = inflater.decompress(payload, self.cluster_size)
                if not inflater.eof:  # every writer ends the stream; QEMU does not check
                    raise FormatError("the deflate stream does not end")
                if self._header.flags & FLAG_DEFLATE_CRC:
                    trailer = inflater.unused_data[:4]
                    if len(trailer) < 4 or int.from_bytes(trailer, "big") != zlib.crc32(data):
                        raise FormatError("CRC-32 mismatch")
        except (zstandard.ZstdError, zlib.error, FormatError) as error:
            raise FormatError(f"{self.path}: damaged compressed {where}: {error}") from error
        if len(data) != self.cluster_size:
            raise FormatError(f"{self.path}: damaged compressed {where}: it holds "
                              f"{len(data)} bytes")
        return data

    def _zstd(self) -> zstandard.ZstdDecompressor:
        """This thread's decompression context, kept: a new one per cluster cost a third of
        the decompression itself."""
        context = getattr(self._local, "zstd", None)
        if context is None:
            context = self._local.zstd = zstandard.ZstdDecompressor()
        return context

    def _read_logical(self, offset: int, length: int) -> bytes:
        """Bytes of the logical address space, the VM-state area past the disk included."""
        out = bytearray(length)
        position = 0
        while position < length:
            index, within = divmod(offset + position, self.cluster_size)
            count = min(self.cluster_size - within, length - position)
            data = self._cluster_bytes(index)
            if data is not None:
                out[position:position + count] = data[within:within + count]
            position += count
        return bytes(out)

    def _cluster_bytes(self, index: int) -> bytes | None:
        """The cluster's bytes (None: zeros); inside the disk, an unallocated cluster of an
        overlay reads as its backing file (the VM-state area past the disk is the image's own)."""
        entry, logical = self._entry(index), index * self.cluster_size
        if self.backing is None or logical >= self.size or not self._unallocated(entry):
            return self._decode(entry, logical)
        try:
            return self.backing.read(logical, self.cluster_size).ljust(self.cluster_size, b"\0")
        except DamagedData as error:
            raise FormatError(f"{self.path}: its backing file is damaged there: {error}") from error

    def _refblock_offsets(self) -> list[int]:
        """Where the refcount blocks are, from the refcount table (trailing empty slots cut)."""
        header = self._header
        length = header.refcount_table_clusters * self.cluster_size
        if header.refcount_table_offset + length > os.fstat(self._fd).st_size:
            raise FormatError(f"{self.path}: truncated qcow2 image: the refcount table at offset "
                              f"{header.refcount_table_offset} lies past the end of the file")
        table = read_at(self._fd, length, header.refcount_table_offset, "the refcount table")
        offsets = [entry & OFFSET_MASK for entry in to_host(table, "Q")]
        while offsets and not offsets[-1]:
            offsets.pop()
        return offsets

    def _references(self, refblocks: list[int]) -> Iterator[tuple[int, int, int | None]]:
        """(host offset, length, logical cluster index, None for metadata) of everything the
        header, L1, L2 and refcount tables reference: what the refcounts must count."""
        header, cs, geometry = self._header, self.cluster_size, self._geometry
        yield 0, cs, None
        if header.l1_size:
            yield header.l1_offset, header.l1_size * 8, None
        yield header.refcount_table_offset, header.refcount_table_clusters * cs, None
        for offset in refblocks:
            if offset:
                yield offset, cs, None
        for l1_index, l2_offset in enumerate(self._l1):
            if not l2_offset:
                continue
            yield l2_offset, cs, None
            for slot, entry in enumerate(self._l2_table(l1_index) or ()):
                index = l1_index * geometry.l2_entries + slot
                if entry & OFLAG_COMPRESSED:
                    yield *geometry.compressed_range(entry), index
                elif entry & OFFSET_MASK:
                    yield entry & OFFSET_MASK, cs, index

    def _manifest(self) -> bytes | None:
        header = self._header
        if not header.ours or not header.manifest_length:
            return None
        if header.manifest_offset < self.size:
            raise FormatError(f"{self.path}: manifest offset lies inside the disk")
        if header.manifest_length > MANIFEST_MAX_SIZE:
            raise FormatError(f"{self.path}: the image manifest is damaged (its length "
                              f"{header.manifest_length} is impossible)")
        data = self._read_logical(header.manifest_offset, header.manifest_length)
        if zlib.crc32(data) != header.manifest_crc:
            raise FormatError(f"{self.path}: the image manifest is damaged (CRC-32 mismatch)")
        return data


class Qcow2Reader(_Image, FdReader):
    """Random-access view of a qcow2 image (ours or QEMU's, v2 or v3, zlib or zstd)."""

    # an overlay alone reads its unallocated clusters as zeros, not as its older image: only a
    # reader that opens the backing chain (qcow2chain) may open one
    reads_backing_chain = False

    def __init__(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise FormatError(f"cannot open {path}: {error.strerror}") from error
        try:
            super().__init__(fd, path)
            if self._header.backing_file and not self.reads_backing_chain:
                raise FormatError(f"{path} has a backing file ({self._header.backing_file}); "
                                  "it is read only with its backing chain")
            self._check_tables_in_file()
        except BaseException:
            os.close(fd)
            raise
        self._recent: OrderedDict[int, bytes | None] = OrderedDict()
        # our clusters carry checksums (zstd content checksums, or our CRC-32 after deflate);
        # other writers' clusters can only be checked for decoding
        self.capabilities = Capabilities(manifest=True, checks=True,
                                         checksums=self._header.ours, fills=True)

    def _check_tables_in_file(self) -> None:
        """Refuse a truncated copy when it is opened: the refcount table, its blocks and the
        L2 tables must lie inside the file. A cut that spares them loses only data clusters,
        which reads and `verify` report as damaged."""
        header, cs = self._header, self.cluster_size
        file_size = os.fstat(self._fd).st_size

        def check(offset: int, length: int, what: str) -> None:
            if offset + length > file_size:
                raise FormatError(f"{self.path}: truncated qcow2 image: {what} at offset "
                                  f"{offset} lies past the end of the file")

        length = header.refcount_table_clusters * cs
        check(header.refcount_table_offset, length, "the refcount table")
        table = read_at(self._fd, length, header.refcount_table_offset, "the refcount table")
        for offset in to_host(table, "Q"):
            if offset & OFFSET_MASK:
                check(offset & OFFSET_MASK, cs, "a refcount block")
        for offset in self._l1:
            if offset:
                check(offset, cs, "an L2 table")

    def _cluster_bytes(self, index: int) -> bytes | None:
        """Decoded clusters are kept briefly: small sequential reads hit one cluster often."""
        if index in self._recent:
            return self._recent[index]
        data = super()._cluster_bytes(index)
        self._recent[index] = data
        if len(self._recent) > 8:
            self._recent.popitem(last=False)
        return data

    def details(self) -> dict[str, object]:
        return {"cluster_size": self.cluster_size, "compression": self.compression}

    def read(self, offset: int, length: int) -> bytes:
        """Logical bytes; holes read as zeros; a read past the end is cut short; a cluster
        that fails to decode or to read raises DamagedData."""
        if offset < 0 or length < 0:
            raise UsageError(f"invalid read of {length} bytes at offset {offset}")
        length = max(0, min(length, self.size - offset))
        try:
            return self._read_logical(offset, length)
        except FormatError as error:  # a damaged cluster or table, or the file failed to read
            raise DamagedData(offset, length, str(error)) from error

    def extents(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, allocated) runs covering [0, size); zero clusters count as holes."""
        return merged_runs(((offset, length, self._is_data(entry))
                            for offset, length, entry in self._cluster_states()), self.size)

    def _cluster_states(self) -> Iterator[tuple[int, int, int]]:
        """(offset, length, L2 entry) of every cluster of the disk; whole holes of L2 size
        at once (entry 0)."""
        geometry = self._geometry
        for l1_index in range(ceil_div(self.size, geometry.l2_coverage)):
            base = l1_index * geometry.l2_coverage
            table = self._l2_table(l1_index)
            if table is None:
                yield base, min(geometry.l2_coverage, self.size - base), 0
                continue
            for i, entry in enumerate(table):
                offset = base + i * self.cluster_size
                if offset >= self.size:
                    break
                yield offset, min(self.cluster_size, self.size - offset), entry

    def read_checked(self, offset: int, length: int) -> tuple[bytes, list[tuple[int, int]]]:
        """Logical bytes, a cluster that fails to decode read as zeros and returned as a
        damaged range (clipped to the request)."""
        out = bytearray(max(0, min(length, self.size - offset)))
        damaged = self.read_checked_into(offset, memoryview(out))
        return bytes(out), damaged

    def read_checked_into(self, offset: int, view: memoryview) -> list[tuple[int, int]]:
        """`read_checked` into `view` (as much of it as the image holds), allocating
        nothing: a restore's decoders fill their pooled buffers straight from each
        cluster's decompressed bytes, where a fresh buffer and a copy of it cost as much as
        the decompression."""
        length = max(0, min(len(view), self.size - offset))
        damaged: list[tuple[int, int]] = []
        position = 0
        while position < length:
            index, within = divmod(offset + position, self.cluster_size)
            count = min(self.cluster_size - within, length - position)
            try:
                data = self._cluster_bytes(index)
            except FormatError:
                if damaged and sum(damaged[-1]) == offset + position:
                    damaged[-1] = (damaged[-1][0], damaged[-1][1] + count)
                else:
                    damaged.append((offset + position, count))
                data = None
            if data is None:
                view[position:position + count] = self._zeros[:count]
            else:
                view[position:position + count] = memoryview(data)[within:within + count]
            position += count
        return damaged

    def check_structure(self) -> tuple[list[tuple[int, int]], list[str]]:
        """What `qemu-img check` checks, from the tables alone: every reference recounted and
        compared with the stored refcounts, and the flags of every L1 and L2 entry.

        A cluster referenced more often than its refcount says (an entry pointing into other
        data, into metadata or past the end of the file) makes every logical cluster that
        references it damaged; a refcount higher than the references (a lost entry, a leak)
        and a bad L1 entry are damage without a logical place."""
        cs = self.cluster_size
        file_size = os.fstat(self._fd).st_size
        refblocks = self._refblock_offsets()
        stored = self._stored_refcounts(refblocks, ceil_div(file_size, cs))
        counts = array("I", bytes(4 * len(stored)))
        flagged: set[int] = set()
        problems: list[str] = []
        for offset, length, index in self._references(refblocks):
            first, last = offset // cs, (offset + length - 1) // cs
            if offset + length > file_size + (0 if index is None else SECTOR - 1):
                if index is None:
                    problems.append(f"metadata at file offset {offset:#x} lies past the end")
                else:
                    flagged.add(index)
                continue
            for cluster in range(first, min(last, len(counts) - 1) + 1):
                counts[cluster] += 1
            if index is not None and self._bad_flags(self._entry(index), stored):
                flagged.add(index)
        if counts != stored:
            over = {c for c in range(len(counts)) if counts[c] > stored[c]}
            under = sum(counts[c] < stored[c] for c in range(len(counts)))
            if under:
                problems.append(f"{under} clusters have refcounts higher than their references "
                                "(an entry lost, or leaked clusters)")
            for offset, length, index in self._references(refblocks):
                if index is not None and not over.isdisjoint(
                        range(offset // cs, (offset + length - 1) // cs + 1)):
                    flagged.add(index)
            if over and not flagged:
                problems.append(f"{len(over)} metadata clusters have refcounts lower than "
                                "their references")
        problems += self._l1_problems(stored)
        return self._ranges(flagged, problems), problems

    def _stored_refcounts(self, refblocks: list[int], clusters: int) -> array:
        """The refcounts the image stores for its first `clusters` host clusters."""
        bits = 1 << self._header.refcount_order
        typecode = {8: "B", 16: "H", 32: "I", 64: "Q"}.get(bits)
        if typecode is None:
            raise FormatError(f"{self.path}: {bits}-bit refcounts cannot be checked")
        per_block = self.cluster_size * 8 // bits
        stored = array("I", bytes(4 * clusters))
        for block, offset in enumerate(refblocks):
            if offset and block * per_block < clusters:
                raw = read_at(self._fd, self.cluster_size, offset, "a refcount block")
                values = to_host(raw, typecode)[:clusters - block * per_block]
                stored[block * per_block:block * per_block + len(values)] = array(
                    "I", (min(v, 0xFFFFFFFF) for v in values))
        return stored

    def _bad_flags(self, entry: int, stored: array) -> bool:
        """Flags `qemu-img check` calls corruption: the copied flag on a compressed cluster,
        or on a data cluster whose refcount is not one (and missing where it is); reserved
        bits."""
        if entry & OFLAG_COMPRESSED:
            return bool(entry & OFLAG_COPIED)
        cluster = (entry & OFFSET_MASK) // self.cluster_size
        refcount = stored[cluster] if cluster < len(stored) else 0
        return bool(entry & L2_RESERVED) or bool(entry & OFLAG_COPIED) != (refcount == 1)

    def _l1_problems(self, stored: array) -> list[str]:
        raw = read_at(self._fd, self._header.l1_size * 8, self._header.l1_offset, "the L1 table")
        problems = []
        for index, entry in enumerate(to_host(raw, "Q")):
            cluster = (entry & OFFSET_MASK) // self.cluster_size
            refcount = stored[cluster] if cluster < len(stored) else 0
            if entry & L1_RESERVED or (entry and bool(entry & OFLAG_COPIED) != (refcount == 1)):
                problems.append(f"L1 entry {index} has wrong flags")
        return problems

    def _ranges(self, flagged: set[int], problems: list[str]) -> list[tuple[int, int]]:
        """Flagged logical clusters as merged ranges; those past the disk hold the manifest."""
        ranges: list[tuple[int, int]] = []
        for index in sorted(flagged):
            offset = index * self.cluster_size
            if offset >= self.size:
                problems.append("the manifest's clusters disagree with the refcounts")
                break
            length = min(self.cluster_size, self.size - offset)
            if ranges and sum(ranges[-1]) == offset:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
            else:
                ranges.append((offset, length))
        return ranges

    def manifest(self) -> bytes | None:
        """The blob stored with `Qcow2Writer.set_manifest`, or None."""
        return self._manifest()


@dataclass
class _Partial:
    """A cluster being completed by several writes; seeded with its current contents."""

    buffer: bytearray
    sectors: int = 0  # bit per 512-byte sector written since the buffer was made
    dirty: bool = False  # changed since last handed to the compressors


@dataclass(frozen=True)
class Backing:
    """The older image an overlay is written over: its name as the header records it, and
    how to open it (each compressing thread opens its own: a reader is not thread-safe)."""

    name: str
    open: Callable[[], ImageReader]


# (first logical cluster index, raw bytes of whole clusters: a buffer of `_buffers`, or bytes)
_Job = list[tuple[int, bytes | memoryview]]
# (logical cluster index, stored payload, or the L2 entry of a cluster that needs none)
_Result = list[tuple[int, bytes | int]]


class Qcow2Writer(_Image, AbandonableWriter):
    """Random-access qcow2 writer with crash-safe checkpoints (see the module docstring).

    `Qcow2Writer(path, size)` creates a new image, or, when `path` already holds an image this
    module wrote, reopens it to continue. A reopened image keeps its own cluster size and
    compression; `size` must match it. With `backing`, the image is an overlay: a cluster equal
    to the backing file's stays unallocated, one that became zeros is a zero cluster.
    """

    capabilities = Capabilities(manifest=True, checksums=True, abandon=True)

    def __init__(self, path: str, size: int, *, cluster_size: int = DEFAULT_CLUSTER_SIZE,
                 compression: str = "zstd", level: int = 3, threads: int = 2,
                 backing: Backing | None = None) -> None:
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        self._level = level
        self._local = threading.local()
        self._closed = False
        self._l2_dirty: dict[int, array] = {}  # changed L2 tables, kept until the next commit
        self._backing = backing
        self._backing_readers: list[ImageReader] = []
        self._backing_lock = threading.Lock()
        if os.path.exists(path) and os.path.getsize(path) > 0:
            self._reopen(path, size)
        else:
            self._create(path, size, cluster_size, compression)
        self._disk_clusters = ceil_div(self.size, self.cluster_size)
        self.backing = self._thread_backing()
        self._zero = bytes(self.cluster_size)
        self._all_sectors = (1 << (self.cluster_size // SECTOR)) - 1
        self._batch = max(1, (1 << 20) // self.cluster_size)
        self._max_pending = 4 * threads
        self._max_partials = max(16, (32 << 20) // self.cluster_size)
        self._partials: OrderedDict[int, _Partial] = OrderedDict()
        self._inflight: dict[int, tuple[int, bytes | memoryview]] = {}  # cluster: its run
        self._buffers = Buffers()
        self._pending: deque[tuple[Future[_Result], _Job]] = deque()
        self._manifest_pending: bytes | None = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="qcow2")

    # --- opening ---------------------------------------------------------------------------

    def _create(self, path: str, size: int, cluster_size: int, compression: str) -> None:
        """Build the empty image beside `path` and rename it into place, so a crash while
        creating never leaves a half-made file under the real name."""
        cluster_bits = cluster_size.bit_length() - 1
        if cluster_size != 1 << cluster_bits or not (
                MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS):
            raise UsageError(f"cluster size must be a power of two from {1 << MIN_CLUSTER_BITS} "
                             f"to {1 << MAX_CLUSTER_BITS} bytes, got {cluster_size}")
        if compression not in COMPRESSION_CODES:
            raise UsageError(f"compression must be zstd or zlib, got {compression!r}")
        if size < 0 or size % SECTOR:
            raise UsageError(f"image size must be a multiple of {SECTOR} bytes, got {size}")
        geometry = Geometry(cluster_bits)
        l1_size = ceil_div(size, geometry.l2_coverage)
        if l1_size > MAX_L1_ENTRIES:
            raise UsageError(f"{size} bytes is too large for {cluster_size}-byte clusters")
        header = Header(version=VERSION, cluster_bits=cluster_bits, size=size, l1_size=l1_size,
                         l1_offset=0, refcount_table_offset=0, refcount_table_clusters=0,
                         nb_snapshots=0, incompatible=0, refcount_order=REFCOUNT_ORDER,
                         compression=compression, ours=True,
                         flags=FLAG_DEFLATE_CRC if compression == "zlib" else 0,
                         backing_file=self._backing.name if self._backing else "",
                         backing_format="qcow2" if self._backing else "")
        part = path + ".part"
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise DestinationError(f"cannot create {path}: {error.strerror}") from error
        try:
            super().__init__(fd, path, header)
            self._l2_cache_limit = 256
            self._init_allocation(array("H", [1]), array("H", [0]))  # cluster 0: the header
            self._refblocks: list[int] = []
            self._reftable = (0, 0)
            self._l1_location = (0, 0)
            self._commit()
            os.close(fd)  # renamed closed: an SMB share refuses to rename an open file
            fd = -1
            os.rename(part, path)
            self._fd = fd = os.open(path, os.O_RDWR)
            self._fsync_directory(path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise

    def _reopen(self, path: str, size: int) -> None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as error:
            raise DestinationError(f"cannot open {path}: {error.strerror}") from error
        try:
            if os.pread(fd, len(MAGIC), 0) != MAGIC:
                raise FormatError(f"{path} exists and is not an image this program wrote; "
                                  "refusing to overwrite it")
            super().__init__(fd, path)
            self._l2_cache_limit = 256
            header = self._header
            if not header.ours:
                raise FormatError(f"{path} exists and is not an image this program wrote; "
                                  "refusing to overwrite it")
            problems = [text for present, text in (
                (header.version != VERSION, f"qcow2 version {header.version}"),
                (header.nb_snapshots, "internal snapshots"),
                (header.refcount_order != REFCOUNT_ORDER, "refcounts that are not 16-bit"),
                (header.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT),
                 "the dirty or corrupt flag set")) if present]
            if problems:
                raise FormatError(f"{path} cannot be continued: it has {problems[0]}")
            if size != header.size:
                raise FormatError(f"{path} holds a {header.size}-byte image, not {size} bytes")
            self._check_same_backing(path)
            self._rebuild_refcounts()
        except BaseException:
            os.close(fd)
            raise

    def _check_same_backing(self, path: str) -> None:
        """An image continues over the backing file it was begun over, or over none."""
        begun, given = self._header.backing_file, self._backing.name if self._backing else ""
        if begun == given:
            return
        if not given:
            raise FormatError(f"{path} is an incremental image over {begun}; continue it "
                              f"with --base {begun}")
        if not begun:
            raise FormatError(f"{path} was begun as a full image; continue it without --base")
        raise FormatError(f"{path} was begun over {begun}, not {given}")

    def _init_allocation(self, refcounts: array, committed: array) -> None:
        """Allocation state: a cluster is reusable only when neither the image in memory nor
        the committed image on disk uses it, so a crash never finds committed data overwritten."""
        self._refcounts = refcounts
        self._committed = committed
        self._free = [c for c in range(len(refcounts)) if not refcounts[c] and not committed[c]]
        self._released: list[int] = []  # free in memory, still used by the committed image
        self._dirty_blocks: set[int] = set()
        self._l1_dirty = False
        self._header_dirty = False
        self._cursor: int | None = None  # where the next compressed payload may be appended

    def _rebuild_refcounts(self) -> None:
        """Recount every reference from the header, L1 and L2 tables; refcount blocks that
        disagree (leaks from an interrupted foreign writer, say) are rewritten at the next sync."""
        header, geometry, cs = self._header, self._geometry, self.cluster_size
        file_size = os.fstat(self._fd).st_size
        counts = array("H", bytes(2 * ceil_div(file_size, cs)))

        def count(offset: int, length: int, what: str) -> None:
            if offset + length > file_size + cs:
                raise FormatError(f"{self.path}: {what} at offset {offset} lies past the end "
                                  "of the file")
            for cluster in range(offset // cs, (offset + length - 1) // cs + 1):
                if cluster >= len(counts):
                    counts.extend(bytes(2 * (cluster + 1 - len(counts))))
                counts[cluster] += 1

        self._refblocks = self._refblock_offsets()
        for offset, length, index in self._references(self._refblocks):
            count(offset, length, "metadata" if index is None else "compressed data")
        self._reftable = (header.refcount_table_offset, header.refcount_table_clusters)
        self._l1_location = (header.l1_offset, ceil_div(header.l1_size * 8, cs))
        self._init_allocation(counts, array("H", counts))
        entries = geometry.refblock_entries
        for block in range(ceil_div(len(counts), entries)):
            mine = self._refblock_bytes(block)
            offset = self._refblocks[block] if block < len(self._refblocks) else 0
            on_disk = read_at(self._fd, cs, offset, "a refcount block") if offset else bytes(cs)
            if mine != on_disk:
                self._dirty_blocks.add(block)

    # --- writing ---------------------------------------------------------------------------

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` for logical `offset`; copies it, so the caller may reuse its buffer."""
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise UsageError(f"write of {len(view)} bytes at {offset} is outside the "
                             f"{self.size}-byte image")
        self._check_open()
        self._write_logical(offset, view)

    def _write_logical(self, offset: int, view: memoryview) -> None:
        """Runs of whole clusters are copied once and handed to the compressors as one job,
        which tell zeros from data themselves: no per-cluster work on the writing thread.
        Pieces of clusters are completed first (`_write_partial`)."""
        cs = self.cluster_size
        position = 0
        while position < len(view):
            index, within = divmod(offset + position, cs)
            whole = min((len(view) - position) // cs, self._batch)
            if within or not whole or index in self._partials:
                count = min(cs - within, len(view) - position)
                self._write_partial(index, within, view[position:position + count])
                position += count
                continue
            if self._partials:  # the run stops before a cluster being completed
                whole = next((n for n in range(1, whole) if index + n in self._partials),
                             whole)
            self._submit([(index, self._buffers.copy(view[position:position + whole * cs]))])
            position += whole * cs

    def _write_partial(self, index: int, within: int, piece: memoryview) -> None:
        partial = self._partials.get(index)
        if partial is None:
            if len(self._partials) >= self._max_partials:
                self._evict_partial()
            partial = _Partial(bytearray(self._current(index)))
            self._partials[index] = partial
        else:
            self._partials.move_to_end(index)
        partial.buffer[within:within + len(piece)] = piece
        first, last = within // SECTOR, (within + len(piece) - 1) // SECTOR
        partial.sectors |= ((1 << (last - first + 1)) - 1) << first
        partial.dirty = True
        if partial.sectors == self._all_sectors:
            del self._partials[index]
            self._submit([(index, bytes(partial.buffer))])

    def _evict_partial(self) -> None:
        """Memory stays bounded: the least recently touched partial cluster is stored as is;
        a later write to it reads it back."""
        index, partial = self._partials.popitem(last=False)
        if partial.dirty:
            self._submit([(index, bytes(partial.buffer))])

    def _current(self, index: int) -> bytes | memoryview:
        """The cluster's latest contents: queued for compression, or as stored."""
        queued = self._inflight.get(index)
        if queued is not None:
            at = (index - queued[0]) * self.cluster_size
            return queued[1][at:at + self.cluster_size]
        return self._cluster_bytes(index) or self._zero

    def set_manifest(self, data: bytes) -> None:
        """Store an opaque blob with the image; it becomes durable at the next `sync`."""
        self._check_open()
        if len(data) > MANIFEST_MAX_SIZE:
            raise UsageError(f"a manifest of {len(data)} bytes is too large to store")
        self._manifest_pending = bytes(data)

    def _store_manifest(self, data: bytes) -> None:
        """Write the blob past the disk end (the VM-state area), zeroing the old one's rest."""
        header = self._header
        offset = ceil_div(self.size, self._geometry.l2_coverage) * self._geometry.l2_coverage
        span = max(len(data), header.manifest_length)
        span = ceil_div(span, self.cluster_size) * self.cluster_size
        self._write_logical(offset, memoryview(data + bytes(span - len(data))))
        header.manifest_offset, header.manifest_length = offset, len(data)
        header.manifest_crc = zlib.crc32(data)
        self._header_dirty = True

    # --- compression -----------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        for run in job:
            self._inflight.update(dict.fromkeys(self._run_indexes(run), run))
        self._pending.append((self._pool.submit(self._compress_job, job), job))
        self._reap(self._max_pending)

    def _run_indexes(self, run: tuple[int, bytes | memoryview]) -> range:
        index, data = run
        return range(index, index + len(data) // self.cluster_size)

    def _compress_job(self, job: _Job) -> _Result:
        """Runs in a pool thread: each cluster of each run compressed (the codecs let go of
        the GIL), unless it needs no payload (`_entry_without_payload`)."""
        compress, cs, backing = self._codec(), self.cluster_size, self._thread_backing()
        results: _Result = []
        for index, data in job:
            view = memoryview(data)
            for at in range(0, len(data), cs):
                piece, cluster = view[at:at + cs], index + at // cs
                entry = self._entry_without_payload(cluster, piece, backing)
                results.append((cluster, compress(piece) if entry is None else entry))
        return results

    def _entry_without_payload(self, index: int, piece: memoryview,
                               backing: ImageReader | None) -> int | None:
        """The L2 entry of a cluster stored without data, or None: it must be stored. Zeros
        are a hole; in an overlay, bytes equal to the backing file's are a hole (they show
        through) and zeros over other bytes a zero cluster."""
        zeros = self._zero.startswith(piece)
        if backing is None or index >= self._disk_clusters:
            return 0 if zeros else None
        try:
            below = backing.read(index * self.cluster_size, self.cluster_size)
        except DamagedData:
            below = None  # a damaged base cluster is never inherited
        if below is not None and piece[:len(below)] == below and not any(piece[len(below):]):
            return 0
        return OFLAG_ZERO if zeros else None

    def _thread_backing(self) -> ImageReader | None:
        """This thread's reader of the backing file, opened on first use."""
        if self._backing is None:
            return None
        reader: ImageReader | None = getattr(self._local, "backing", None)
        if reader is None:
            reader = self._local.backing = self._backing.open()
            with self._backing_lock:
                self._backing_readers.append(reader)
        return reader

    def _codec(self) -> Callable[[bytes | memoryview], bytes]:
        """This thread's compressor (zstandard compressors must not be shared by threads)."""
        codec = getattr(self._local, "codec", None)
        if codec is None:
            if self.compression == "zstd":
                codec = zstandard.ZstdCompressor(level=self._level, write_checksum=True).compress
            else:
                level = self._level

                def codec(raw: bytes | memoryview) -> bytes:
                    deflater = zlib.compressobj(level, zlib.DEFLATED, -12, 9)
                    crc = zlib.crc32(raw).to_bytes(4, "big")
                    return deflater.compress(raw) + deflater.flush() + crc
            self._local.codec = codec
        return codec

    def _reap(self, keep: int) -> None:
        """Store finished jobs in submission order (so a later write of a cluster wins);
        wait while more than `keep` are pending, which bounds the memory in flight."""
        while self._pending and (len(self._pending) > keep or self._pending[0][0].done()):
            future, job = self._pending.popleft()
            results = future.result()
            for run in job:
                for index in self._run_indexes(run):
                    if self._inflight.get(index) is run:
                        del self._inflight[index]
                self._buffers.give(run[1])
            self._store(results)

    def _store(self, results: _Result) -> None:
        """Point each cluster at its new payload (written to fresh space) and free the old."""
        writes: list[tuple[int, list[bytes]]] = []  # runs of payloads that are contiguous
        for index, payload in results:
            old = self._entry(index)
            if isinstance(payload, int) and payload == old:
                continue
            table = self._l2_for_write(index // self._geometry.l2_entries)
            if isinstance(payload, int):
                new = payload
            else:
                offset = self._place(len(payload))
                new = self._geometry.compressed_entry(offset, len(payload))
                if writes and writes[-1][0] + sum(map(len, writes[-1][1])) == offset:
                    writes[-1][1].append(payload)
                else:
                    writes.append((offset, [payload]))
            table[index % self._geometry.l2_entries] = new
            if old:
                self._release_entry(old)
        for offset, parts in writes:
            self._pwrite(offset, *parts)

    # --- allocation ------------------------------------------------------------------------

    def _l2_table(self, l1_index: int) -> array | None:
        table = self._l2_dirty.get(l1_index)
        return table if table is not None else super()._l2_table(l1_index)

    def _l2_for_write(self, l1_index: int) -> array:
        table = self._l2_dirty.get(l1_index)
        if table is None:
            if l1_index >= len(self._l1):
                self._l1.extend([0] * (l1_index + 1 - len(self._l1)))
            table = self._l2_table(l1_index) or array("Q", bytes(self.cluster_size))
            self._l2_cache.pop(l1_index, None)
            self._l2_dirty[l1_index] = table
        return table

    def _is_free(self, cluster: int) -> bool:
        return cluster >= len(self._refcounts) or not (
            self._refcounts[cluster] or self._committed[cluster])

    def _incref(self, cluster: int) -> None:
        if cluster >= len(self._refcounts):
            grow = bytes(2 * (cluster + 1 - len(self._refcounts)))
            self._refcounts.frombytes(grow)
            self._committed.frombytes(grow)
        self._refcounts[cluster] += 1
        self._dirty_blocks.add(cluster // self._geometry.refblock_entries)

    def _decref(self, cluster: int) -> None:
        self._refcounts[cluster] -= 1
        self._dirty_blocks.add(cluster // self._geometry.refblock_entries)
        if self._refcounts[cluster]:
            return
        if self._committed[cluster]:
            self._released.append(cluster)
        else:
            heappush(self._free, cluster)
        if self._cursor is not None and (self._cursor - 1) // self.cluster_size == cluster:
            self._cursor = None

    def _allocate(self, count: int) -> int:
        """First of `count` contiguous fresh clusters, now referenced once each; freed space
        is reused before the file grows."""
        start = len(self._refcounts)
        if count == 1:
            while self._free:
                cluster = heappop(self._free)
                if self._is_free(cluster):
                    start = cluster
                    break
        elif self._free:
            start = self._free_run(count)
        for cluster in range(start, start + count):
            self._incref(cluster)
        return start

    def _free_run(self, count: int) -> int:
        """Lowest start of `count` free clusters in a row (a run may reach past the end)."""
        end = len(self._refcounts)
        self._free = sorted({c for c in self._free if self._is_free(c)})  # sorted: still a heap
        run_start, run_length = end, 0
        for cluster in self._free:
            if run_length and cluster == run_start + run_length:
                run_length += 1
            else:
                run_start, run_length = cluster, 1
            if run_length == count or run_start + run_length == end:
                return run_start
        return end

    def _place(self, length: int) -> int:
        """Host offset for a compressed payload: packed right after the previous one when the
        clusters it reaches into are ours or free, else at the start of fresh clusters."""
        cs = self.cluster_size
        cursor = self._cursor
        if cursor is not None:
            owned = (cursor - 1) // cs
            clusters = range(cursor // cs, (cursor + length - 1) // cs + 1)
            if all(self._refcounts[c] < MAX_REFCOUNT if c == owned else self._is_free(c)
                   for c in clusters):
                for cluster in clusters:
                    self._incref(cluster)
                self._cursor = cursor + length
                return cursor
        start = self._allocate(ceil_div(length, cs)) * cs
        self._cursor = start + length
        return start

    def _release_entry(self, entry: int) -> None:
        if entry & OFLAG_COMPRESSED:
            offset, length = self._geometry.compressed_range(entry)
            for cluster in range(offset // self.cluster_size,
                                 (offset + length - 1) // self.cluster_size + 1):
                self._decref(cluster)
        elif entry & OFFSET_MASK:
            self._decref((entry & OFFSET_MASK) // self.cluster_size)

    # --- checkpoints -----------------------------------------------------------------------

    def sync(self) -> None:
        """Make every write so far durable: data first, then new metadata, then the header."""
        self._check_open()
        if self._manifest_pending is not None:
            self._store_manifest(self._manifest_pending)
            self._manifest_pending = None
        job: _Job = []
        for index, partial in self._partials.items():
            if partial.dirty:
                partial.dirty = False
                job.append((index, bytes(partial.buffer)))
        for start in range(0, len(job), self._batch):
            self._submit(job[start:start + self._batch])
        self._reap(0)
        if self._l2_dirty or self._l1_dirty or self._dirty_blocks or self._header_dirty:
            self._commit()

    def _commit(self) -> None:
        """Copy-on-write checkpoint; the header write is the single switch-over point."""
        writes = self._relocate_tables()
        writes += self._relocate_refcounts()
        end = len(self._refcounts) * self.cluster_size
        for offset, data in writes:
            self._pwrite(offset, data)
        try:
            if os.fstat(self._fd).st_size < end:
                os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            self._pwrite(0, self._header_bytes())
            os.fsync(self._fd)
        except OSError as error:
            raise DestinationError(f"cannot write {self.path}: {error.strerror}") from error
        self._committed = array("H", self._refcounts)
        for cluster in self._released:
            if not self._refcounts[cluster]:
                heappush(self._free, cluster)
        self._released.clear()
        self._dirty_blocks.clear()
        for l1_index, table in self._l2_dirty.items():
            self._l2_cache[l1_index] = table
        while len(self._l2_cache) > self._l2_cache_limit:
            self._l2_cache.popitem(last=False)
        self._l2_dirty.clear()
        self._l1_dirty = self._header_dirty = False
        self._trim()

    def _relocate_tables(self) -> list[tuple[int, bytes]]:
        """New homes for changed L2 tables (empty ones are dropped) and then for the L1."""
        cs = self.cluster_size
        writes = []
        for l1_index, table in sorted(self._l2_dirty.items()):
            if self._l1[l1_index]:
                self._decref(self._l1[l1_index] // cs)
            self._l1[l1_index] = 0
            if any(table):
                self._l1[l1_index] = self._allocate(1) * cs
                writes.append((self._l1[l1_index], to_disk(table)))
        needed = ceil_div(self.size, self._geometry.l2_coverage)
        while len(self._l1) > needed and not self._l1[-1]:
            self._l1.pop()
        if self._l2_dirty or self._l1_dirty or (self._l1 and not self._l1_location[0]):
            old, clusters = self._l1_location
            for cluster in range(old // cs, old // cs + clusters if old else 0):
                self._decref(cluster)
            clusters = ceil_div(len(self._l1) * 8, cs)
            offset = self._allocate(clusters) * cs if clusters else 0
            self._l1_location = (offset, clusters)
            entries = array("Q", (e | OFLAG_COPIED if e else 0 for e in self._l1))
            if clusters:
                writes.append((offset, to_disk(entries).ljust(clusters * cs, b"\0")))
        return writes

    def _relocate_refcounts(self) -> list[tuple[int, bytes]]:
        """New homes for changed refcount blocks and the refcount table. Moving them changes
        refcounts again, so repeat until every changed block has moved and the table fits."""
        cs, entries = self.cluster_size, self._geometry.refblock_entries
        moved: set[int] = set()
        table_moved = False
        while True:
            for block in sorted(self._dirty_blocks - moved):
                if block >= len(self._refblocks):
                    self._refblocks.extend([0] * (block + 1 - len(self._refblocks)))
                if self._refblocks[block]:
                    self._decref(self._refblocks[block] // cs)
                self._refblocks[block] = self._allocate(1) * cs
                moved.add(block)
            needed = ceil_div(ceil_div(len(self._refcounts), entries) * 8, cs)
            if table_moved and self._reftable[1] >= needed and self._dirty_blocks <= moved:
                break
            if not table_moved or self._reftable[1] < needed:
                old, clusters = self._reftable
                for cluster in range(old // cs, old // cs + clusters if old else 0):
                    self._decref(cluster)
                self._reftable = (self._allocate(needed) * cs, needed)
                table_moved = True
        writes = [(self._refblocks[block], self._refblock_bytes(block)) for block in moved]
        table = array("Q", self._refblocks)
        writes.append((self._reftable[0], to_disk(table).ljust(self._reftable[1] * cs, b"\0")))
        return writes

    def _refblock_bytes(self, block: int) -> bytes:
        entries = self._geometry.refblock_entries
        counts = self._refcounts[block * entries:(block + 1) * entries]
        return to_disk(counts).ljust(self.cluster_size, b"\0")

    def _trim(self) -> None:
        """Give back free clusters at the end of the file (only after a commit: the committed
        image no longer needs them)."""
        end = len(self._refcounts)
        while end > 1 and not self._refcounts[end - 1]:
            end -= 1
        if end == len(self._refcounts):
            return
        del self._refcounts[end:]
        del self._committed[end:]
        self._free = [c for c in self._free if c < end]
        if self._cursor is not None and self._cursor > end * self.cluster_size:
            self._cursor = None
        try:
            os.ftruncate(self._fd, end * self.cluster_size)
        except OSError as error:
            raise DestinationError(f"cannot write {self.path}: {error.strerror}") from error

    def _header_bytes(self) -> bytes:
        """The header, its extensions, then an overlay's backing file name (as QEMU lays
        them out)."""
        header, cs = self._header, self.cluster_size
        incompatible = INCOMPAT_COMPRESSION if self.compression == "zstd" else 0
        v3 = HEADER_V3.pack(incompatible, 0, 0, REFCOUNT_ORDER, HEADER_LENGTH)
        compression = bytes([COMPRESSION_CODES[self.compression]]).ljust(8, b"\0")
        ours = RESCUE_EXT.pack(RESCUE_EXT_VERSION, header.flags, header.manifest_offset,
                               header.manifest_length, header.manifest_crc)
        name, backing_format = os.fsencode(header.backing_file), header.backing_format.encode()
        # padded to 8 bytes, so the next extension starts where QEMU looks for it
        extensions = EXTENSION.pack(RESCUE_EXT_MAGIC, len(ours)) + ours.ljust(
            (len(ours) + 7) & ~7, b"\0")
        if name:
            extensions += (EXTENSION.pack(BACKING_FORMAT_EXT, len(backing_format))
                           + backing_format.ljust((len(backing_format) + 7) & ~7, b"\0"))
        rest = v3 + compression + extensions + EXTENSION.pack(EXT_END, 0)
        name_offset = HEADER_V2.size + len(rest) if name else 0
        fixed = HEADER_V2.pack(MAGIC, VERSION, name_offset, len(name), header.cluster_bits,
                               self.size, 0, len(self._l1), self._l1_location[0],
                               self._reftable[0], self._reftable[1], 0, 0)
        data = fixed + rest + name
        assert len(data) <= SECTOR <= cs  # one sector: the switch-over write is atomic
        return data

    # --- plumbing --------------------------------------------------------------------------

    def _pwrite(self, offset: int, *parts: bytes) -> None:
        """Write `parts` back to back from `offset` in one system call when the kernel agrees."""
        try:
            written = os.pwritev(self._fd, parts, offset)
            rest = b"".join(parts)[written:] if written < sum(map(len, parts)) else b""
            offset += written
            while rest:
                written = os.pwrite(self._fd, rest, offset)
                rest, offset = rest[written:], offset + written
        except OSError as error:
            raise DestinationError(f"cannot write {self.path}: {error.strerror}") from error

    @staticmethod
    def _fsync_directory(path: str) -> None:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"{self.path} is already closed")

    def close(self) -> None:
        """Sync, then release the file; a second call does nothing."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Stop without a checkpoint: the file keeps the state of the last `sync`."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for reader in self._backing_readers:
            reader.close()
        os.close(self._fd)
