"""A result decides its own exit code; the command that presents it only passes it on."""

from __future__ import annotations

from rescue.errors import ExitCode
from rescue.explore.extract import Report
from rescue.fs.affected import AffectedFile, DamageReport

HIT = AffectedFile(partition=1, fs_type="ext4", path="/a", size=10, lost=10, metadata_hit=False)


def test_a_damage_report_exits_1_when_a_file_is_hit() -> None:
    assert DamageReport(damaged_bytes=512, files=(HIT,), warnings=()).exit_code == \
        ExitCode.UNREADABLE
    assert DamageReport(damaged_bytes=512, files=(), warnings=("x",)).exit_code == ExitCode.OK


def test_an_extract_report_exits_1_when_data_is_damaged_or_missing() -> None:
    assert Report().exit_code == ExitCode.OK
    assert Report(skipped=[("/dev/null", "a device node")]).exit_code == ExitCode.OK
    assert Report(damaged=[("/a", ((0, 512),))]).exit_code == ExitCode.UNREADABLE
    assert Report(missing=[("/b", "no space")]).exit_code == ExitCode.UNREADABLE
