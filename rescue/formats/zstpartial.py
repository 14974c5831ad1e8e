"""An unfinished .img.zst: the complete frames its writer left before it was stopped.

A seekable zstd file gets its seek table last, so one whose writer was killed has none. Its
frames are found by walking them from our header, as `zstd -d` reads them: a data frame's
header gives its content size, its block headers its compressed size. The walk ends at a frame
cut short by the kill, at the end of the file, or at anything that is not a data frame of ours
(a manifest written by a finish that was killed before its seek table). A writer continues
after the frames it keeps (ZstSeekWriter's `kept`); `UnfinishedReader` reads them.
"""

from __future__ import annotations

import os

import zstandard

from rescue.errors import FormatError
from rescue.formats.zstseek import (
    EMPTY_CHECKSUM,
    ENTRY_WITH_CHECKSUM,
    FRAME_HEADER_MAX,
    HEADER_MAGIC,
    HEADER_PAYLOAD,
    HEADER_TAG,
    SKIPPABLE_HEADER,
    SUPPORTED_VERSIONS,
    VERSION,
    ZSTD_MAGIC,
    Entry,
    FrameInfo,
    ZstSeekReader,
    frame_span,
)

UNKNOWN_SIZE = (1 << 64) - 1  # a frame header without a content size (not one of ours)


def kept_frames(fd: int, limit: int | None = None) -> list[Entry]:
    """Seek table entries of our header and of the complete data frames that follow it in the
    file open at `fd`, as far as their image bytes end at or before `limit`; none when the
    header itself is cut short (the writer was stopped as it began)."""
    ours = SKIPPABLE_HEADER.pack(HEADER_MAGIC, HEADER_PAYLOAD.size) + HEADER_PAYLOAD.pack(
        HEADER_TAG, VERSION, 0)
    header = len(ours)
    head = os.pread(fd, header, 0)
    if len(head) < header and ours.startswith(head):
        return []
    version = HEADER_PAYLOAD.unpack_from(head, SKIPPABLE_HEADER.size)[1] \
        if len(head) == header else None
    if head[:16] != ours[:16] or version not in SUPPORTED_VERSIONS:
        raise FormatError("it is not an unfinished .img.zst this program wrote")
    entries: list[Entry] = [(header, 0, EMPTY_CHECKSUM)]
    offset, position = header, 0
    while (entry := _frame_at(fd, offset)) is not None:
        compressed, length, _ = entry
        if limit is not None and position + length > limit:
            break
        entries.append(entry)
        offset, position = offset + compressed, position + length
    return entries


def _frame_at(fd: int, offset: int) -> Entry | None:
    """The seek table entry of the complete data frame of ours at file `offset`, or None.
    Only its headers are read, not its data."""
    head = os.pread(fd, FRAME_HEADER_MAX, offset)
    if int.from_bytes(head[:4], "little") != ZSTD_MAGIC:
        return None  # the end, or a frame that holds no image bytes
    try:
        parameters = zstandard.get_frame_parameters(head)
        header = zstandard.frame_header_size(head)
    except zstandard.ZstdError:
        return None  # a header cut short
    if not parameters.has_checksum or parameters.content_size in (0, UNKNOWN_SIZE):
        return None
    size = frame_span(lambda position: os.pread(fd, 3, offset + position), header, True)
    if size is None:
        return None  # cut short by the end of the file
    checksum = os.pread(fd, 4, offset + size - 4)
    if len(checksum) < 4:
        return None
    return size, parameters.content_size, int.from_bytes(checksum, "little")


class UnfinishedReader(ZstSeekReader):
    """The complete frames of an unfinished .img.zst, read as a finished one is read; its
    `size` is the image bytes they hold."""

    def _parse(self) -> tuple[tuple[FrameInfo, ...], list[tuple[int, int]], None]:
        try:
            entries = kept_frames(self._fd)
        except FormatError as error:
            raise FormatError(f"{self.path}: {error}") from None
        table = b"".join(ENTRY_WITH_CHECKSUM.pack(*entry) for entry in entries)
        frames, skippable, _ = self._layout(table, ENTRY_WITH_CHECKSUM)
        return frames, skippable, None
