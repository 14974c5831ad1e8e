"""`rescue disks`: the table fits 80 columns, the JSON says the same."""

from __future__ import annotations

import argparse
import json

import pytest

from rescue.commands import disks as command
from tests.fixtures.disks import LoopDisk


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["disks", *argv])


@pytest.mark.slow
@pytest.mark.root
def test_table_and_json(gpt_disk: LoopDisk, capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(parse()) == 0
    table = capsys.readouterr().out
    assert all(len(line) <= 80 for line in table.splitlines())
    assert gpt_disk.device in table and "SYSTEM (root)" in table
    assert "gptroot" in table and "gptntfs" in table

    assert command.run(parse("--json")) == 0
    data = json.loads(capsys.readouterr().out)
    by_path = {disk["path"]: disk for disk in data["disks"]}
    mine = by_path[gpt_disk.device]
    assert mine["table_type"] == "gpt" and mine["running_system"] is False
    assert [part["fstype"] for part in mine["partitions"]] == ["ext4", "vfat", "ntfs", "swap"]
    assert by_path["/dev/vda"]["running_system"] is True
