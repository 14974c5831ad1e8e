"""A rescue tells its observer of every read the source saw, probe reads included, and of every
phase it entered: the reads log it feeds accounts for each sector read, as the disk counted."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from rescue.engine.rescue import Rescue, RescueOptions
from rescue.errors import SourceLostError
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.formats.readlog import ReadsLogWriter, load_reads
from rescue.rangemap import RangeMap
from rescue.sim.faulty import SECTOR, FaultySource

SPECS = {
    # a long bad area: thousands of failures in a row, so the source is probed as they go on
    "long-bad": "sim:size=8M,bad=3M+1M,bad=6M+2k",
    "flaky": "sim:size=4M,flaky=1M+64k*2,bad=2M+4k",
    "reverse": "sim:size=4M,bad=1M+64k,bad=3M+512",
    # gone part-way: the probes fail too, and the rescue stops
    "gone": "sim:size=8M,bad=2M+64k,gone=5M",
}
KINDS = {"Copying": "?", "Trimming": "*", "Scraping": "/", "Retrying": "-"}


@pytest.mark.parametrize("name", list(SPECS))
def test_every_read_of_the_source_is_in_the_reads_log(tmp_path: Path, name: str) -> None:
    source = FaultySource(SPECS[name])
    source.track_reads = True
    writer = RawWriter(str(tmp_path / "out.img"), source.size)
    log = ReadsLogWriter(str(tmp_path / "reads.log"), "test")
    saved: list[tuple[str, int]] = []  # (status, pass) of each map saved
    rescue = Rescue(source, writer, Mapfile(RangeMap(source.size)),
                    lambda m: saved.append((m.current_status, m.current_pass)),
                    RescueOptions(retries=2, reverse=name == "reverse"), observer=log)
    lost = False
    try:
        rescue.run()
    except SourceLostError:
        lost = True
    finally:
        writer.close()
        log.close()

    assert lost == (name == "gone")
    logged = load_reads(str(tmp_path / "reads.log"))
    sectors = Counter(sector for read in logged.reads
                      for sector in range(read.pos // SECTOR, -(-(read.pos + read.size)
                                                                // SECTOR)))
    assert sectors == Counter(source.reads)
    assert sum(read.copied for read in logged.reads) == source.served
    assert logged.read_errors() == source.failed_reads > 0
    assert all(read.copied + read.error_size == read.size for read in logged.reads)
    assert logged.phases[0].index == 0
    # each phase and pass entered is logged, as the map saved on entering it records it
    entered = [(KINDS[mark.text.split()[0]], int(number[1]) if (
        number := re.search(r"(?:Pass|Retry) ([0-9]+)", mark.text)) else 1)
        for mark in logged.phases]
    phases = [pair for i, pair in enumerate(saved)
              if pair[0] != "+" and (i == 0 or saved[i - 1] != pair)]
    if name == "gone":  # the map is saved once more as it was when the source last answered
        phases = phases[:len(entered)]
    assert phases == entered
