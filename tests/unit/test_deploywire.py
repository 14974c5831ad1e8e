"""The deployment stream's header and the receivers' reports: what is not ours is refused by
name, never written to a disk."""

from __future__ import annotations

import io

import pytest

from rescue.engine.deploywire import MAGIC, Header, Report
from rescue.errors import FormatError

HEADER = Header("disk.qcow2", 48 << 20, "gpt", "BLAKE3", "ab" * 32, "zstd", 9002)


def test_a_header_reads_back_as_written_and_leaves_the_data_behind() -> None:
    stream = io.BufferedReader(io.BytesIO(HEADER.encode() + b"\x28\xb5\x2f\xfd data"))
    assert Header.read(stream) == HEADER
    assert stream.read() == b"\x28\xb5\x2f\xfd data"


@pytest.mark.parametrize(("stream", "says"), [
    (b"", "no stream arrived"),
    (b"\x00" * 4096, "not a rescue deployment"),  # joined mid-stream: image bytes first
    (HEADER.encode()[5:], "not a rescue deployment"),
    (b"RESCUE-DEPLOY/2\n{}\n", "not a rescue deployment"),
    (MAGIC + b"{not json\n", "header is unreadable"),
    (MAGIC + b'{"image": "x"}\n', "header is unreadable"),  # fields missing
    (MAGIC + b"[1, 2]\n", "header is unreadable"),
    (HEADER.encode().replace(b"BLAKE3", b"MD5"), "digest \\(MD5\\)"),
    (HEADER.encode().replace(b'"zstd"', b'"xz"'), "compression \\(xz\\)"),
])
def test_streams_that_are_not_ours_are_refused(stream: bytes, says: str) -> None:
    with pytest.raises(FormatError, match=says):
        Header.read(io.BufferedReader(io.BytesIO(stream)))


def test_a_report_is_done_only_with_a_matching_read_back() -> None:
    done = Report("result", "/dev/sdb", 1 << 30, "done", 1 << 29, 1 << 29, "ok")
    assert Report.decode(done.encode()) == done and done.ok
    assert not Report("progress", "/dev/sdb", 1 << 30, "verifying", fingerprint="ok").ok
    assert not Report("result", "/dev/sdb", 1 << 30, "failed", fingerprint="failed").ok


@pytest.mark.parametrize("line", [b"", b"garbage\n", b'{"kind": "result"}\n', b"[]\n"])
def test_a_garbled_report_is_refused(line: bytes) -> None:
    with pytest.raises(FormatError, match="unreadable report"):
        Report.decode(line)
