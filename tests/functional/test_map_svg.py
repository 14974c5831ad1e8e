"""`rescue map MAPFILE --svg OUT`: the sector map as a picture for a report, drawn without a
terminal. The mapfiles are made by GNU ddrescuelog from known blocks, and ddrescuelog judges
the totals the picture states."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.fixtures.cli import assert_clean_failure, rescue, run

SVG = "{http://www.w3.org/2000/svg}"
SECTORS = 16384  # 8 MiB
# (first sector, sectors) rescued; the rest of the disk bad
FINISHED_BLOCKS = ((0, 12288), (14336, 2048))


def ddrescuelog_map(tmp_path: Path, finished: tuple[tuple[int, int], ...]) -> Path:
    """A mapfile with `finished` sectors '+' and every other one '-', made by ddrescuelog."""
    blocks = "".join(f"{n}\n" for first, count in finished for n in range(first, first + count))
    path = tmp_path / "disk.map"
    run("ddrescuelog", "-f", "-q", "-b512", f"-s{SECTORS * 512}", "-c+-", path, stdin=blocks)
    return path


def picture_text(svg: Path) -> tuple[list[str], str]:
    """The picture's rows of text (rich draws a row as text elements sharing a y), and all
    of it as one string."""
    rows: dict[str, str] = {}
    for element in ET.parse(svg).iter(f"{SVG}text"):  # parses only well-formed XML
        y = element.get("y", "")
        rows[y] = rows.get(y, "") + (element.text or "").replace("\xa0", " ")
    ordered = [rows[y].rstrip() for y in sorted(rows, key=float)]
    return ordered, "\n".join(ordered)


def bad_bytes_of(mapfile: Path) -> int:
    """The bad bytes of a mapfile as ddrescuelog lists them, sector by sector."""
    return 512 * len(run("ddrescuelog", "-b512", "-l-", mapfile).split())


@pytest.mark.parametrize("finished", [FINISHED_BLOCKS, ((0, SECTORS - 1),), ((1, 100),)],
                         ids=["band", "last-sector", "mostly-bad"])
def test_the_picture_states_the_legend_and_the_totals_ddrescuelog_counts(
        tmp_path: Path, finished: tuple[tuple[int, int], ...]) -> None:
    mapfile = ddrescuelog_map(tmp_path, finished)
    out = tmp_path / "map.svg"
    done = rescue("map", mapfile, "--svg", out, "--width", "64", "--height", "16")
    assert done.returncode == 0, done.stderr
    rows, text = picture_text(out)
    bad = bad_bytes_of(mapfile)
    rescued = SECTORS * 512 - bad
    legend = {line.split()[1]: int(line.split()[-2].strip("(")) for line in rows
              if line.endswith(" bytes)")}
    assert legend == {"finished": rescued, "non-tried": 0, "non-trimmed": 0,
                      "non-scraped": 0, "bad": bad}
    for name in ("finished", "non-tried", "non-trimmed", "non-scraped", "bad"):
        assert f" {name} " in text
    cells = [row for row in rows if set(row) <= {"█", "X"}]
    assert 1 <= len(cells) <= 16 and all(len(row) <= 64 for row in cells)
    # a bad sector shows however many sectors a cell covers, and only where there is one
    assert ("X" in "".join(cells)) == (bad > 0)
    assert cells[0][0] == ("X" if finished[0][0] > 0 else "█")


def text_colours(svg: Path) -> set[str]:
    """The fill colours of the picture's text styles."""
    return set(re.findall(r"-r\d+ \{ fill: (#[0-9a-f]{6})", svg.read_text()))


def test_ascii_and_mono_pictures_for_a_black_and_white_printout(tmp_path: Path) -> None:
    mapfile = ddrescuelog_map(tmp_path, FINISHED_BLOCKS)
    coloured, plain = tmp_path / "colour.svg", tmp_path / "plain.svg"
    assert rescue("map", mapfile, "--svg", coloured).returncode == 0
    assert rescue("map", mapfile, "--svg", plain, "--ascii", "--mono").returncode == 0
    rows, _ = picture_text(plain)
    cells = "".join(row for row in rows if set(row) <= {"#", "X"})
    assert cells.count("X") and cells.count("#") > cells.count("X")
    # one colour per state on the coloured one; the terminal's text colour alone without
    assert len(text_colours(coloured)) >= 3
    assert len(text_colours(plain)) == 1


def test_bad_requests_are_one_line(tmp_path: Path) -> None:
    mapfile = ddrescuelog_map(tmp_path, FINISHED_BLOCKS)
    assert_clean_failure(rescue("map", mapfile, "--svg", tmp_path / "m.svg", "--width", "5"),
                         2, "--width")
    assert_clean_failure(rescue("map", tmp_path / "none.map", "--svg", tmp_path / "m.svg"),
                         2, "none.map")
    assert_clean_failure(rescue("map", mapfile, "--svg", tmp_path / "no" / "m.svg"),
                         3, "m.svg")
    assert_clean_failure(rescue("map", mapfile, "--width", "100"), 2, "--svg")
