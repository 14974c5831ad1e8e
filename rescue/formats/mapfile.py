"""GNU ddrescue mapfiles: read (ours and ddrescue's) and write them, saved atomically.

Layout (ddrescue manual, "Mapfile structure"): comment lines start with '#'; the first
non-comment line is the status line `current_pos current_status [current_pass]`; every further
non-comment line is a block `pos size status`. Numbers may be decimal, hex (0x) or octal (0);
we write hex like ddrescue does. Blocks must be contiguous, start at 0 and end at the size.
"""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass

from rescue import __version__
from rescue.engine.rangemap import STATES, RangeMap
from rescue.errors import DestinationError, FormatError

# current_status values of the status line: what phase the rescue was in
PHASES = {"?": "copying", "*": "trimming", "/": "scraping", "-": "retrying",
          "F": "filling", "G": "generating", "+": "finished"}


@dataclass
class Mapfile:
    rmap: RangeMap
    current_pos: int = 0
    current_status: str = "?"
    current_pass: int = 1


def _number(text: str, path: str, lineno: int) -> int:
    if text.startswith("0x"):  # the common case, written by ddrescue and by us
        try:
            return int(text, 16)
        except ValueError:
            raise FormatError(f"{path}:{lineno}: {text!r} is not a number") from None
    octal = len(text) > 1 and text[0] == "0" and text[1].isdigit()  # C-style "0755"
    try:
        value = int(text, 8 if octal else 0)
    except ValueError:
        raise FormatError(f"{path}:{lineno}: {text!r} is not a number") from None
    if value < 0:
        raise FormatError(f"{path}:{lineno}: negative number {text!r}")
    return value


def parse(text: str, path: str = "<mapfile>", size: int | None = None) -> Mapfile:
    """Parse a mapfile. With `size`, the map must cover exactly [0, size); a ddrescue map
    that stops short (ddrescue writes no trailing non-tried block) is completed with '?'."""
    status: tuple[int, str, int] | None = None
    starts, states = array("q"), bytearray()
    expected = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = (raw.split("#", 1)[0] if "#" in raw else raw).split()
        if not fields:
            continue
        if status is None:
            if len(fields) not in (2, 3) or fields[1] not in PHASES:
                raise FormatError(f"{path}:{lineno}: not a ddrescue mapfile status line")
            passno = _number(fields[2], path, lineno) if len(fields) == 3 else 1
            status = (_number(fields[0], path, lineno), fields[1], passno)
            continue
        if len(fields) != 3 or fields[2] not in STATES:
            raise FormatError(f"{path}:{lineno}: not a mapfile block line: {raw.strip()!r}")
        pos, length = _number(fields[0], path, lineno), _number(fields[1], path, lineno)
        if pos != expected:
            raise FormatError(f"{path}:{lineno}: block at {pos:#x} leaves a gap or overlap "
                              f"(expected {expected:#x})")
        expected = pos + length
        code = ord(fields[2])
        if length and (not states or states[-1] != code):
            starts.append(pos)
            states.append(code)
    if status is None:
        raise FormatError(f"{path}: empty mapfile (no status line)")
    if size is not None and expected > size:
        raise FormatError(f"{path}: the map covers {expected} bytes but the source has {size}: "
                          "it belongs to a different source")
    total = expected if size is None else size
    if expected < total and (not states or states[-1] != ord("?")):
        starts.append(expected)
        states.append(ord("?"))
    if total == 0:
        raise FormatError(f"{path}: the map describes no bytes")
    return Mapfile(RangeMap.from_arrays(total, starts, states), *status)


def load(path: str, size: int | None = None) -> Mapfile:
    try:
        with open(path, encoding="ascii", errors="strict") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a ddrescue mapfile (binary data)") from None
    except OSError as exc:
        raise FormatError(f"cannot read mapfile {path}: {exc.strerror}") from None
    return parse(text, path, size)


def render(mapfile: Mapfile, command_line: str = "", start_time: float | None = None) -> str:
    now = time.localtime()
    started = time.localtime(start_time) if start_time else now
    stamp = "%Y-%m-%d %H:%M:%S"
    lines = [
        f"# Mapfile. Created by rescue version {__version__}",
        f"# Command line: {command_line}",
        f"# Start time:   {time.strftime(stamp, started)}",
        f"# Current time: {time.strftime(stamp, now)}",
    ]
    if mapfile.current_status == "+":
        lines.append("# Finished")
    lines.append("# current_pos  current_status  current_pass")
    lines.append(f"0x{mapfile.current_pos:08X}     {mapfile.current_status}"
                 f"               {mapfile.current_pass}")
    lines.append("#      pos        size  status")
    lines.extend(map("0x%08X  0x%08X  %s".__mod__, mapfile.rmap.areas()))
    return "\n".join(lines) + "\n"


def save(path: str, mapfile: Mapfile, command_line: str = "",
         start_time: float | None = None) -> None:
    """Write atomically: temp file, fsync, keep the previous map as `.bak`, rename, fsync dir.
    A crash at any moment leaves either the old or the new map complete on disk."""
    text = render(mapfile, command_line, start_time)
    tmp = f"{path}.tmp"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            _link_backup(path)
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DestinationError(f"cannot save mapfile {path}: {exc.strerror}") from None


def _link_backup(path: str) -> None:
    """Make `.bak` a hard link to the current map so `path` never disappears, even briefly."""
    backup = f"{path}.bak"
    tmp_backup = f"{backup}.tmp"
    if os.path.exists(tmp_backup):
        os.unlink(tmp_backup)
    os.link(path, tmp_backup)
    os.replace(tmp_backup, backup)
