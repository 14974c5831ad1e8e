"""A source that vanishes part-way is not a bad disk: the rescue stops at once, marks nothing bad
for the reads that failed because it was gone, and resumes later to the result of one
uninterrupted rescue. On the simulated disk (`gone=`), in every phase; fast, no root."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.engine.liveness import PROBE_AFTER_FAILURES, PROBE_READS
from rescue.engine.rescue import Outcome, Rescue, RescueOptions
from rescue.errors import SourceLostError
from rescue.formats import mapfile
from rescue.formats.mapfile import Mapfile
from rescue.formats.raw import RawWriter
from rescue.rangemap import RangeMap
from rescue.sim.faulty import SECTOR, FaultySource, FaultySpec

MIB = 1 << 20
# A long bad area (scraping it fails thousands of reads in a row while the disk is still there)
# and a cluster with good sectors between two bad runs, so scraping also reads good sectors.
SPEC = FaultySpec(16 * MIB, bad=[(5 * MIB + 10 * SECTOR, 2048 * SECTOR, 0.0),
                                 (9 * MIB + 20 * SECTOR, 4 * SECTOR, 0.0),
                                 (9 * MIB + 40 * SECTOR, 4 * SECTOR, 0.0)])


@dataclass
class Save:
    """A map as saved, with what the disk had done by then."""

    map: Mapfile
    served: int
    failed_reads: int


@dataclass
class Attempt:
    source: FaultySource
    saves: list[Save]
    outcome: Outcome | None
    lost: SourceLostError | None


def attempt(image: Path, spec: FaultySpec, start: Mapfile | None = None) -> Attempt:
    """One rescue of the simulated disk into `image` (continued if it exists), one retry pass."""
    source = FaultySource(spec)
    source.track_reads = True
    writer = RawWriter(str(image), spec.size)
    saves: list[Save] = []

    def save(current: Mapfile) -> None:
        saved = mapfile.parse(mapfile.render(current), size=spec.size)
        saves.append(Save(saved, source.served, source.failed_reads))

    rescue = Rescue(source, writer, start or Mapfile(RangeMap(spec.size)), save,
                    RescueOptions(retries=1))
    try:
        outcome, lost = rescue.run(), None
    except SourceLostError as error:
        outcome, lost = None, error
    finally:
        writer.close()
    return Attempt(source, saves, outcome, lost)


def areas(m: Mapfile) -> list[tuple[int, int, str]]:
    return list(m.rmap.areas())


PROGRESS = "?*/-+"  # how far the passes have taken a sector


def sector_states(m: Mapfile) -> str:
    """The state of each sector, in order."""
    return "".join(state * (length // SECTOR) for _, length, state in areas(m))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Attempt, bytes]:
    """The reference: the same disk rescued in one go. Its long bad area makes many reads in a
    row fail, and the disk must still be judged present, at the cost of a sector read per
    hundred failed ones at most."""
    image = tmp_path_factory.mktemp("reference") / "out.img"
    run = attempt(image, SPEC)
    assert run.outcome is Outcome.UNREADABLE, run.lost
    bad = {(pos, length) for pos, length, state in areas(run.saves[-1].map) if state == "-"}
    assert bad == {(pos, length) for pos, length, _ in SPEC.bad}
    # a good sector reads fine once and is never read again, except by a probe
    probes = (run.source.served - (SPEC.size - sum(length for _, length in bad))) // SECTOR
    assert 0 < probes <= run.source.failed_reads // 100
    return run, image.read_bytes()


def entry(reference: Attempt, status: str, passno: int) -> Save:
    """The map saved as the reference rescue entered that phase and pass."""
    return next(s for s in reference.saves
                if (s.map.current_status, s.map.current_pass) == (status, passno))


@pytest.mark.parametrize(("status", "passno"), [
    ("?", 1), ("?", 2), ("*", 1), ("/", 1), ("-", 1),
], ids=["copying", "copying-reverse", "trimming", "scraping", "retrying"])
def test_a_disk_gone_in_any_phase_stops_at_once_and_resumes_to_the_same_result(
        tmp_path: Path, uninterrupted: tuple[Attempt, bytes], status: str, passno: int) -> None:
    reference, reference_image = uninterrupted
    # gone as the phase starts; in the first pass, once 3 MiB are read (before any bad area)
    at = entry(reference, status, passno) if (status, passno) != ("?", 1) else Save(
        Mapfile(RangeMap(SPEC.size)), 3 * MIB, 0)
    image = tmp_path / "out.img"

    vanished = attempt(image, dataclasses.replace(SPEC, gone=at.served))
    assert vanished.lost is not None, "a vanished disk was rescued as a bad one"
    assert "stopped answering" in str(vanished.lost)
    assert "run the same command again" in str(vanished.lost)
    assert vanished.source.failed_reads - at.failed_reads <= PROBE_AFTER_FAILURES + PROBE_READS
    last = vanished.saves[-1].map
    if (status, passno) == ("?", 1):  # what was read, and nothing else tried
        assert [state for _, _, state in areas(last)] == ["+", "?"]
        assert areas(last)[0] == (0, vanished.source.served, "+")
    else:  # as the phase began, or as before the failures the disk last proved alive after
        before, after = sector_states(at.map), sector_states(last)
        assert [s == "+" for s in after] == [s == "+" for s in before]
        assert all(PROGRESS.index(now) <= PROGRESS.index(then)
                   for now, then in zip(after, before, strict=True))

    resumed = attempt(image, SPEC, start=last)
    assert resumed.outcome is Outcome.UNREADABLE
    assert areas(resumed.saves[-1].map) == areas(reference.saves[-1].map)
    assert image.read_bytes() == reference_image
