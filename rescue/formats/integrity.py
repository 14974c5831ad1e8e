"""One integrity gate for everything that trusts an image: restore, restore --check-image and
verify.

An image proves what its format carries, no more: our qcow2 clusters and .img.zst frames carry
checksums, a qcow2 from another writer only its structure, a raw image nothing; a manifest adds
the digest of the whole image (BLAKE3; older manifests a chunk fingerprint or a plain
SHA-256). The gate checks all of it the same way wherever the image is read: its structure
before any data (tables against refcounts, frames against the seek table), every cluster or
frame against its checksum as it is decoded (a damaged one reads as zeros and is recorded by its
logical range, so a reader still gets the rest), and the digest of the bytes read against the
manifest's. Its verdict says exactly what was checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from rescue.errors import FormatError
from rescue.formats.base import ImageHasher, ImageReader, Ranges, checks_itself, fills_buffers
from rescue.formats.fingerprint import (
    READ_SIZE,
    BackgroundHasher,
    Blake3,
    Fingerprint,
    PlainSha256,
)
from rescue.formats.image import read_manifest
from rescue.formats.manifest import Manifest


def read_checked(reader: ImageReader, offset: int, length: int) -> tuple[bytes, Ranges]:
    """Image bytes and the damaged ranges among them; a raw image carries nothing to check."""
    if checks_itself(reader):
        return reader.read_checked(offset, length)
    return reader.read(offset, length), []


def read_checked_into(reader: ImageReader, offset: int, view: memoryview) -> Ranges:
    """`read_checked` into `view`, which the image must fill: straight from the decoder where
    the format can, else through a copy."""
    if fills_buffers(reader):
        return reader.read_checked_into(offset, view)
    data, damaged = read_checked(reader, offset, len(view))
    view[:] = data
    return damaged


def add_range(ranges: Ranges, offset: int, length: int) -> None:
    """Append a range, merged with the last one when they touch or overlap (in order)."""
    if ranges and ranges[-1][0] + ranges[-1][1] >= offset:
        start = ranges[-1][0]
        ranges[-1] = (start, max(ranges[-1][0] + ranges[-1][1], offset + length) - start)
    else:
        ranges.append((offset, length))


# the digests a manifest may hold of the whole image, by the name a verdict gives them
DIGESTS: dict[str, Callable[[], ImageHasher]] = {
    "BLAKE3": Blake3, "fingerprint": Fingerprint, "SHA-256": PlainSha256}


def recorded_digest(manifest: Manifest | None) -> tuple[str, str] | None:
    """The manifest's digest of the whole image and its name in DIGESTS: the newest kind it
    holds (new images hold only BLAKE3), or None."""
    if manifest is None:
        return None
    for name, value in (("BLAKE3", manifest.blake3), ("fingerprint", manifest.fingerprint),
                        ("SHA-256", manifest.sha256)):
        if value:
            return name, value
    return None


@dataclass
class Verdict:
    """What was checked, and what was found damaged."""

    checked: list[str]  # "structure", "checksums", and the digest: one of DIGESTS
    damaged: Ranges = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage no logical range locates
    fingerprint_ok: bool | None = None  # the whole image's digest; None: not compared

    @property
    def intact(self) -> bool:
        return not self.damaged and not self.problems

    def within(self, offset: int, length: int) -> Verdict:
        """The verdict on image bytes [offset, offset + length): what a partition's restore
        depends on (damage without a place always counts)."""
        end = offset + length
        ranges = [(max(o, offset), min(o + n, end) - max(o, offset)) for o, n in self.damaged
                  if o < end and o + n > offset]
        return Verdict(self.checked, ranges, self.problems, self.fingerprint_ok)

    def lines(self) -> list[str]:
        """One `damaged: ...` line per range and per problem."""
        return ([f"damaged: bytes {o:#x}-{o + n - 1:#x} ({n} bytes)" for o, n in self.damaged]
                + [f"damaged: {problem}" for problem in self.problems])

    @property
    def proven(self) -> bool:
        """Whether anything beyond the structure vouched for the content."""
        return any(check != "structure" for check in self.checked)

    def summary(self) -> str:
        """What an intact image was checked for, in words."""
        if self.proven:
            return f"{' and '.join(c for c in self.checked if c != 'structure')} verified"
        if self.checked:
            return "structure checked, no checksums"
        return "no checksums and no manifest to verify against"

    def brief(self, shown: int = 5) -> str:
        """The damage on one line, for an error message."""
        ranges = [f"{o:#x}-{o + n - 1:#x}" for o, n in self.damaged[:shown]]
        more = [f"{len(self.damaged) - shown} more ranges"] if len(self.damaged) > shown else []
        parts = ([f"damaged: bytes {', '.join(ranges + more)}"] if ranges else []) + self.problems
        return "; ".join(parts)


class ImageGate:
    """The checks of one image, as its bytes are read once in order by whoever reads them.

    Structure and manifest are checked on creation; `record` takes the damage `read_checked`
    found; `compare` takes the digest of the whole image, from a `hasher` fed all of it.
    """

    def __init__(self, path: str, reader: ImageReader) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._damaged: Ranges = []
        self._problems: list[str] = []
        self.manifest = self._manifest(reader)
        size = self.manifest.source.get("size") if self.manifest else None
        if isinstance(size, int) and size != reader.size:
            self._problems.append(f"the image holds {reader.size} bytes, its manifest says the "
                                  f"source held {size}")
        self.checked: list[str] = []
        if checks_itself(reader):
            self.checked.append("structure")
            if reader.capabilities.checksums:
                self.checked.append("checksums")
            damaged, problems = reader.check_structure()
            self._damaged += damaged
            self._problems += problems
        self.expected: str | None = None  # the manifest's digest of the whole image
        self.digest: str | None = None  # which one: a name in DIGESTS
        recorded = recorded_digest(self.manifest)
        if recorded:
            self.digest, self.expected = recorded
            self.checked.append(self.digest)
        self._compared = False  # a digest of the whole image was compared with `expected`

    def _manifest(self, reader: ImageReader) -> Manifest | None:
        try:
            return read_manifest(self.path, reader)
        except FormatError as error:
            self._problems.append(f"the manifest ({error})")
            return None

    def hasher(self) -> ImageHasher:
        """A hasher for the digest the manifest recorded (only asked when it has one)."""
        assert self.digest is not None
        return DIGESTS[self.digest]()

    def record(self, ranges: Ranges) -> None:
        with self._lock:
            self._damaged += ranges

    def compare(self, digest: str) -> bool | None:
        """Whether the whole image's digest is the manifest's (None: it has none, or damage
        already located makes it differ)."""
        if self.expected is None or self._damaged:
            return None
        self._compared = True
        if digest != self.expected:
            with self._lock:
                self._problems.append(
                    f"the image's {self.digest} differs from "
                    "the manifest's (the damage is where no checksum can locate it)")
            return False
        return True

    def verdict(self, fingerprint_ok: bool | None = None) -> Verdict:
        """What was found so far; the manifest's digest counts as checked only once compared
        (a partition's restore never compares it)."""
        with self._lock:
            checked = [c for c in self.checked
                       if self._compared or c not in DIGESTS]
            damaged: Ranges = []
            for offset, length in sorted(self._damaged):
                add_range(damaged, offset, length)
            return Verdict(checked, damaged, list(self._problems), fingerprint_ok)

    def check_all(self, reader: ImageReader) -> Verdict:
        """Read and check the whole image: what `verify` and `restore --check-image` do."""
        hasher = BackgroundHasher(self.hasher()) if self.expected else None
        try:
            for offset, length, allocated in reader.extents():
                if not allocated:
                    if hasher:
                        hasher.zeros(length)
                    continue
                for position in range(offset, offset + length, READ_SIZE):
                    data, damaged = read_checked(reader, position,
                                                 min(READ_SIZE, offset + length - position))
                    self.record(damaged)
                    if hasher:
                        hasher.update(data)
            return self.verdict(self.compare(hasher.hexdigest()) if hasher else None)
        finally:
            if hasher:
                hasher.close()


def verify_image(path: str, reader: ImageReader) -> Verdict:
    """Everything the image carries, checked: what `rescue verify` reports."""
    return ImageGate(path, reader).check_all(reader)
