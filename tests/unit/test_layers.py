"""The floors are checked by machines: import-linter's contracts (pyproject.toml) and mypy.

A lower floor importing a higher one, an import cycle, the core importing the UI or a type
error fails here, in the same run as every other test, not only in review.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    done = run("from importlinter.cli import lint_imports_command; lint_imports_command()")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and " 0 broken." in done.stdout


def test_annotations_check() -> None:
    done = run("import sys; from mypy import api; out, err, code = api.run([]); "
               "print(out, err, file=sys.stderr); sys.exit(code)")
    assert done.returncode == 0, done.stderr[-6000:]
