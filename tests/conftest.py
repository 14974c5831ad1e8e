"""Rules and fixtures for the whole suite.

The markers (declared in pyproject.toml) mean:
- `slow`: end to end, on real devices and tools; `-m "not slow"` leaves a quick run.
- `root`: needs root for loop devices, FUSE or mounting. Every such test is slow too, so the
  quick run never needs root; run as another user, it is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

# The shared fixtures, each beside the builders it uses: the device tests' partitioned loop
# disks (one a module), the explore tests' file-system images and the fuzz suite's bases (one
# a session), and the corpus of real file systems (one a session). A fixture is built only
# when a collected test asks for it.
pytest_plugins = ["tests.fixtures.disks", "tests.fixtures.explore", "tests.fixtures.fuzz_bases",
                  "tests.fixtures.users", "tests.fixtures.corpus"]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers set here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    as_root = os.geteuid() == 0
    for item in items:
        if item.get_closest_marker("root") is None:
            continue
        item.add_marker(pytest.mark.slow)
        if not as_root:
            item.add_marker(pytest.mark.skip(reason="needs root: loop devices, FUSE, mount"))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Cleanups a test registers as it builds devices and folders, undone in reverse order
    when it ends, however it ends."""
    with ExitStack() as resources:
        yield resources
