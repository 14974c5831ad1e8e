"""A simulated failing disk: bad, slow and flaky ranges over deterministic mixed content.

It drives the real rescue code through real error paths, for the demo and for tests. A spec is
`sim:` followed by comma-separated settings; `bad`, `slow` and `flaky` may repeat:

    sim:size=256M,bad=10M+4k,slow=40M+8M@0.02,flaky=90M+64k*2,rate=64M,map=old.map

- `bad=POS+LEN`        every read touching it fails (EIO)
- `slow=POS+LEN@SEC`   reads touching it take SEC seconds more
- `flaky=POS+LEN*N`    each sector fails its first N reads, then reads fine
- `rate=BYTES`         overall read speed in bytes per second (0: as fast as possible)
- `gone=BYTES`         once it has served BYTES, every read fails (EIO), as a disk that
                       dropped off the bus while its device node stays
- `map=FILE`           the '-', '*' and '/' areas of a ddrescue mapfile become bad ranges
- `seed=N`             changes the content

Sizes take K, M, G, T suffixes (powers of 1024) and 0x hex.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache

from rescue.errors import UsageError
from rescue.io.reader import Unreadable

PREFIX = "sim:"
SECTOR = 512
CHUNK = 1 << 20
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DEMO_SPEC = ("sim:size=256M,rate=48M,bad=20M+2k,bad=61M+1M,bad=64M+4k,"
             "slow=100M+12M@0.08,bad=150M+160k,flaky=180M+64k*2,bad=200M+8M,bad=230M+512")


def parse_size(text: str) -> int:
    text = text.strip()
    try:
        if text[-1:].upper() in _UNITS:
            return int(float(text[:-1]) * _UNITS[text[-1].upper()])
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{text!r} is not a size (use e.g. 4096, 0x1000, 64k, 2M)") from None


class _Ranges:
    """Sorted, merged byte ranges with an attribute; answers 'which touch [a, b)' quickly."""

    def __init__(self, ranges: list[tuple[int, int, float]]) -> None:
        merged: list[tuple[int, int, float]] = []
        for start, length, value in sorted(r for r in ranges if r[1] > 0):
            if merged and start <= merged[-1][0] + merged[-1][1]:  # overlaps: one range
                first, span, other = merged[-1]
                end = max(first + span, start + length)
                merged[-1] = (first, end - first, max(value, other))
            else:
                merged.append((start, length, value))
        self.starts = [r[0] for r in merged]
        self.ranges = merged

    def touching(self, begin: int, end: int) -> list[tuple[int, int, float]]:
        i = max(bisect_right(self.starts, begin) - 1, 0)
        hits = []
        while i < len(self.ranges) and self.ranges[i][0] < end:
            start, length, value = self.ranges[i]
            if start + length > begin:
                hits.append((start, length, value))
            i += 1
        return hits


@dataclass
class FaultySpec:
    size: int
    bad: list[tuple[int, int, float]] = field(default_factory=list)
    slow: list[tuple[int, int, float]] = field(default_factory=list)
    flaky: list[tuple[int, int, float]] = field(default_factory=list)
    rate: int = 0
    seed: int = 0
    gone: int | None = None  # bytes served before every read fails

    @classmethod
    def parse(cls, spec: str) -> FaultySpec:
        body = spec.removeprefix(PREFIX)
        settings: dict[str, list[str]] = {}
        for item in filter(None, body.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"simulated disk setting {item!r} lacks '=value'")
            settings.setdefault(key.strip(), []).append(value.strip())
        unknown = set(settings) - {"size", "bad", "slow", "flaky", "rate", "map", "seed",
                                   "gone"}
        if unknown:
            raise UsageError(f"unknown simulated disk setting(s): {', '.join(sorted(unknown))}")
        bad = [(*_span(v), 0.0) for v in settings.get("bad", [])]
        if "map" in settings:
            from rescue.formats import mapfile

            loaded = mapfile.load(settings["map"][-1])
            bad += [(p, n, 0.0) for p, n, s in loaded.rmap.areas() if s in "-*/"]
            settings.setdefault("size", [str(loaded.rmap.size)])
        if "size" not in settings:
            raise UsageError("a simulated disk needs size=... (e.g. sim:size=64M)")
        slow = []
        for v in settings.get("slow", []):
            span, _, delay = v.partition("@")
            slow.append((*_span(span), float(delay or "0.05")))
        flaky = []
        for v in settings.get("flaky", []):
            span, _, times = v.partition("*")
            flaky.append((*_span(span), float(int(times or "1"))))
        size = parse_size(settings["size"][-1])
        if size <= 0:
            raise UsageError("a simulated disk needs a positive size")
        gone = parse_size(settings["gone"][-1]) if "gone" in settings else None
        return cls(size, bad, slow, flaky, parse_size(settings.get("rate", ["0"])[-1]),
                   int(settings.get("seed", ["0"])[-1]), gone)


def _span(text: str) -> tuple[int, int]:
    pos, sep, length = text.partition("+")
    if not sep:
        raise UsageError(f"range {text!r} must be POS+LENGTH, e.g. 10M+4k")
    return parse_size(pos), parse_size(length)


@lru_cache(maxsize=8)
def _chunk(index: int, seed: int) -> bytes:
    """1 MiB of content for chunk `index`: random, text, zeros or a pattern, like a real disk."""
    kind = (index * 2654435761 + seed) % 7
    if kind in (0, 1):
        return random.Random(index * 7919 + seed).randbytes(CHUNK)
    if kind in (2, 3):
        line = (f"chunk {index:08d}: the quick brown fox jumps over the lazy dog; "
                f"rescue keeps every readable byte.\n").encode()
        return (line * (CHUNK // len(line) + 1))[:CHUNK]
    if kind == 4:
        return bytes(CHUNK)
    pattern = bytes(range(256)) + index.to_bytes(8, "little") * 32
    return (pattern * (CHUNK // len(pattern) + 1))[:CHUNK]


def content(offset: int, length: int, seed: int = 0) -> bytes:
    """The true bytes of a simulated disk at [offset, offset+length)."""
    out = bytearray()
    while length > 0:
        index, within = divmod(offset, CHUNK)
        take = min(length, CHUNK - within)
        out += _chunk(index, seed)[within:within + take]
        offset += take
        length -= take
    return bytes(out)


class FaultySource:
    """A Source whose failures are scripted; also counts reads so tests can check the
    algorithm never re-reads more than it should."""

    physical_sector_size = SECTOR
    sector_size = SECTOR

    def __init__(self, spec: str | FaultySpec, clock=time.sleep) -> None:
        self.spec = spec if isinstance(spec, FaultySpec) else FaultySpec.parse(spec)
        self.path = spec if isinstance(spec, str) else PREFIX
        self.size = self.spec.size
        self._bad = _Ranges(self.spec.bad)
        self._slow = _Ranges(self.spec.slow)
        self._flaky = _Ranges(self.spec.flaky)
        self._flaky_reads: dict[int, int] = {}
        self._sleep = clock
        self.reads: dict[int, int] = {}  # sector -> times read; filled only when tracking
        self.track_reads = False
        self.served = 0  # bytes read successfully
        self.failed_reads = 0

    def read(self, offset: int, length: int) -> memoryview:
        length = min(length, self.size - offset)
        if length <= 0:
            return memoryview(b"")
        end = offset + length
        if self.track_reads:
            for sector in range(offset // SECTOR, -(-end // SECTOR)):
                self.reads[sector] = self.reads.get(sector, 0) + 1
        delay = length / self.spec.rate if self.spec.rate else 0.0
        delay += sum(d for _, _, d in self._slow.touching(offset, end))
        if delay:
            self._sleep(delay)
        detail = self._failure(offset, end)
        if detail is not None:
            self.failed_reads += 1
            raise Unreadable(offset, length, "media", detail)
        self.served += length
        return memoryview(content(offset, length, self.spec.seed))

    def _failure(self, offset: int, end: int) -> str | None:
        """Why a read of [offset, end) fails, or None; counts the reads of flaky sectors."""
        if self.spec.gone is not None and self.served >= self.spec.gone:
            return "simulated disk gone"
        if self._bad.touching(offset, end):
            return "simulated bad sector"
        failing = False
        for start, span, times in self._flaky.touching(offset, end):
            first = max(offset, start) // SECTOR
            last = -(-min(end, start + span) // SECTOR)
            for sector in range(first, last):
                seen = self._flaky_reads.get(sector, 0)
                if seen < times:
                    failing = True
                self._flaky_reads[sector] = seen + 1
        return "simulated flaky sector" if failing else None

    def bad_sectors(self) -> set[int]:
        """Sectors that can never be read: what a perfect rescue maps as bad."""
        return {s for start, length, _ in self.spec.bad
                for s in range(start // SECTOR, -(-(start + length) // SECTOR))}

    def vanished(self) -> None:
        """A simulated disk has no device node or backing file to look at; whether it is gone
        shows only in its reads."""
        return None

    def close(self) -> None:
        """Nothing to release; present so every source closes the same way."""
