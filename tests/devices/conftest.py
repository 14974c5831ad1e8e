"""The partitioned loop disks the device tests share within a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.disks import (
    GPT_FILESYSTEMS,
    GPT_LAYOUT,
    MBR_FILESYSTEMS,
    MBR_LAYOUT,
    LoopDisk,
    partitioned_disk,
)


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    with partitioned_disk(tmp_path_factory.mktemp("gpt") / "gpt.img", GPT_LAYOUT,
                          GPT_FILESYSTEMS) as disk:
        yield disk


@pytest.fixture(scope="module")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    with partitioned_disk(tmp_path_factory.mktemp("mbr") / "mbr.img", MBR_LAYOUT,
                          MBR_FILESYSTEMS) as disk:
        yield disk
