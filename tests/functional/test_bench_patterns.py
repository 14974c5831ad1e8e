"""The failure-pattern benchmark runs both tools on a pattern and prints their figures side by
side with the ratio (the figures themselves are the benchmark's to report, not a test's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.fixtures.cli import CLI_ENV, REPO_ROOT

pytestmark = pytest.mark.slow


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_patterns.py"),
                           *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **CLI_ENV})


def test_the_table_has_both_tools_and_their_ratio() -> None:
    done = bench("--quick", "--no-1t", "--only", "scattered")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("pattern "))
    assert all(column in header for column in ("r err>good", "dd err>good", "x err>good"))
    row = next(line.split() for line in lines if line.startswith("scattered "))
    assert len(row) == 15
    assert all(re.fullmatch(r"[0-9.]+x|inf", cell) for cell in row[11:14]), row
    assert row[14] in ("yes", "NO")
    assert "cores" in done.stdout and "virtual time:" in done.stdout
    assert "1 TB" not in done.stdout


def test_an_unknown_pattern_is_refused() -> None:
    done = bench("--only", "no-such-pattern")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
