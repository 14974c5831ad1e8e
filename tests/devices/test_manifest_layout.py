"""An image's manifest records its source disk's partition table and each partition's file
system and label, as `rescue disks` shows them for that disk, although imaging probes no
signature on the failing source: they are read from the rescued image."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import rescue
from tests.fixtures.disks import LoopDisk

pytestmark = [pytest.mark.slow, pytest.mark.root]


def disks_view(device: str) -> dict[str, Any]:
    listed = rescue("disks", "--json")
    assert listed.returncode == 0, listed.stderr
    return next(d for d in json.loads(listed.stdout)["disks"] if d["path"] == device)


def manifest_source(image: Path) -> dict[str, Any]:
    shown = rescue("info", str(image), "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["manifest"]["source"]


@pytest.mark.parametrize("disk_name", ["gpt_disk", "mbr_disk"])
@pytest.mark.parametrize("suffix", ["qcow2", "img.zst"])
def test_the_manifest_knows_the_layout_rescue_disks_knows(
        request: pytest.FixtureRequest, tmp_path: Path, disk_name: str, suffix: str) -> None:
    disk: LoopDisk = request.getfixturevalue(disk_name)
    image = tmp_path / f"disk.{suffix}"
    done = rescue("image", disk.device, str(image))
    assert done.returncode == 0, done.stderr
    source, listed = manifest_source(image), disks_view(disk.device)
    assert source["partition_table"] == listed["table_type"] == disk.table
    recorded = {p["number"]: (p["fstype"], p["label"]) for p in source["partitions"]}
    known = {p["number"]: (p["fstype"], p["label"]) for p in listed["partitions"]}
    assert recorded == known
    assert {number: label for number, (_, label) in recorded.items()
            if number in disk.labels} == disk.labels
    text = rescue("info", str(image)).stdout  # the text view lists the same layout
    assert f"table:       {disk.table}\n" in text
    for number, (fstype, label) in known.items():
        named = f' "{label}"' if label else ""
        assert re.search(rf"^ +{number} .* {fstype or '-'}{named}$", text, re.M), text


def test_a_partition_image_records_its_file_system(gpt_disk: LoopDisk, tmp_path: Path) -> None:
    image = tmp_path / "part.img"
    done = rescue("image", gpt_disk.partition(2), str(image))
    assert done.returncode == 0, done.stderr
    source = manifest_source(image)
    assert (source["partition_number"], source["fstype"], source["label"]) == \
        (2, "vfat", gpt_disk.labels[2])
