"""The layout planner's arithmetic on tables as the partition reader returns them."""

from __future__ import annotations

import pytest

from rescue.errors import RefusedError, UsageError
from rescue.fs.fitting import smallest_disk
from rescue.fs.layout import MIB, Sizing, parse_layout, plan_layout
from rescue.fs.partitions import PartitionEntry, PartitionTable

GIB = 1 << 30
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"


def table(kind: str = "gpt") -> PartitionTable:
    parts = (PartitionEntry(1, MIB, 256 * MIB, ESP, "", "u1", False, False),
             PartitionEntry(2, 257 * MIB, 4 * GIB, LINUX, "", "u2", False, False),
             PartitionEntry(3, 257 * MIB + 4 * GIB, 2 * GIB, LINUX, "", "u3", False, False))
    return PartitionTable(kind, 512, 8 * GIB, parts, "d", ())


SIZINGS = {1: Sizing("fat", None), 2: Sizing("ext", GIB), 3: Sizing("ntfs", 512 * MIB)}


def test_growing_shares_the_new_space_in_proportion_and_aligns() -> None:
    plan = plan_layout(table(), "t", 16 * GIB, SIZINGS)
    esp, root, data = plan.partitions
    assert (esp.action, esp.new_start, esp.new_size) == ("keep", MIB, 256 * MIB)
    assert root.action == data.action == "grow"
    assert root.new_size == pytest.approx(2 * data.new_size, rel=1e-3)  # old sizes 2:1
    assert all(p.new_start % MIB == 0 and p.new_size % MIB == 0 for p in (root, data))
    assert data.new_start >= root.new_start + root.new_size
    assert 16 * GIB - 2 * MIB < data.new_start + data.new_size <= 16 * GIB - 33 * 512
    assert [m.dest for m in plan.moves()] == [0, MIB, root.new_start, data.new_start]


def test_a_disk_that_just_holds_the_partitions_changes_nothing() -> None:
    assert not plan_layout(table(), "t", smallest_disk(table()), SIZINGS).changed


def test_layout_shares_rest_and_percent() -> None:
    plan = plan_layout(table(), "t", 16 * GIB, SIZINGS, parse_layout(["2=25%", "3=rest"]))
    assert plan.partitions[1].new_size == 4 * GIB
    assert plan.partitions[2].new_size > 10 * GIB
    plan = plan_layout(table(), "t", 16 * GIB, SIZINGS, parse_layout(["2=5G"]))
    assert plan.partitions[1].new_size == 5 * GIB


def test_shrinking_stops_at_each_minimum() -> None:
    plan = plan_layout(table(), "t", 2 * GIB, SIZINGS)
    assert plan.partitions[1].new_size >= GIB and plan.partitions[2].new_size >= 512 * MIB
    assert {p.action for p in plan.partitions[1:]} == {"shrink"}


@pytest.mark.parametrize("size", [GIB, 1700 * MIB])
def test_no_room_for_the_data_is_refused_with_the_minimums(size: int) -> None:
    with pytest.raises(RefusedError, match=r"t holds .*; the image's data needs at least .*"
                       r"partition 2 ext: min 1 GiB \(1073741824 bytes\)"):
        plan_layout(table(), "t", size, SIZINGS)


def test_a_layout_under_the_minimum_is_refused() -> None:
    with pytest.raises(RefusedError, match="gives partition 2 512 MiB, less than the 1 GiB"):
        plan_layout(table(), "t", 16 * GIB, SIZINGS, parse_layout(["2=512M"]))


@pytest.mark.parametrize("spec", ["2", "x=5G", "2=abc", "2=0%", "2=rest,3=rest", "9=5G"])
def test_bad_layouts_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        plan_layout(table(), "t", 16 * GIB, SIZINGS, parse_layout([spec]))


def test_the_plan_fits_a_serial_console() -> None:
    msr = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
    parts = (*table().partitions,
             PartitionEntry(4, 6401 * MIB, 16 * MIB, msr, "", "u4", False, False))
    plan = plan_layout(PartitionTable("gpt", 512, 1000 * GIB, parts, "d", ()), "t", 2000 * GIB,
                       SIZINGS)
    assert [p.action for p in plan.partitions] == ["keep", "grow", "grow", "move"]
    assert all(len(line) <= 78 for line in plan.lines())
    assert plan.lines()[4].endswith("move (MS reserved)")


def test_a_fat16_grows_no_further_than_its_type_holds() -> None:
    """FAT16 past 65524 clusters would have to become FAT32: it gets its maximum, and the
    others share what it leaves."""
    sizings = {**SIZINGS, 3: Sizing("fat", 512 * MIB, maximum=3 * GIB)}
    plan = plan_layout(table(), "t", 16 * GIB, sizings)
    root, data = plan.partitions[1:]
    assert data.new_size == 3 * GIB and data.action == "grow"
    assert root.new_size > 12 * GIB - 300 * MIB  # the rest of the disk
    sizings[2] = Sizing("fat", 512 * MIB, maximum=5 * GIB)  # both capped: the disk end stays
    capped = plan_layout(table(), "t", 16 * GIB, sizings)
    assert [p.new_size for p in capped.partitions[1:]] == [5 * GIB, 3 * GIB]
    with pytest.raises(RefusedError, match=r"gives partition 3 4 GiB, more than the 3 GiB"):
        plan_layout(table(), "t", 16 * GIB, sizings, parse_layout(["3=4G"]))
    rest = plan_layout(table(), "t", 16 * GIB, sizings, parse_layout(["2=4G", "3=rest"]))
    assert rest.partitions[2].new_size == 3 * GIB
