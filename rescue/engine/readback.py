"""A restored target read back and compared with the image: during the writing, or after it.

Every chunk of a target is read back past the page cache (O_DIRECT) and its BLAKE3 compared
with the digest the image's decoder made of the same chunk; a chunk that differs is compared
sector by sector with the image, and the differing sectors are given back to the target's map,
so the same command writes them again. Success needs every byte read back.

When: a fresh target that does not spin is read back while it is written, following the
writer's watermark (engine/pipeline.py: chunk k is read once an fsync made it durable), so the
verification costs little more than the restore. A spinning disk (or one whose kind is
unknown) is read back after the writing, since reads between its writes cost seeks both ways;
so is a restore that continues an earlier one, whose chunks written before are not read from
the image in order with the rest. `--read-back` overrides the choice.
"""

from __future__ import annotations

import threading

from rescue.engine.jobs import JobControl, RateMeter
from rescue.engine.pipeline import CHUNK, Target
from rescue.formats.base import ImageReader
from rescue.formats.fingerprint import chunk_digest
from rescue.formats.image import open_reader
from rescue.formats.integrity import add_range, read_checked
from rescue.io.blockdev import Watermark, read_chunks, rotational
from rescue.rangemap import FINISHED, NON_TRIED

# (what was read: the image or a shrunk copy, start of the piece, chunk offset) → BLAKE3
Digests = dict[tuple[str, int, int], bytes]


def follows_writer(target: Target, choice: str) -> bool:
    """Whether `target` is read back while it is written (see the module's docstring);
    `choice` is one of READ_BACKS."""
    fresh = len(target.todo) == len(range(0, target.size, CHUNK))
    if choice == "after" or not fresh:
        return False
    return choice == "during" or not rotational(target.path)


class ReadBack:
    """Reads targets back against the digests the restore's decoders recorded, and compares
    the chunks that differ with the image itself."""

    def __init__(self, image: str, image_format: str, digests: Digests,
                 control: JobControl) -> None:
        self.image, self.image_format = image, image_format
        self.digests = digests
        self.control = control
        self.read_length = 0  # what is read of the image for the whole-span targets

    def follow(self, targets: list[Target]) -> list[threading.Thread]:
        """Start reading back each target while it is written; each thread ends when its
        target is read back, or its writer stopped short, or the job is cancelled."""
        threads = []
        for target in targets:
            target.written = Watermark()
            thread = threading.Thread(target=self._follow, args=(target,),
                                      name=f"read-back-{target.path}")
            thread.start()
            threads.append(thread)
        return threads

    def _follow(self, target: Target) -> None:
        try:
            self.read(target, target.written)
        except OSError as exc:
            target.fail(f"cannot read back {target.path}: {exc.strerror}")

    def after(self, target: Target) -> None:
        """Read back a target whose writing has ended; raises OSError."""
        if target.rmap.totals()[FINISHED] < target.size:
            target.phase = "incomplete"
            return
        target.phase = "verifying"
        target.meter = RateMeter(self.control.clock.now())
        self.read(target)
        self.settle(target)

    def read(self, target: Target, written: Watermark | None = None) -> None:
        """Read the target back (following `written`), counting what was read and recording
        the sectors that differ; raises OSError."""
        image: ImageReader | None = None
        chunks = read_chunks(target.path, target.size, CHUNK, chunk_digest, target.span.dest,
                             written=written)
        start = target.span.offset
        read = target.size if target.span.mode == "resize" else self.read_length
        try:
            for offset, data, digest in chunks:
                if self.control.cancelled.is_set():
                    return
                self.control.wait_if_paused()
                size = min(CHUNK, target.size - offset)
                whole_chunk = size == min(CHUNK, read - offset)
                key = (target.span.source or "", start, offset)
                if not whole_chunk or digest != self.digests.get(key):
                    image = image or (open_reader(self.image, self.image_format)
                                      if target.span.source is None
                                      else open_reader(target.span.source, "raw"))
                    expected = read_checked(image, start + offset, size)[0]
                    compare(target, offset, bytes(data), expected)
                target.verified += size
                if written is None:
                    target.meter.add(size, self.control.clock.now())
        finally:
            chunks.close()
            if image is not None:
                image.close()

    def settle(self, target: Target) -> None:
        """Once the writing ended: give differing sectors back to the map, and count a
        target not wholly written, or not wholly read back, as incomplete. A cancelled job
        leaves them as they are: it is interrupted."""
        if target.failed or self.control.cancelled.is_set():
            return
        if target.mismatches:
            for offset, length in target.mismatches:
                target.rmap.set(offset, length, NON_TRIED)  # written again on the next run
            target.save_map()
            target.phase = "mismatch"
        elif (target.rmap.totals()[FINISHED] < target.size
              or target.verified < target.size):
            target.phase = "incomplete"


def compare(target: Target, offset: int, written: bytes, expected: bytes) -> None:
    """Record the exact sectors that differ."""
    if written == expected:
        return
    step = 512
    for pos in range(0, len(expected), step):
        if written[pos:pos + step] != expected[pos:pos + step]:
            length = min(step, len(expected) - pos)
            add_range(target.mismatches, offset + pos, length)
