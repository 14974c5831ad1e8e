"""The reads and events logs: what the writers write, the parser reads back, line for line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rescue.errors import DestinationError, FormatError
from rescue.formats.readlog import (
    EventsLogWriter,
    Read,
    ReadsLogWriter,
    format_elapsed,
    format_percent,
    format_rate,
    load_events,
    load_reads,
    parse_elapsed,
    parse_events,
    parse_reads,
    phase_text,
)


def random_reads(seed: int, count: int) -> list[Read]:
    """Reads as a rescue makes them: whole successes and whole failures, any size, any place
    (beyond 32 bits too)."""
    rng = random.Random(seed)
    reads = []
    for _ in range(count):
        size = rng.choice([512, 4096, 65536, 1 << 20])
        pos = rng.randrange(0, 1 << 42) // 512 * 512
        good = rng.random() < 0.7
        reads.append(Read(pos, size, size if good else 0, 0 if good else size))
    return reads


@pytest.mark.parametrize("seed", range(4))
def test_a_written_reads_log_parses_back_to_the_same_reads_and_phases(tmp_path: Path,
                                                                      seed: int) -> None:
    path = tmp_path / "reads.log"
    reads = random_reads(seed, 200)
    phases = {0: phase_text("copying", 1, True), 80: phase_text("copying", 2, False),
              120: phase_text("trimming", 1, True), 150: phase_text("scraping", 1, True),
              190: phase_text("retrying", 1, False)}
    log = ReadsLogWriter(str(path), "rescue image a b")
    for index, read in enumerate(reads):
        if index in phases:
            log.phase(phases[index])
        log.read(read.pos, read.size, read.copied, read.error_size)
    log.close()

    parsed = load_reads(str(path))
    assert parsed.reads == reads
    assert [(mark.index, mark.text) for mark in parsed.phases] == list(phases.items())
    assert parsed.runs == 1
    assert parsed.read_errors() == sum(read.error_size > 0 for read in reads)


def test_a_reads_log_is_appended_to_with_a_header_per_run(tmp_path: Path) -> None:
    path = tmp_path / "reads.log"
    for run in range(3):
        log = ReadsLogWriter(str(path), f"run {run}")
        log.phase(phase_text("copying", 1, True))
        log.read(run * 512, 512, 512, 0)
        log.close()
    text = path.read_text()
    parsed = parse_reads(text)
    assert parsed.runs == 3
    assert [read.pos for read in parsed.reads] == [0, 512, 1024]
    assert [mark.index for mark in parsed.phases] == [0, 1, 2]
    assert text.count("\n\n# Reads Logfile. Created by rescue version ") == 2


def test_each_line_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    """A log is read while its job runs, and a kill leaves it complete up to the last read."""
    path = tmp_path / "reads.log"
    log = ReadsLogWriter(str(path), "rescue image a b")
    log.phase(phase_text("copying", 1, True))
    for n in range(1, 6):
        log.read(n * 4096, 4096, 0, 4096)
        assert load_reads(str(path)).reads[-1] == Read(n * 4096, 4096, 0, 4096)
    log.close()


def test_an_events_log_parses_back(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    log = EventsLogWriter(str(path), "rescue image a b")
    log.event(phase_text("copying", 1, True), format_percent(0, 1000))
    log.event(phase_text("trimming", 1, True), format_percent(969, 1000))
    log.message("Interrupted by user")
    log.end(format_percent(970, 1000), 0x12345600, "trimming", 21_023_456.7, 274)
    log.close()

    parsed = load_events(str(path))
    assert [(e.rescued, e.text) for e in parsed.events] == [
        (0.0, "Copying non-tried blocks... Pass 1 (forwards)"),
        (96.9, "Trimming failed blocks... (forwards)"),
        (None, "Interrupted by user"),
        (97.0, "End of run (0x12345600  trimming)"),
        (97.0, "average rate: 21023 kB/s, read errors: 274")]
    assert parsed.ends() == [(0x12345600, "trimming")]
    assert parsed.summary() == ("21023 kB/s", 274)
    assert parsed.runs == 1


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 61, 3599, 3600, 86399, 86400, 90061,
                                     10**7])
def test_elapsed_times_read_back(seconds: int) -> None:
    assert parse_elapsed(format_elapsed(seconds)) == seconds


def test_elapsed_times_look_like_ddrescues() -> None:
    assert [format_elapsed(s) for s in (0, 64, 7384, 93784)] == [
        "0s", "1m:04s", "2h:03m:04s", "1d:02h:03m:04s"]


def test_percentages_are_truncated_like_ddrescues() -> None:
    """ddrescue prints 31/32 as 96.87%, not 96.88%."""
    assert [format_percent(p, w) for p, w in ((0, 7), (31, 32), (1, 3), (5, 5), (0, 0))] == [
        "  0.00%", " 96.87%", " 33.33%", "100.00%", "100.00%"]


def test_rates_keep_at_most_five_digits() -> None:
    assert [format_rate(r) for r in (0, 99999, 100000, 21_023_456.7, 5e12)] == [
        "0 B/s", "99999 B/s", "100 kB/s", "21023 kB/s", "5000 GB/s"]


def test_a_line_cut_short_at_the_end_is_left_out() -> None:
    """ddrescue writes through a buffer: killed, its log may end inside a line."""
    text = "# Reads Logfile. Created by GNU ddrescue version 1.27\n0x00000000\t512\t512\t0\n0x0000"
    assert parse_reads(text).reads == [Read(0, 512, 512, 0)]


@pytest.mark.parametrize("line", ["0x00000000\t512\t512", "0x00000000 512 512 0 7", "garbage",
                                  "0xZZ\t512\t0\t512"])
def test_a_damaged_reads_line_is_refused_with_its_line_number(line: str) -> None:
    text = f"# Reads Logfile\n0x00000000\t512\t512\t0\n{line}\n0x00000200\t512\t512\t0\n"
    with pytest.raises(FormatError, match=r"reads.log:3: not a line of a reads log"):
        parse_reads(text, "reads.log")


def test_a_damaged_events_line_is_refused_with_its_line_number() -> None:
    text = "# Events Logfile\n            0s    0.00%  Copying\nEnd of run\n"
    with pytest.raises(FormatError, match=r"ev.log:3: not a line of an events log"):
        parse_events(text, "ev.log")


def test_read_errors_until_the_last_good_read() -> None:
    good, bad = Read(0, 512, 512, 0), Read(512, 512, 0, 512)
    text = "".join(f"0x{r.pos:08X}\t{r.size}\t{r.copied}\t{r.error_size}\n"
                   for r in (bad, good, bad, bad, Read(1024, 512, 512, 0), bad, bad, bad))
    log = parse_reads(text)
    assert (log.read_errors(), log.read_errors_until_last_good()) == (6, 3)
    assert parse_reads("0x0\t512\t0\t512\n").read_errors_until_last_good() == 1


def test_reading_rescued_bytes_again_rescues_nothing_new() -> None:
    """rescue reads a sector it has rescued to check that the source still answers."""
    reads = [Read(0, 4096, 4096, 0), Read(4096, 512, 0, 512), Read(4608, 512, 0, 512),
             Read(0, 512, 512, 0), Read(5120, 512, 0, 512), Read(3584, 1024, 1024, 0)]
    text = "".join(f"0x{r.pos:08X}\t{r.size}\t{r.copied}\t{r.error_size}\n" for r in reads)
    assert parse_reads(text).read_errors_until_last_good() == 3  # the last read: 512 new bytes
    assert parse_reads(text.rsplit("0x", 1)[0]).read_errors_until_last_good() == 0


def test_a_log_that_cannot_be_written_is_a_destination_error() -> None:
    """/dev/full takes the open and refuses every write, as a full disk does."""
    with pytest.raises(DestinationError, match="cannot write the log /dev/full"):
        ReadsLogWriter("/dev/full", "rescue image a b")


def test_a_log_in_a_missing_folder_is_a_destination_error(tmp_path: Path) -> None:
    with pytest.raises(DestinationError, match="cannot open the log"):
        EventsLogWriter(str(tmp_path / "no" / "events.log"), "")
