"""A `sim:` spec read into settings, each refused with one clear line when it makes no sense.

The settings are described in rescue/sim/faulty.py; the geometry they stand for lives in
rescue/sim/patterns.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rescue.errors import UsageError
from rescue.units import parse_size

PREFIX = "sim:"
SECTOR = 512
MAX_RANGES = 1 << 22  # bad ranges a spec may make: a dead head's bands, scratch spots, scatter
REPEATABLE = {"bad", "slow", "flaky", "head", "scratch", "weak", "scatter"}
SETTINGS = REPEATABLE | {"size", "rate", "map", "seed", "gone", "zones", "band", "cost"}


@dataclass(frozen=True)
class Heads:
    """Dead heads of a disk whose surfaces are laid out in serpentine bands (see patterns)."""

    count: int  # N: heads of the disk
    dead: tuple[int, ...]  # the dead ones, 0-based, ascending
    zones: int = 16
    outer: int = 0  # band length in the outermost (first) zone, before rounding to sectors
    inner: int = 0  # band length in the innermost (last) zone, before rounding


@dataclass
class FaultySpec:
    size: int
    bad: list[tuple[int, int, float]] = field(default_factory=list)
    slow: list[tuple[int, int, float]] = field(default_factory=list)
    flaky: list[tuple[int, int, float]] = field(default_factory=list)
    rate: int = 0
    seed: int = 0
    gone: int | None = None  # bytes served before every read fails
    heads: Heads | None = None
    scratch: list[tuple[int, int, int, int]] = field(default_factory=list)  # pos, len, stride, n
    weak: list[tuple[int, int, float]] = field(default_factory=list)  # pos, len, extra seconds
    scatter: list[tuple[int, int, int]] = field(default_factory=list)  # count, pos, len
    cost: float = 2.0  # virtual seconds a failed read costs

    @classmethod
    def parse(cls, spec: str) -> FaultySpec:
        settings = _settings(spec)
        bad = [(*_span(v), 0.0) for v in settings.get("bad", [])]
        if "map" in settings:
            from rescue.formats import mapfile

            loaded = mapfile.load(settings["map"][-1])
            bad += [(p, n, 0.0) for p, n, s in loaded.rmap.areas() if s in "-*/"]
            settings.setdefault("size", [str(loaded.rmap.size)])
        if "size" not in settings:
            raise UsageError("a simulated disk needs size=... (e.g. sim:size=64M)")
        size = parse_size(settings["size"][-1])
        if size <= 0:
            raise UsageError("a simulated disk needs a positive size")
        slow = [(*_span(span), _number(delay or "0.05", float, "a slow delay", 0))
                for span, _, delay in (v.partition("@") for v in settings.get("slow", []))]
        flaky = [(*_span(span), float(_number(times or "1", int, "a flaky count", 1)))
                 for span, _, times in (v.partition("*") for v in settings.get("flaky", []))]
        gone = parse_size(settings["gone"][-1]) if "gone" in settings else None
        parsed = cls(size, bad, slow, flaky, parse_size(settings.get("rate", ["0"])[-1]),
                     int(_number(settings.get("seed", ["0"])[-1], int, "a seed", 0)), gone,
                     _heads(settings, size),
                     [_scratch(v, size) for v in settings.get("scratch", [])],
                     [_weak(v, size) for v in settings.get("weak", [])],
                     [_scatter(v, size) for v in settings.get("scatter", [])],
                     _number(settings.get("cost", ["2"])[-1], float, "a failed read's cost", 0))
        _check_range_count(parsed)
        return parsed


def _settings(spec: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for item in filter(None, spec.removeprefix(PREFIX).split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"simulated disk setting {item!r} lacks '=value'")
        settings.setdefault(key.strip(), []).append(value.strip())
    unknown = set(settings) - SETTINGS
    if unknown:
        raise UsageError(f"unknown simulated disk setting(s): {', '.join(sorted(unknown))}")
    repeated = sorted(k for k, values in settings.items() if len(values) > 1 and
                      k not in REPEATABLE | {"size", "rate", "seed", "gone", "map"})
    if repeated:  # the old settings take their last value; the new ones say so
        raise UsageError(f"simulated disk setting(s) given twice: {', '.join(repeated)}")
    return settings


def _number(text: str, kind: type[int] | type[float], what: str, least: float) -> float:
    """A setting's number, refused with one clear line unless it is at least `least`."""
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        value = least - 1
    if not (value >= least and math.isfinite(value)):  # also refuses NaN
        raise UsageError(f"{what} {text!r} must be a number of at least {least:g}")
    return value


def _span(text: str) -> tuple[int, int]:
    pos, sep, length = text.partition("+")
    if not sep:
        raise UsageError(f"range {text!r} must be POS+LENGTH, e.g. 10M+4k")
    start, size = parse_size(pos), parse_size(length)
    if size == 0:
        raise UsageError(f"range {text!r} is empty")
    return start, size


def _inside(text: str, end: int, size: int) -> None:
    if end > size:
        raise UsageError(f"{text!r} reaches past the end of the {size}-byte disk")


def _heads(settings: dict[str, list[str]], size: int) -> Heads | None:
    """head=K/N (repeatable), zones=Z and band=OUTER[-INNER] as one validated layout."""
    if "head" not in settings:
        if "zones" in settings or "band" in settings:
            raise UsageError("zones= and band= lay out the heads: they need head=K/N")
        return None
    dead, counts = [], set()
    for text in settings["head"]:
        number, sep, count = text.partition("/")
        if not sep:
            raise UsageError(f"head={text!r} must be K/N: head K (from 0) of N heads is dead")
        heads = int(_number(count, int, "a head count", 1))
        dead.append(int(_number(number, int, "a head number", 0)))
        if dead[-1] >= heads:
            raise UsageError(f"head={text}: heads are numbered 0 to {heads - 1}")
        counts.add(heads)
    if len(counts) > 1:
        raise UsageError(f"head= settings disagree on the number of heads: {sorted(counts)}")
    if len(set(dead)) < len(dead):
        raise UsageError("head= names the same dead head twice")
    zones = int(_number(settings.get("zones", ["16"])[-1], int, "a zone count", 1))
    zone = size // zones // SECTOR * SECTOR
    if zone < SECTOR:
        raise UsageError(f"zones={zones} leaves zones shorter than a sector on a {size}-byte "
                         f"disk")
    outer, inner = _bands(settings["band"][-1] if "band" in settings else None, size)
    layout = Heads(counts.pop(), tuple(sorted(dead)), zones, outer, inner)
    if band_length(layout, 0) > zone:
        raise UsageError(f"a band of {band_length(layout, 0)} bytes is longer than a zone "
                         f"({zone} bytes); use fewer zones or shorter bands")
    return layout


def _bands(text: str | None, size: int) -> tuple[int, int]:
    """OUTER and INNER band lengths as given (each zone's band is rounded to sectors); by
    default size/8192 and half of it, so models of any size have the same shape."""
    if text is None:
        return size // 8192, size // 16384
    outer_text, sep, inner_text = text.partition("-")
    outer = parse_size(outer_text)
    inner = parse_size(inner_text) if sep else outer // 2
    if outer < SECTOR or (sep and inner < SECTOR):
        raise UsageError(f"band={text}: bands are at least {SECTOR} bytes long")
    if inner > outer:
        raise UsageError(f"band={text}: the inner band must not be longer than the outer one")
    return outer, inner


def round_band(length: int) -> int:
    """A band length rounded down to whole sectors, at least one sector."""
    return max(length // SECTOR * SECTOR, SECTOR)


def _scratch(text: str, size: int) -> tuple[int, int, int, int]:
    """POS+LEN/STRIDE*COUNT: COUNT spots of LEN bytes, STRIDE apart."""
    span, sep, repeat = text.partition("/")
    stride_text, star, count_text = repeat.partition("*")
    if not (sep and star):
        raise UsageError(f"scratch={text!r} must be POS+LEN/STRIDE*COUNT, e.g. 1G+64k/100M*8")
    pos, length = _span(span)
    stride = parse_size(stride_text)
    count = int(_number(count_text, int, "a scratch's spot count", 1))
    if stride < length:
        raise UsageError(f"scratch={text}: spots {stride} bytes apart overlap (LEN is {length})")
    _inside(f"scratch={text}", pos + (count - 1) * stride + length, size)
    return pos, length, stride, count


def _weak(text: str, size: int) -> tuple[int, int, float]:
    span, _, delay = text.partition("@")
    pos, length = _span(span)
    _inside(f"weak={text}", pos + length, size)
    return pos, length, _number(delay or "0.05", float, "a weak zone's delay", 0)


def _scatter(text: str, size: int) -> tuple[int, int, int]:
    """COUNT[@POS+LEN]: COUNT distinct bad sectors among the whole sectors of the range."""
    count_text, sep, span = text.partition("@")
    count = int(_number(count_text, int, "a scatter count", 1))
    pos, length = _span(span) if sep else (0, size)
    _inside(f"scatter={text}", pos + length, size)
    sectors = (pos + length) // SECTOR - -(-pos // SECTOR)
    if count > sectors:
        raise UsageError(f"scatter={text}: {count} sectors do not fit in {max(sectors, 0)}")
    return count, pos, length


def _check_range_count(spec: FaultySpec) -> None:
    """A spec whose patterns make millions of bad ranges would take minutes to build."""
    ranges = sum(count for *_, count in spec.scratch) + sum(c for c, _, _ in spec.scatter)
    if spec.heads is not None and spec.heads.zones > MAX_RANGES:
        ranges = spec.heads.zones  # at least one band per zone
    elif spec.heads is not None:
        zone = spec.size // spec.heads.zones // SECTOR * SECTOR
        ranges += sum(-(-zone // band_length(spec.heads, k)) for k in range(spec.heads.zones))
    if ranges > MAX_RANGES:
        raise UsageError(f"the patterns make about {ranges} bad ranges, more than {MAX_RANGES}; "
                         f"use longer bands or fewer spots")


def band_length(heads: Heads, zone: int) -> int:
    """Band length in zone `zone`: OUTER in the first, shrinking linearly to INNER in the last."""
    if heads.zones == 1:
        return round_band(heads.outer)
    return round_band(heads.outer - (heads.outer - heads.inner) * zone // (heads.zones - 1))
