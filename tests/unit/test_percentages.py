"""Percentages never round to a false 100 or 0: a disk with one bad sector is not "100.0%"
rescued, and a restore one sector short is not "100.0%" written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rescue.commands.image import status_line, status_lines
from rescue.commands.restore import target_line
from rescue.engine.restorestate import TargetProgress
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED
from rescue.sim.faulty import FaultySpec
from rescue.tui.screens.restore import target_line as console_target_line
from rescue.tui.widgets.counters import progress_text, totals_text
from rescue.units import human_percent
from tests.unit.test_clocks import VirtualTime, make_rescue

GIB = 1 << 30


def test_a_part_short_of_the_whole_never_reads_as_all_or_nothing() -> None:
    assert human_percent(GIB - 512, GIB) == "99.9"
    assert human_percent(GIB - 512, GIB, 2) == "99.99"
    assert human_percent(512, GIB) == "0.1"
    assert human_percent(GIB, GIB) == "100.0"
    assert human_percent(0, GIB) == "0.0"
    assert human_percent(1, 3) == "33.3"
    assert human_percent(0, 0) == "100.0"
    assert human_percent(0, 0, of_nothing=0.0) == "0.0"


def test_one_bad_sector_is_not_shown_as_everything_rescued(tmp_path: Path) -> None:
    time = VirtualTime()
    rescue, writer = make_rescue(tmp_path, FaultySpec(4 << 20, rate=1 << 20), time)
    writer.close()
    totals = {FINISHED: GIB - 512, BAD: 512, NON_TRIED: 0, NON_TRIMMED: 0, NON_SCRAPED: 0}
    almost = dataclasses.replace(rescue.progress(), domain_size=GIB, totals=totals)
    assert "( 99.9%)" in "\n".join(status_lines(almost))
    assert "100.0" not in " ".join(status_line(almost))
    assert "(99.99%)" in progress_text(almost)
    assert "(99.99%)" in totals_text(totals, GIB)


def test_a_restore_one_sector_short_is_not_shown_as_written() -> None:
    short = TargetProgress("/dev/sdz", "writing", GIB, GIB - 512, 0, 0.0, 0.0, None)
    assert "( 99.9%)" in target_line(short)
    assert "(99.9%)" in console_target_line(short)
