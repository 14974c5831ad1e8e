"""GNU ddrescue mapfiles: read (ours and ddrescue's) and write them, saved atomically.

Layout (ddrescue manual, "Mapfile structure"): comment lines start with '#'; the first
non-comment line is the status line `current_pos current_status [current_pass]`; every further
non-comment line is a block `pos size status`. Numbers may be decimal, hex (0x) or octal (0);
we write hex like ddrescue does. Blocks must be contiguous, start at 0 and end at the size.

Maps in the layout ddrescue and we write are read in bulk, a million blocks in about the time
ddrescuelog takes; any other text goes through a line-by-line parser. Both accept and reject
exactly the same maps: the bulk reader hands over whatever it is not sure of.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from itertools import chain, islice

from rescue import __version__
from rescue.errors import DestinationError, FormatError
from rescue.formats.durable import replace_durably
from rescue.rangemap import FINISHED, STATES, RangeMap
from rescue.units import human_size

# current_status values of the status line: what phase the rescue was in
PHASES = {"?": "copying", "*": "trimming", "/": "scraping", "-": "retrying",
          "F": "filling", "G": "generating", "+": "finished"}

_MAX_OFFSET = (1 << 63) - 1  # area starts are kept as signed 64-bit numbers
_MAX_PASS = (1 << 31) - 1  # ddrescue keeps the pass in a C int
_PASS = re.compile(r"[0-9]{1,10}")  # and reads it in decimal (a leading zero is no octal there)

# The layout ddrescue and we write, which _parse_canonical reads in bulk: lines with nothing but
# blanks or a comment, the status line, more such lines, block lines of two hex numbers and a
# state, and such lines again. Text holding characters that str.splitlines() or str.split()
# treat specially ('\v', '\f', '\x1c'-'\x1f') is left to _parse_lines, as are decimal and
# octal numbers.
_NOTHING = rb"(?:[ \t]*+(?:#[^\n\v\f\x1c-\x1f]*+)?+\n)*+"
_BLOCK = rb"[ \t]*+0x[0-9A-Fa-f]++[ \t]++0x[0-9A-Fa-f]++[ \t]++[-?*/+][ \t]*+\n"
_CANONICAL = re.compile(rb"%s([^\n\v\f\x1c-\x1f]*+)\n%s((?:%s)*+)%s"
                        % (_NOTHING, _NOTHING, _BLOCK, _NOTHING))
# "0x" becomes "00" (same value) and the states blanks, so splitting leaves the hex numbers
_NUMBERS_ONLY = bytes.maketrans(b"x" + "".join(STATES).encode(), b"0" + b" " * len(STATES))
_ALL_BUT_STATES = b"0123456789abcdefABCDEFx \t\n"
_ALIKE_NEIGHBOURS = tuple(2 * s.encode() for s in STATES)
_DIGITS = 16  # hex digits per number in the bulk decode: 8 bytes, one array("q") item
_PIECE = 1 << 18  # bytes of block lines decoded at a time
_AREAS_PER_PIECE = 1024  # block lines formatted at a time
_ZERO_FILL = bytes.maketrans(b" ", b"0")
_SLOT = (1 << 64) - 1  # one 64-bit slot of a big number (the lowest holds the map's end)


SOURCE_COMMENT = "# Source: "  # then the source's identity as one line of JSON


@dataclass
class Mapfile:
    rmap: RangeMap
    current_pos: int = 0
    current_status: str = "?"
    current_pass: int = 1
    # what identifies the source (size, sector sizes, model, serial), kept in a comment line
    # that ddrescue and ddrescuelog skip; None in maps that GNU ddrescue wrote
    source: dict[str, object] | None = None


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


def _fields(line: str) -> list[str]:
    """The words of a line before its comment."""
    return (line.split("#", 1)[0] if "#" in line else line).split()


def _status_line(fields: list[str], path: str, lineno: int) -> tuple[int, str, int]:
    """(current_pos, current_status, current_pass); the pass is optional (before ddrescue 1.21)."""
    if len(fields) not in (2, 3) or fields[1] not in PHASES:
        raise FormatError(f"{path}:{lineno}: not a ddrescue mapfile status line")
    if len(fields) == 2:
        return _number(fields[0], path, lineno), fields[1], 1
    if not _PASS.fullmatch(fields[2]) or not 1 <= int(fields[2]) <= _MAX_PASS:
        raise FormatError(f"{path}:{lineno}: current pass {fields[2]!r} is not a pass number "
                          f"(1 to {_MAX_PASS}, in decimal)")
    return _number(fields[0], path, lineno), fields[1], int(fields[2])


def _complete(path: str, size: int | None, status: tuple[int, str, int], starts: array,
              states: bytearray, expected: int, lengths: array | None = None) -> Mapfile:
    """Check the parsed areas' extent against `size` and complete a short map with '?'.
    `lengths`, when the caller has them, are the areas' lengths (completed here too)."""
    if size is not None and expected > size:
        raise FormatError(f"{path}: the map covers {expected} bytes but the source has {size}: "
                          "it belongs to a different source")
    total = expected if size is None else size
    if expected < total:
        if not states or states[-1] != ord("?"):
            if expected > _MAX_OFFSET:
                raise FormatError(f"{path}: the map ends at {expected:#x}, beyond the largest "
                                  "offset a map holds")
            starts.append(expected)
            states.append(ord("?"))
            if lengths is not None:
                lengths.append(0)
        if lengths is not None:
            lengths[-1] += total - expected
    if total == 0:
        raise FormatError(f"{path}: the map describes no bytes")
    return Mapfile(RangeMap.from_arrays(total, starts, states, lengths), *status)


def _parse_lines(text: str, path: str, size: int | None) -> Mapfile:
    """The general parser: any layout the format allows, and the exact line of any error."""
    status: tuple[int, str, int] | None = None
    starts, states = array("q"), bytearray()
    expected = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = _fields(raw)
        if not fields:
            continue
        if status is None:
            status = _status_line(fields, path, lineno)
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
            if pos > _MAX_OFFSET:
                raise FormatError(f"{path}:{lineno}: block at {pos:#x} is beyond the largest "
                                  "offset a map holds")
            starts.append(pos)
            states.append(code)
    if status is None:
        raise FormatError(f"{path}: empty mapfile (no status line)")
    return _complete(path, size, status, starts, states, expected)


def _decode_blocks(data: bytes, begin: int, end: int) -> tuple[array, bytearray] | None:
    """The block lines in data[begin:end], as `_CANONICAL` matched them: their numbers in one
    array (position, length, position, ... as big-endian 64-bit items) and their state bytes.
    None when a number has more than 14 hex digits. A piece at a time keeps memory bounded."""
    values, states = array("q"), bytearray()
    while begin < end:
        cut = data.find(b"\n", min(begin + _PIECE, end - 1)) + 1
        piece = data[begin:cut]
        # every number right-aligned in 16 columns and zero-filled is 8 bytes once unhexlified
        numbers = tuple(piece.translate(_NUMBERS_ONLY).split())
        aligned = (b"%16s" * len(numbers)) % numbers
        if len(aligned) != _DIGITS * len(numbers):
            return None
        values.frombytes(binascii.unhexlify(aligned.translate(_ZERO_FILL)))
        states += piece.translate(None, _ALL_BUT_STATES)
        begin = cut
    return values, states


def _parse_canonical(data: bytes, path: str, size: int | None) -> Mapfile | None:
    """Read the block list in bulk, with C-speed operations over the whole text instead of
    Python work per line, for maps as ddrescue and we write them: header, status line, then
    only `0x.. 0x.. state` lines, contiguous from 0, no empty block, no two neighbours alike.
    None for anything else, which `_parse_lines` then decides (so both accept and reject
    exactly the same maps, and errors name their line)."""
    match = _CANONICAL.fullmatch(data)
    if match is None:
        return None
    lineno = data.count(b"\n", 0, match.start(1)) + 1
    status = _status_line(_fields(match[1].decode("ascii")), path, lineno)
    decoded = _decode_blocks(data, *match.span(2))
    if decoded is None:
        return None
    values, states = decoded
    # As big numbers of one 64-bit slot per block, positions plus lengths hold every block's
    # end, which must be the next block's position: the positions shifted by a slot. Values
    # below 2**56 carry nothing into the next slot; the first position must be 0.
    positions = int.from_bytes(values[0::2].tobytes(), "big")
    ends = positions + int.from_bytes(values[1::2].tobytes(), "big")
    if ends >> 64 != positions:
        return None
    if sys.byteorder == "little":
        values.byteswap()
    starts, lengths = values[0::2], values[1::2]
    if 0 in lengths or any(pair in states for pair in _ALIKE_NEIGHBOURS):
        return None  # empty blocks or neighbours alike: _parse_lines merges them
    return _complete(path, size, status, starts, states, ends & _SLOT, lengths)


def parse(text: str | bytes, path: str = "<mapfile>", size: int | None = None) -> Mapfile:
    """Parse a mapfile. With `size`, the map must cover exactly [0, size); a ddrescue map
    that stops short (ddrescue writes no trailing non-tried block) is completed with '?'."""
    if isinstance(text, str):
        if not text.isascii():
            return _parse_lines(text, path, size)
        data = text.encode("ascii")
    elif not text.isascii():
        raise FormatError(f"{path}: not a ddrescue mapfile (binary data)")
    else:
        data = text
    if b"\r" in data:  # the same lines as str.splitlines() sees, with '\n' ends only
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    parsed = _parse_canonical(data, path, size)
    return parsed if parsed is not None else _parse_lines(data.decode("ascii"), path, size)


def load(path: str, size: int | None = None) -> Mapfile:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FormatError(f"cannot read mapfile {path}: {exc.strerror}") from None
    loaded = parse(data, path, size)
    loaded.source = _source_of(data)
    return loaded


def _source_of(data: bytes) -> dict[str, object] | None:
    """The identity in the header (before the status line), or None."""
    marker = SOURCE_COMMENT.encode()
    for line in data.splitlines():
        if not line.startswith(b"#"):
            return None
        if line.startswith(marker):
            try:
                found = json.loads(line[len(marker):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


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
    if mapfile.source is not None:
        lines.append(SOURCE_COMMENT + json.dumps(mapfile.source, sort_keys=True))
    if mapfile.current_status == "+":
        lines.append("# Finished")
    lines.append("# current_pos  current_status  current_pass")
    lines.append(f"0x{mapfile.current_pos:08X}     {mapfile.current_status}"
                 f"               {mapfile.current_pass}")
    lines.append("#      pos        size  status")
    text = ["\n".join(lines) + "\n"]
    # one formatting call per thousand blocks, not one per block: a million areas in C
    areas = mapfile.rmap.areas()
    while piece := tuple(chain.from_iterable(islice(areas, _AREAS_PER_PIECE))):
        text.append(("0x%08X  0x%08X  %s\n" * (len(piece) // 3)) % piece)
    return "".join(text)


class MapSaveError(DestinationError):
    """The map could not be saved in its place; the message says where a copy went instead."""


def save(path: str, mapfile: Mapfile, command_line: str = "",
         start_time: float | None = None) -> None:
    """Write atomically: temp file, fsync, keep the previous map as `.bak`, rename, fsync dir.
    A crash at any moment leaves either the old or the new map complete on disk. When the map
    cannot be written there (a full disk, a failing one), the previous map stays as it was, no
    temp file is left, and a copy goes to the first folder with room (see `_emergency_copy`)."""
    text = render(mapfile, command_line, start_time)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            _link_backup(path)
        replace_durably(tmp, path)
    except OSError as exc:
        for leftover in (tmp, f"{path}.bak.tmp"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise MapSaveError(_not_saved(path, mapfile, text, exc.strerror or str(exc))) from None


def _not_saved(path: str, mapfile: Mapfile, text: str, reason: str) -> str:
    """The one line telling what was lost and where the map went instead."""
    redone = mapfile.rmap.totals()[FINISHED] - _finished_bytes(path)
    cost = f"the {human_size(max(redone, 0))} finished since it was last saved will be read again"
    copy = _emergency_copy(path, text)
    if copy is None:
        return f"cannot save mapfile {path}: {reason}; no other folder had room either, so {cost}"
    return (f"cannot save mapfile {path}: {reason}; saved it as {copy} instead: move it to "
            f"{path} before running again, or {cost}")


def _finished_bytes(path: str) -> int:
    """What the map last saved at `path` claims finished (0 without a readable one)."""
    try:
        return load(path).rmap.totals()[FINISHED]
    except FormatError:
        return 0


def _emergency_copy(path: str, text: str) -> str | None:
    """Write the map to a new file in the first of the working folder, $HOME and the temp
    folder (not the map's own folder) where it fits, as GNU ddrescue does; None if none had
    room. A new file each time: a fixed name in a shared folder could be someone's symlink."""
    own = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    folders = [os.environ.get("HOME", ""), tempfile.gettempdir()]
    with contextlib.suppress(OSError):  # the working folder may be gone
        folders.insert(0, os.getcwd())
    tried = {own}
    for folder in folders:
        if not folder or os.path.realpath(folder) in tried:
            continue
        tried.add(os.path.realpath(folder))
        try:
            fd, copy = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.emergency-",
                                        dir=folder)
        except OSError:
            continue
        try:
            with open(fd, "w", encoding="ascii") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return copy
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(copy)
    return None


def _link_backup(path: str) -> None:
    """Make `.bak` a hard link to the current map so `path` never disappears, even briefly."""
    backup = f"{path}.bak"
    tmp_backup = f"{backup}.tmp"
    if os.path.exists(tmp_backup):
        os.unlink(tmp_backup)
    os.link(path, tmp_backup)
    os.replace(tmp_backup, backup)
