"""Honest clocks: a job's elapsed time, rates, time since a good read and ETA stand still
while it is paused and once it has ended, and the ETA covers all the work still to come.
The simulated disk and the job share a virtual clock, so nothing depends on the machine's
speed."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from rescue.commands.image import status_line, status_lines
from rescue.engine.jobs import JobClock, JobControl, Phase, Progress, RateMeter
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.rangemap import BAD, FINISHED, NON_SCRAPED, NON_TRIMMED, STATES, RangeMap
from rescue.sim.faulty import SECTOR, FaultySource, FaultySpec
from rescue.tui.widgets.counters import progress_text

MIB = 1 << 20


class VirtualTime:
    """Time that passes only when the simulated disk sleeps, or a test says so. `action`
    runs at the `at_read`-th read; `each_read` after every read's delay."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self.at_read = 0
        self.action: Callable[[], None] = lambda: None
        self.each_read: Callable[[], None] = lambda: None
        self.reached = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.reads += 1
        self.each_read()
        if self.reads == self.at_read:
            self.action()
            self.reached.set()


def make_rescue(tmp_path: Path, spec: FaultySpec, time: VirtualTime,
                options: RescueOptions | None = None,
                control: JobControl | None = None) -> tuple[Rescue, RawWriter]:
    control = control or JobControl(JobClock(lambda: time.now))
    writer = RawWriter(str(tmp_path / "out.img"), spec.size)
    rescue = Rescue(FaultySource(spec, clock=time.sleep), writer,
                    Mapfile(RangeMap(spec.size)), lambda m: None,
                    options or RescueOptions(), control)
    return rescue, writer


def clocks(p: Progress) -> tuple[float, float, float, float | None]:
    return p.elapsed, p.average_rate, p.since_last_good, p.eta


def test_a_paused_job_does_not_count_the_pause(tmp_path: Path) -> None:
    spec = FaultySpec(4 * MIB, bad=[(3 * MIB, 64 * SECTOR, 0.0)], rate=MIB)
    time = VirtualTime()
    control = JobControl(JobClock(lambda: time.now))
    time.at_read, time.action = 3, control.pause
    rescue, writer = make_rescue(tmp_path, spec, time, control=control)
    worker = threading.Thread(target=rescue.run)
    worker.start()
    try:
        assert time.reached.wait(10)
        before = rescue.progress()
        time.now += 1000.0  # a long pause
        during = rescue.progress()
        assert during.paused
        assert clocks(during) == clocks(before)
    finally:
        control.resume()
        worker.join(30)
        writer.close()
    after = rescue.progress()
    # the pause is not in the job's time: what the reads took is, and it is far less
    assert after.elapsed < 1000.0 / 10
    assert after.elapsed > before.elapsed


def test_a_finished_job_keeps_its_numbers(tmp_path: Path) -> None:
    spec = FaultySpec(4 * MIB, bad=[(MIB, 16 * SECTOR, 0.0)], rate=MIB)
    time = VirtualTime()
    rescue, writer = make_rescue(tmp_path, spec, time)
    try:
        assert rescue.run() is Outcome.UNREADABLE
    finally:
        writer.close()
    first = rescue.progress()
    time.now += 1000.0
    second = rescue.progress()
    assert first.phase is Phase.FINISHED
    assert clocks(second) == clocks(first)
    assert first.eta is None
    assert first.eta_text == "-"  # nothing is left to estimate: not "unknown", not "0s"
    assert first.elapsed > 0 and first.average_rate > 0


def test_time_since_the_last_good_read_ends_with_the_job(tmp_path: Path) -> None:
    """A bad area at the very end, slow to fail: the last good read came before it, so at
    the end the time since it is what the failing reads took, not the whole job."""
    size = 4 * MIB
    bad = (size - 64 * SECTOR, 64 * SECTOR)
    spec = FaultySpec(size, bad=[(*bad, 0.0)], slow=[(*bad, 0.05)], rate=MIB)
    time = VirtualTime()
    rescue, writer = make_rescue(tmp_path, spec, time)
    try:
        rescue.run()
    finally:
        writer.close()
    end = rescue.progress()
    assert 0 < end.since_last_good < end.elapsed
    time.now += 1000.0
    assert rescue.progress().since_last_good == end.since_last_good


def test_eta_counts_the_trimming_and_scraping_still_to_come(tmp_path: Path) -> None:
    """Copying done, with areas left for trimming and scraping: the ETA is not zero; before
    any sector read shows how slow they are it is unknown, then it is an estimate."""
    spec = FaultySpec(4 * MIB, bad=[(MIB, 256 * SECTOR, 0.0)],
                      slow=[(MIB, 256 * SECTOR, 0.02)], rate=MIB)
    time = VirtualTime()
    seen: list[Progress] = []
    rescue, writer = make_rescue(tmp_path, spec, time)
    time.each_read = lambda: seen.append(rescue.progress())
    try:
        rescue.run()
    finally:
        writer.close()
    left = [p for p in seen if p.non_tried == 0 and p.phase is not Phase.FINISHED
            and p.totals[NON_TRIMMED] + p.totals[NON_SCRAPED] > 0]
    assert left, "the rescue never stood between copying and scraping"
    assert all(p.eta is None or p.eta > 0 for p in left)
    estimated = [p for p in left if p.eta is not None]
    assert estimated, "sector reads were seen but never gave an estimate"
    # the estimate shrinks as the work does (compare the first and the last, loosely)
    assert estimated[-1].eta is not None and estimated[0].eta is not None
    assert estimated[-1].eta < estimated[0].eta


def test_an_interrupted_job_keeps_its_estimate_of_the_work_left(tmp_path: Path) -> None:
    """Cancelled in the middle of copying, with a bad area seen: the estimate of what a
    resumed run still has to do is neither zero nor growing while the job stands."""
    spec = FaultySpec(8 * MIB, bad=[(MIB, 64 * SECTOR, 0.0)], rate=MIB)
    time = VirtualTime()
    control = JobControl(JobClock(lambda: time.now))
    rescue, writer = make_rescue(tmp_path, spec, time, control=control)
    time.each_read = lambda: control.cancel() if rescue.totals()[BAD] and \
        rescue.totals()[FINISHED] > 2 * MIB else None
    try:
        assert rescue.run() is Outcome.INTERRUPTED
    finally:
        writer.close()
    ended = rescue.progress()
    assert ended.non_tried > 0
    assert ended.eta is not None and ended.eta > 0
    time.now += 1000.0
    assert clocks(rescue.progress()) == clocks(ended)


def test_rescues_of_one_job_estimate_from_each_others_sector_reads(tmp_path: Path) -> None:
    """A job's first rescue (the metadata, the chosen files) met a bad area sector by sector;
    the next rescue, sharing the job's meter, estimates its trimming and scraping from those
    reads at once instead of showing the ETA unknown."""
    spec = FaultySpec(4 * MIB, bad=[(MIB, 64 * SECTOR, 0.0)], rate=MIB)
    time = VirtualTime()
    control = JobControl(JobClock(lambda: time.now))
    meter = RateMeter(control.clock.now())
    mapfile = Mapfile(RangeMap(spec.size))
    writer = RawWriter(str(tmp_path / "out.img"), spec.size)
    source = FaultySource(spec, clock=time.sleep)
    domain = RangeMap(spec.size)
    domain.set(0, 2 * MIB, FINISHED)  # the first rescue: the first half, with the bad area
    try:
        Rescue(source, writer, mapfile, lambda m: None, RescueOptions(), control, domain,
               meter).run()
        assert meter.sector_reads.rate() > 0
        rest = Rescue(source, writer, mapfile, lambda m: None, RescueOptions(retries=1),
                      control, None, meter)
        before = rest.progress()
    finally:
        writer.close()
    assert before.non_tried > 0 and before.bad > 0
    assert before.eta is not None and before.eta > 0


def test_every_presenter_says_unknown_for_an_eta_it_cannot_know(tmp_path: Path) -> None:
    """The status printer, the console's counters and --json show the same ETA, and one
    that cannot be estimated as unknown (null), never as a confident figure."""
    spec = FaultySpec(4 * MIB, rate=MIB)
    time = VirtualTime()
    rescue, writer = make_rescue(tmp_path, spec, time)
    writer.close()
    unknown = dataclasses.replace(rescue.progress(), eta=None)
    known = dataclasses.replace(unknown, eta=125.0)
    assert "ETA: unknown" in status_lines(unknown)[-1]
    assert "ETA: unknown" in status_line(unknown)[0]
    assert "ETA unknown" in progress_text(unknown)
    assert unknown.as_dict()["eta"] is None
    assert "ETA: 2m 05s" in status_lines(known)[-1]
    assert "ETA: 2m 05s" in status_line(known)[0]
    assert "ETA 2m 05s" in progress_text(known)
    assert known.as_dict()["eta"] == 125.0
    moment = dataclasses.replace(unknown, eta=0.4)  # a little work left is not none
    assert "ETA: <1s" in status_lines(moment)[-1]
    assert "ETA <1s" in progress_text(moment)


def test_the_status_block_fits_80_columns_at_its_widest() -> None:
    """On a serial console a line wider than 80 columns wraps, and the block redrawn in
    place climbs over what is above it."""
    widest = Progress(size=1 << 50, phase=Phase.RETRYING, pass_no=12, position=1 << 49,
                      totals={state: 999 << 40 for state in STATES}, domain_size=1 << 50,
                      current_rate=999e9, average_rate=999e9, elapsed=99 * 86400.0,
                      since_last_good=23 * 3600.0 + 59 * 60, read_errors=999_999, eta=None,
                      paused=True)
    for line in status_lines(widest):
        assert len(line) <= 80, line
