"""`--log-reads` and `--log-events`: GNU ddrescue writes the real logs the parser must read, and
its lines are the shapes ours must have; a rescue's log accounts for every read it made."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rescue.formats.readlog import Read, load_events, load_reads, parse_reads
from tests.fixtures.cli import assert_clean_failure, rescue, rescue_process, summary
from tests.fixtures.faultdisk import SECTOR, faulty_device, make_backing
from tests.fixtures.judges import map_blocks, map_status

MIB = 1 << 20
BAD = [(1 * MIB, 64 * 1024), (0x310000, 4096)]  # (start, length) of the bad areas
SPEC = "sim:size=4M," + ",".join(f"bad={start}+{length}" for start, length in BAD)
# ddrescue's test mode: the areas its map does not call finished fail without being read
TEST_MAP = "".join(["# Mapfile\n0x00000000  ?  1\n",
                    "0x00000000  0x00100000  +\n0x00100000  0x00010000  -\n",
                    "0x00110000  0x00200000  +\n0x00310000  0x00001000  -\n",
                    "0x00311000  0x000EF000  +\n"])
STATUS_NAMES = {"?": "copying", "*": "trimming", "/": "scraping", "-": "retrying",
                "+": "finished"}
PHASE_KINDS = ("Copying non-tried blocks", "Trimming failed blocks", "Scraping failed blocks",
               "Retrying bad sectors")


def ddrescue_logs(workdir: Path, source: str, *options: str) -> tuple[Path, Path, Path, str]:
    """Run GNU ddrescue with both logs; its reads log, events log, mapfile and screen."""
    reads, events, mapfile = workdir / "reads.log", workdir / "events.log", workdir / "out.map"
    done = subprocess.run(["ddrescue", *options, f"--log-reads={reads}",
                           f"--log-events={events}", source, str(workdir / "out.img"),
                           str(mapfile)], capture_output=True, text=True, check=True)
    return reads, events, mapfile, done.stdout


@pytest.fixture(scope="module")
def ddrescue_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    """ddrescue in test mode over a 4 MiB file with the bad areas of BAD, two retry passes,
    slowed so that the run lasts past a second (its reads log marks each second)."""
    workdir = tmp_path_factory.mktemp("ddrescue")
    (workdir / "in.bin").write_bytes(random.Random(5).randbytes(4 * MIB))
    (workdir / "test.map").write_text(TEST_MAP)
    return ddrescue_logs(workdir, str(workdir / "in.bin"), "-H", str(workdir / "test.map"),
                         "-r2", "--max-read-rate=3M")


def finished_areas(mapfile: Path) -> list[tuple[int, int]]:
    return [(pos, pos + size) for pos, size, state in map_blocks(mapfile) if state == "+"]


def union(reads: list[Read]) -> list[tuple[int, int]]:
    """The areas the reads copied, merged: (start, end) pairs in order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((r.pos, r.pos + r.copied) for r in reads if r.copied):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def overlaps_bad(read: Read) -> bool:
    return any(read.pos < start + length and start < read.pos + read.size
               for start, length in BAD)


def line_shape(line: str) -> str:
    """A log line with its numbers as N (hex positions as <hex>), the program and command that
    wrote it left out, and an event line reduced to its column widths and its text."""
    if line.startswith("# Command line: "):
        return "# Command line: *"
    line = re.sub(r"Created by .* version \S+$", "Created by *", line)
    columns = ""
    event = re.fullmatch(r"( *\S+)( +[0-9.]+%  )(.*)", line)
    if event:  # the widths, in letters, since the digits become N below
        columns, line = f"<time {'w' * len(event[1])}><percent {'w' * len(event[2])}>", event[3]
    line = re.sub(r"0x[0-9A-F]{8,}", "<hex>", line)
    return columns + re.sub(r"[0-9]+", "N", line)


def shapes(path: Path) -> set[str]:
    return {line_shape(line) for line in path.read_text().split("\n")}


# ---- the parser reads GNU ddrescue's logs ---------------------------------------------------

def test_the_parser_reads_ddrescues_reads_log(ddrescue_run: tuple[Path, Path, Path, str]
                                              ) -> None:
    reads_path, events_path, mapfile, screen = ddrescue_run
    log = load_reads(str(reads_path))
    assert log.runs == 1
    errors = int(re.findall(r"read errors:\s*([0-9]+)", screen)[-1])
    assert log.read_errors() == errors > 0
    assert sum(read.copied for read in log.reads) == sum(
        end - start for start, end in finished_areas(mapfile))
    assert union(log.reads) == finished_areas(mapfile)
    assert all(overlaps_bad(read) for read in log.reads if read.failed)
    assert not any(overlaps_bad(read) for read in log.reads if read.copied)
    events = load_events(str(events_path))
    assert [mark.text for mark in log.phases] == [
        e.text for e in events.events if not e.text.startswith("End of run")]
    assert log.phases[0].index == 0
    assert {kind for kind in PHASE_KINDS for mark in log.phases if mark.text.startswith(kind)
            } == set(PHASE_KINDS)


def test_the_parser_reads_ddrescues_events_log(ddrescue_run: tuple[Path, Path, Path, str]
                                               ) -> None:
    _, events_path, mapfile, _ = ddrescue_run
    events = load_events(str(events_path))
    assert events.runs == 1
    position, status = map_status(mapfile)
    assert status == "+"
    assert events.ends() == [(position, "finished")]
    rescued = [e.rescued for e in events.events if e.rescued is not None]
    assert rescued[0] == 0.0 and rescued == sorted(rescued)


def test_the_parser_reads_why_ddrescue_stopped(tmp_path: Path) -> None:
    """With at most one bad area allowed, ddrescue stops when trimming finds the second."""
    (tmp_path / "in.bin").write_bytes(bytes(4 * MIB))
    (tmp_path / "test.map").write_text(TEST_MAP)
    events, mapfile = tmp_path / "events.log", tmp_path / "out.map"
    done = subprocess.run(["ddrescue", "-H", str(tmp_path / "test.map"), "-e1",
                           f"--log-events={events}", str(tmp_path / "in.bin"),
                           str(tmp_path / "out.img"), str(mapfile)], capture_output=True)
    assert done.returncode == 1, done.stderr
    log = load_events(str(events))
    assert [e.text for e in log.events if e.rescued is None] == [
        "Too many bad areas in input file"]
    position, status = map_status(mapfile)
    assert log.ends() == [(position, STATUS_NAMES[status])]


@pytest.mark.slow
@pytest.mark.root
def test_the_parser_reads_ddrescues_log_of_a_disk_with_real_read_errors(tmp_path: Path
                                                                        ) -> None:
    """On the FUSE disk whose bad sectors answer EIO, ddrescue's own reads (direct, 512-byte
    sectors): failures only where the disk is bad, and the map's finished bytes copied."""
    backing = tmp_path / "backing.img"
    make_backing(str(backing), 4 * MIB, seed=3)
    with faulty_device(str(backing), SPEC) as device:
        reads_path, _, mapfile, _ = ddrescue_logs(tmp_path, device, "-d", "-b", str(SECTOR),
                                                  "-r1")
    log = load_reads(str(reads_path))
    failed = [read for read in log.reads if read.failed]
    assert failed and all(overlaps_bad(read) for read in failed)
    assert not any(overlaps_bad(read) for read in log.reads if read.copied)
    assert union(log.reads) == finished_areas(mapfile)


# ---- rescue's logs --------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["auto", "sequential"])  # auto: metadata first (bad disk)
def test_a_rescue_logs_every_read_in_ddrescues_notation(
        tmp_path: Path, order: str, ddrescue_run: tuple[Path, Path, Path, str]) -> None:
    reads_path, events_path = tmp_path / "reads.log", tmp_path / "events.log"
    image = tmp_path / "out.img"
    result = rescue("image", SPEC, image, "-r1", "--order", order, "--json",
                    "--log-reads", reads_path, "--log-events", events_path)
    assert result.returncode == 1, result.stderr
    done = summary(result)
    mapfile = Path(f"{image}.map")

    log = load_reads(str(reads_path))
    assert log.read_errors() == done["read_errors"] > 0
    assert all(overlaps_bad(read) for read in log.reads if read.failed)
    assert union(log.reads) == finished_areas(mapfile)
    # bytes copied twice are the sectors read again to check that the source is still there
    seen: list[Read] = []
    again = []
    for read in (read for read in log.reads if read.copied):
        if union([*seen, read]) == union(seen):
            again.append(read)
        seen.append(read)
    assert all(read.size == SECTOR for read in again)
    assert sum(read.copied for read in log.reads) - SECTOR * len(again) == done["rescued"]

    ddrescue_reads, ddrescue_events, _, _ = ddrescue_run
    assert shapes(reads_path) <= shapes(ddrescue_reads)
    ours = {shape for shape in shapes(events_path) if "average rate" not in shape}
    assert ours <= shapes(ddrescue_events)

    events = load_events(str(events_path))
    assert [mark.text for mark in log.phases] == [
        e.text for e in events.events if e.rescued is not None and not
        e.text.startswith(("End of run", "average rate"))]
    assert log.phases[0].index == 0
    assert {kind for kind in PHASE_KINDS for mark in log.phases if mark.text.startswith(kind)
            } == set(PHASE_KINDS)
    assert events.ends() == [(map_status(mapfile)[0], "finished")]
    assert events.summary() is not None and events.summary()[1] == done["read_errors"]


SLOW_SPEC = "sim:size=8M,seed=4,rate=6M,bad=2080k+192k,slow=2080k+192k@0.004"


def wait_for_phase(path: Path, kind: str, process: subprocess.Popen[str]) -> None:
    """Until the reads log, read while the job runs, shows the phase begun."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            text = path.read_text()
            if any(mark.text.startswith(kind) for mark in
                   parse_reads(text[:text.rfind("\n") + 1]).phases):
                return
        time.sleep(0.05)
    pytest.fail(f"the job ended or stalled before {kind}")


@pytest.mark.slow
def test_a_killed_job_leaves_complete_lines_and_resuming_appends(
        tmp_path: Path, ddrescue_run: tuple[Path, Path, Path, str]) -> None:
    reads_path, events_path = tmp_path / "reads.log", tmp_path / "events.log"
    image = tmp_path / "out.img"
    command = ["image", SLOW_SPEC, str(image), "--order", "sequential", "--checkpoint", "0.2",
               "--log-reads", str(reads_path), "--log-events", str(events_path)]
    process = rescue_process(*command)
    try:
        wait_for_phase(reads_path, "Scraping", process)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()

    killed_reads, killed_events = reads_path.read_text(), events_path.read_text()
    for text in (killed_reads, killed_events):
        assert text.endswith("\n") and "# End time:" not in text
    killed = parse_reads(killed_reads)
    assert killed.reads and killed.read_errors()
    assert load_events(str(events_path)).ends() == []

    again = rescue(*command)
    assert again.returncode == 1, again.stderr
    assert reads_path.read_text().startswith(killed_reads + "\n# Reads Logfile. ")
    assert events_path.read_text().startswith(killed_events + "\n# Events Logfile. ")
    resumed, events = load_reads(str(reads_path)), load_events(str(events_path))
    assert (resumed.runs, events.runs) == (2, 2)
    assert resumed.reads[:len(killed.reads)] == killed.reads
    assert union(resumed.reads) == finished_areas(Path(f"{image}.map"))
    assert events.ends() == [(map_status(Path(f"{image}.map"))[0], "finished")]
    assert shapes(reads_path) <= shapes(ddrescue_run[0])  # its seconds marked, as ddrescue's


# ---- what a log may not be ------------------------------------------------------------------

@pytest.mark.parametrize("log, refusal", [
    ("source.img", "reads log source.img cannot be the source"),
    ("out.img", "reads log out.img cannot be the image"),
    ("out.img.map", "reads log out.img.map cannot be the mapfile"),
    ("out.img.map.bak", "reads log out.img.map.bak cannot be the mapfile's backup"),
    ("out.img.manifest.json", "reads log out.img.manifest.json cannot be the image's manifest"),
    ("events.log", "events log events.log cannot be the reads log"),
    (".", r"reads log \. is not a regular file"),
    ("none/reads.log", "folder of the reads log none/reads.log does not exist")])
def test_a_log_is_a_file_of_its_own(tmp_path: Path, log: str, refusal: str) -> None:
    source = tmp_path / "source.img"
    source.write_bytes(random.Random(1).randbytes(MIB))
    before = source.read_bytes()
    result = rescue("image", source, "out.img", "--log-reads", log,
                    "--log-events", "events.log", cwd=tmp_path)
    assert_clean_failure(result, 2, refusal)
    assert source.read_bytes() == before
    assert not (tmp_path / "events.log").exists()


@pytest.mark.parametrize("spec, code, reason", [
    ("sim:size=8M,bad=2M+64k,gone=5M", 4, "stopped answering"),
    # scraping 510 bad sectors at 5 ms each reads nothing good for 2.5 s
    pytest.param("sim:size=4M,bad=2M+256k,slow=2M+256k@0.005", 6, "Timeout expired",
                 marks=pytest.mark.slow),
])
def test_the_events_log_says_why_a_run_stopped(tmp_path: Path, spec: str, code: int,
                                               reason: str) -> None:
    events_path, image = tmp_path / "events.log", tmp_path / "out.img"
    timeout = ["--timeout", "1"] if code == 6 else []
    result = rescue("image", spec, image, "--order", "sequential", "--log-events",
                    events_path, *timeout)
    assert result.returncode == code, result.stderr
    events = load_events(str(events_path))
    messages = [e.text for e in events.events if e.rescued is None]
    assert len(messages) == 1 and reason in messages[0]
    position, current = map_status(Path(f"{image}.map"))
    assert events.ends() == [(position, STATUS_NAMES[current])]


def test_a_log_that_cannot_be_opened_stops_the_job_before_the_image_is_made(tmp_path: Path
                                                                            ) -> None:
    """/proc/version is a regular file that no one may write, not even root."""
    image = tmp_path / "out.img"
    result = rescue("image", SPEC, image, "--log-reads", tmp_path / "reads.log",
                    "--log-events", "/proc/version")
    assert_clean_failure(result, 3, "cannot open the log /proc/version")
    assert not image.exists() and not Path(f"{image}.map").exists()
    assert parse_reads((tmp_path / "reads.log").read_text()).reads == []
    again = rescue("image", SPEC, image, "--log-reads", tmp_path / "reads.log")
    assert again.returncode == 1, again.stderr
    assert load_reads(str(tmp_path / "reads.log")).runs == 2


@pytest.mark.slow
def test_an_interrupted_job_says_so_and_ends_its_logs(tmp_path: Path) -> None:
    reads_path, events_path = tmp_path / "reads.log", tmp_path / "events.log"
    image = tmp_path / "out.img"
    process = rescue_process("image", SLOW_SPEC, str(image), "--order", "sequential",
                             "--log-reads", str(reads_path), "--log-events", str(events_path))
    try:
        wait_for_phase(reads_path, "Trimming", process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
        process.wait()
    events = load_events(str(events_path))
    assert [e.text for e in events.events if e.rescued is None] == ["Interrupted by user"]
    position, status = map_status(Path(f"{image}.map"))
    assert events.ends() == [(position, STATUS_NAMES[status])]
    for path in (reads_path, events_path):
        assert path.read_text().splitlines()[-1].startswith("# End time:")
