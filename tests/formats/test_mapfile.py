"""GNU ddrescue mapfiles: the bulk reader and the line-by-line parser decide every input alike,
maps come back from a save unchanged, and ddrescuelog reads and rewrites our maps as we do."""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.errors import FormatError
from rescue.formats import mapfile
from rescue.formats.mapfile import Mapfile
from rescue.rangemap import STATES, RangeMap
from tests.fixtures.mapfiles import SAMPLES

GIB = 1 << 30
# map sizes whose positions need 8 to 14 hex digits, and one that is not sector-aligned
SIZES = (8 * (1 << 20), 6 * GIB, 3 << 40, (1 << 55) + 12345, 1_000_003)
HEADER = ("# Mapfile. Created by GNU ddrescue version 1.27\n"
          "# current_pos  current_status  current_pass\n")

Outcome = tuple[object, ...]
Parser = Callable[..., Mapfile]


def random_map(rng: random.Random, size: int, changes: int) -> RangeMap:
    rmap = RangeMap(size, rng.choice(STATES))
    for _ in range(changes):
        pos = rng.randrange(size)
        rmap.set(pos, rng.randrange(1, min(size - pos, rng.choice((4096, 1 << 24, size))) + 1),
                 rng.choice(STATES))
    return rmap


def described(parsed: Mapfile) -> Outcome:
    """Everything a caller can see of a map: its status and areas."""
    rmap = parsed.rmap
    return ("map", parsed.current_pos, parsed.current_status, parsed.current_pass, rmap.size,
            list(rmap.areas()), rmap.totals())


def outcome(parser: Parser, text: str | bytes, size: int | None) -> Outcome:
    """What a parse gives: the map, or the error's message."""
    try:
        return described(parser(text, "m.map", size))
    except FormatError as error:
        return ("error", str(error))


def number(rng: random.Random, value: int, liberty: float) -> str:
    """ddrescue's spelling of a number or, at the rate `liberty`, any other one."""
    if rng.random() >= liberty:
        return f"0x{value:08X}"
    return rng.choice([f"0x{value:x}", str(value), f"0{value:o}", f"0X{value:X}", f"+{value}",
                       f"-{value}", f"0x{value:020X}", f"0b{value:b}", f"{value:_}", "0755"])


def mutated_text(rng: random.Random) -> tuple[str, int | None]:
    """A mapfile as ddrescue writes it, with a few of the liberties the format allows (or
    mistakes it forbids) sprinkled in, and a source size that may or may not fit it."""
    liberty = rng.choice([0.0, 0.01, 0.2])
    lines = [f"{number(rng, rng.randrange(1 << 30), liberty)}     {rng.choice('?*/-FG+x')}"
             + rng.choice(["               1", "  0x2", "", " 1 2"])]
    pos, previous = 0, ""
    for _ in range(rng.choice([0, 1, 2, 5, 30])):
        length = rng.choice([512, 4096, rng.randrange(1, 1 << 20)] if rng.random() >= liberty
                            else [0, 1 << 60])
        state = rng.choice([s for s in STATES if s != previous or rng.random() < liberty])
        start = pos if rng.random() >= liberty else pos + rng.choice([-1, 1])
        lines.append(("" if rng.random() >= liberty else rng.choice([" ", "\t"]))
                     + number(rng, start, liberty) + rng.choice(["  ", "\t", " "])
                     + number(rng, length, liberty) + "  " + state
                     + ("" if rng.random() >= liberty else rng.choice([" ", "  # note", "#"])))
        pos, previous = start + length, state
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(["", "  ", "# comment"]))
    newline = rng.choice(["\n"] * 6 + ["\r\n", "\r"])
    text = HEADER + "#      pos        size  status\n".join([lines[0] + newline, ""]) \
        + newline.join(lines[1:]) + rng.choice([newline, ""])
    if rng.random() < 0.2:
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice("\v\f\x1c\x1d\x1e\x1f\x00#x? \n\t\r\u2028\xa0") + text[at:]
    return text, rng.choice([None, pos, pos + 512, max(pos - 1, 0), 4096])


def test_saved_maps_load_back_unchanged(tmp_path: Path) -> None:
    rng = random.Random(1)
    path = tmp_path / "saved.map"
    for size in SIZES:
        for changes in (0, 1, 40, 400):
            rmap = random_map(rng, size, changes)
            saved = Mapfile(rmap, rng.randrange(size), rng.choice("?*/-+"), rng.randint(1, 9))
            mapfile.save(str(path), saved)
            for expected_size in (size, None):
                assert described(mapfile.load(str(path), expected_size)) == described(saved)
    for sample in SAMPLES.values():  # real maps, ddrescue's and ours, come back alike
        found = mapfile.load(str(sample))
        mapfile.save(str(path), found)
        assert described(mapfile.load(str(path), found.rmap.size)) == described(found)
        assert mapfile.load(str(path)).source == found.source


def test_the_bulk_reader_decides_every_input_as_the_line_parser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bulk = mapfile._parse_canonical
    decided_in_bulk = []

    def counting(*args: object) -> Mapfile | None:
        parsed = bulk(*args)  # type: ignore[arg-type]
        decided_in_bulk.append(parsed is not None)
        return parsed

    monkeypatch.setattr(mapfile, "_parse_canonical", counting)
    rng = random.Random(2)
    for _ in range(3000):
        text, size = mutated_text(rng)
        read = outcome(mapfile.parse, text, size)
        assert read == outcome(mapfile._parse_lines, text, size), text
        if text.isascii():
            assert read == outcome(mapfile.parse, text.encode(), size)
    assert sum(decided_in_bulk) > len(decided_in_bulk) // 4, "the bulk reader took part"


@pytest.mark.parametrize("piece", [1, 100, 1 << 18])
def test_large_maps_read_in_pieces_as_the_line_parser_reads_them(
        monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    monkeypatch.setattr(mapfile, "_PIECE", piece)
    rng = random.Random(3)
    for size in SIZES:
        text = mapfile.render(Mapfile(random_map(rng, size, 3000), 0, "?", 1))
        assert outcome(mapfile.parse, text, size) == outcome(mapfile._parse_lines, text, size)


@pytest.mark.parametrize(("blocks", "areas"), [
    ("0 512 +\n512 1024 -\n", [(0, 512, "+"), (512, 1024, "-")]),  # decimal
    ("0x0 0x200 +\n01000 01000 -\n", [(0, 512, "+"), (512, 512, "-")]),  # C octal
    ("0x0 0x200 +\n0x200 0x200 +\n0x400 0x0 -\n0x400 0x200 /\n",
     [(0, 1024, "+"), (1024, 512, "/")]),  # alike neighbours merge, empty blocks vanish
    ("0x0 0x200 +  # read at last\n0x200 0x400 -\n", [(0, 512, "+"), (512, 1024, "-")]),
    ("0x0 0x000000000000000200 +\n", [(0, 512, "+")]),  # more digits than the bulk reader's
    ("0x0 0x200 +\r\n0x200 0x400 -\r\n", [(0, 512, "+"), (512, 1024, "-")]),
    ("0x0 0x200 +  # a vertical tab ends a line\v0x200 0x400 -\n",
     [(0, 512, "+"), (512, 1024, "-")]),
])
def test_layouts_the_bulk_reader_leaves_to_the_line_parser(blocks: str,
                                                           areas: list[tuple[int, int, str]]
                                                           ) -> None:
    parsed = mapfile.parse(HEADER + "0x0 ?\n" + blocks)
    assert list(parsed.rmap.areas()) == areas
    assert (parsed.current_pos, parsed.current_status, parsed.current_pass) == (0, "?", 1)


@pytest.mark.parametrize(("text", "size", "problem"), [
    ("0 ? 1\n0 0x8000000000000000 +\n0x8000000000000000 0x200 -\n", None,
     r"m\.map:3: block at 0x8000000000000000 is beyond the largest offset"),
    ("0 ? 1\n0 0x8000000000000000 +\n", 1 << 64, "ends at 0x8000000000000000, beyond"),
    ("0 ? 1\n0x0 0x200 +\n0x200 0x200 -\n", 1024 - 1, "different source"),
])
def test_maps_no_range_map_can_hold_are_one_line_format_errors(text: str, size: int | None,
                                                                problem: str) -> None:
    with pytest.raises(FormatError, match=problem) as failure:
        mapfile.parse(text, "m.map", size)
    assert "\n" not in str(failure.value)


def test_non_ascii_bytes_are_a_binary_file() -> None:
    with pytest.raises(FormatError, match="binary"):
        mapfile.parse(HEADER.encode() + b"0 ? 1\n0 512 +\xff\n", "m.map")


def ddrescuelog(*args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["ddrescuelog", *args], input=stdin, check=True,
                          capture_output=True).stdout.decode("ascii")


def after_header(text: str) -> list[str]:
    """The status line and the block lines: what ddrescue tools must write as we do."""
    lines = text.splitlines()
    return lines[lines.index("# current_pos  current_status  current_pass") + 1:]


def test_ddrescuelog_rewrites_our_maps_line_for_line(tmp_path: Path) -> None:
    rng = random.Random(4)
    path = tmp_path / "ours.map"
    for size in SIZES:
        ours = Mapfile(random_map(rng, size, 200), rng.randrange(size), "/", 2)
        mapfile.save(str(path), ours)
        rewritten = ddrescuelog("-a", "?,?", "-", stdin=path.read_bytes())
        assert after_header(rewritten) == after_header(path.read_text())
        assert described(mapfile.parse(rewritten, size=size)) == described(ours)


def test_the_source_identity_line_loads_back_and_ddrescuelog_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "ours.map"
    identity = {"size": 8 * GIB, "model": "Disk \"A\" #1\n", "serial": "\u00e9", "ok": None}
    ours = Mapfile(random_map(random.Random(6), 8 * GIB, 50), 0, "*", 1, source=identity)
    mapfile.save(str(path), ours)
    assert mapfile.load(str(path)).source == identity
    assert described(mapfile.load(str(path))) == described(ours)
    rewritten = ddrescuelog("-a", "?,?", "-", stdin=path.read_bytes())
    assert after_header(rewritten) == after_header(path.read_text())
    path.write_text(path.read_text().replace('"ok": null', '"ok": nul'))  # damaged: no identity
    assert mapfile.load(str(path)).source is None


def test_ddrescuelog_counts_the_areas_we_count(tmp_path: Path) -> None:
    path = tmp_path / "ours.map"
    rmap = random_map(random.Random(5), 6 * GIB, 500)
    mapfile.save(str(path), Mapfile(rmap))
    for judged, areas in [(path, rmap)] + [(sample, mapfile.load(str(sample)).rmap)
                                           for sample in SAMPLES.values()]:
        shown = ddrescuelog("-t", str(judged))
        names = {"non-tried": "?", "rescued": "+", "non-trimmed": "*", "non-scraped": "/",
                 "bad-sector": "-"}
        counted = {names[name]: int(count) for name, count
                   in re.findall(r"^\s*([\w-]+):.*?in\s+(\d+) area", shown, re.M)
                   if name in names}
        ours = {state: sum(1 for *_, s in areas.areas() if s == state) for state in STATES}
        assert counted == ours, judged
        assert re.search(rf"extent:.*in\s+{len(areas)} area", shown), judged



@pytest.mark.parametrize(("passno", "expected"), [
    ("1", 1), ("7", 7), ("017", 17), ("2147483647", 2147483647),
    ("0", None), ("-1", None), ("0x10", None), ("2147483648", None)])
def test_the_pass_is_a_decimal_c_int_from_one(passno: str, expected: int | None,
                                              tmp_path: Path) -> None:
    """ddrescue reads the pass in decimal into a C int and refuses one below 1: ddrescuelog
    and both our parsers accept and reject these alike, with the same value."""
    text = f"0x0 + {passno}\n0x0 0x100000 +\n"
    path = tmp_path / "pass.map"
    path.write_text(text)
    theirs = subprocess.run(["ddrescuelog", "-t", str(path)], capture_output=True)
    assert (theirs.returncode == 0) == (expected is not None)
    for parser in (mapfile.parse, mapfile._parse_lines):
        got = outcome(parser, text, 1 << 20)
        assert (got[3] if got[0] == "map" else None) == expected, parser
