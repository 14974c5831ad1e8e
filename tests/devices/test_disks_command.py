"""`rescue disks`: the table fits 80 columns on a terminal and is whole in a pipe, the JSON says
the same."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from rescue.commands import disks as command
from rescue.devices import discover
from rescue.devices.discover import Disk
from tests.fixtures.disks import LoopDisk


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["disks", *argv])


@pytest.mark.slow
@pytest.mark.root
def test_table_and_json(gpt_disk: LoopDisk, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
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


LONG_BACKING = "/srv/images/" + "customer-laptop-" * 4 + "disk.img"
LOOP = Disk(path="/dev/loop7", name="loop7", size=1 << 30, logical_sector_size=512,
            physical_sector_size=512, model=None, vendor=None, serial=None, transport="loop",
            rotational=False, removable=False, read_only=True, table_type=None, fstype="ext4",
            label="a-label-longer-than-its-column", uuid=None, backing_file=LONG_BACKING,
            mountpoints=("/mnt/evidence",), holders=(), system_roles=())


def test_a_pipe_gets_whole_lines_a_terminal_80_columns(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A script or `| less -S` wants every note; a terminal wants rows that do not wrap."""
    monkeypatch.setattr(discover, "discover", lambda: [LOOP])
    assert command.run(parse()) == 0
    piped = capsys.readouterr().out.splitlines()
    assert LONG_BACKING in piped[1] and LOOP.label in piped[1] and "…" not in piped[1]
    assert piped[0].index("NOTES") == piped[1].index("/mnt/evidence")  # columns still align

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert command.run(parse()) == 0
    shown = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in shown) and shown[1].endswith("…")
