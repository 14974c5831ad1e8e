"""`rescue image --json` on simulated failing disks: while work is left the ETA is an estimate
above zero or unknown (null), never 0; the summary's clocks are those of the job's end, and
a finished job has no ETA left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.cli import rescue, summary

SPECS = ["sim:size=16M,rate=8M,bad=4M+256k,bad=10M+64k",
         "sim:size=16M,rate=8M,head=1/4,zones=2",
         "sim:size=16M,rate=8M,scratch=2M+8k/1M*6,slow=12M+1M,scatter=20"]


@pytest.mark.parametrize("spec", SPECS, ids=["bad-areas", "dead-head", "scratch-slow"])
def test_the_eta_is_never_zero_with_work_left(tmp_path: Path, spec: str) -> None:
    done = rescue("image", spec, str(tmp_path / "disk.img"), "--retries", "1", "--json")
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    moments = [line for line in lines if line["type"] == "progress"]
    working = [m for m in moments if m["phase"] != "finished"]
    assert working, "no update came while the job ran"
    for moment in working:  # the retry pass still has every bad byte to read again
        assert moment["eta"] is None or moment["eta"] > 0, moment
    end = summary(done)
    assert end["phase"] == "finished" and end["eta"] is None
    assert end["bad"] > 0
    assert 0 <= end["since_last_good"] < end["elapsed"]
    assert moments[-1]["elapsed"] == end["elapsed"]
