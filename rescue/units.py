"""Sizes, rates and durations: read as a user writes them, shown as a user reads them."""

from __future__ import annotations

from rescue.errors import UsageError


def human_size(n: float) -> str:
    """Bytes in binary units with three significant digits, as ddrescue shows them."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    step = 0
    while abs(n) >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.3g} {units[step]}"


def human_percent(part: float, whole: float, digits: int = 1, *, of_nothing: float = 100.0) -> str:
    """`part` of `whole` in percent, never rounded to a false 100 or 0: 4 KiB bad on 16 MiB
    reads 99.9 %, not 100.0 %, and one good sector of a dead disk reads 0.1 %, not 0.0 %."""
    step = 10.0 ** -digits
    if whole <= 0:
        return f"{of_nothing:.{digits}f}"
    value = 100.0 * part / whole
    if part < whole:
        value = min(value, 100.0 - step)
    if part > 0:
        value = max(value, step)
    return f"{value:.{digits}f}"


def human_rate(bytes_per_second: float) -> str:
    return f"{human_size(bytes_per_second)}/s"


def duration_parts(seconds: float) -> tuple[int, int, int, int]:
    """Whole days, hours, minutes and seconds of a duration."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return (days, hours, *divmod(rest, 60))


def human_duration(seconds: float | None) -> str:
    if seconds is None:  # an estimate that cannot be made yet
        return "unknown"
    if 0 < seconds < 1:  # a moment, yet not nothing: a little work left is not "0s"
        return "<1s"
    days, hours, minutes, secs = duration_parts(seconds)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """A size as a user writes it: 4096, 0x1000, 64k, 2M, 1.5G; never negative."""
    text = text.strip()
    try:
        if text[-1:].upper() in _UNITS:
            value = int(float(text[:-1]) * _UNITS[text[-1].upper()])
        else:
            value = int(text, 0)
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise UsageError(f"{text!r} is not a size (use e.g. 4096, 0x1000, 64k, 2M)")
    return value
