"""What a multicast deployment puts on the wire, and the udpcast programs that carry it.

The stream udp-sender multicasts is one header line naming what follows (the image's logical
size, its partition table, the digest a receiver must find when it reads its disk back, where
to report), then the image's bytes, zstd-compressed when the header says so. udpcast is
reliable while every receiver keeps up, but a receiver that joined late or lost its place would
write a wrong disk without knowing it: so every receiver reads its disk back, compares the
digest, and reports over a TCP back channel (JSON lines) to the sender, which counts a
receiver done only on such a report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO

from rescue.errors import FormatError, UsageError
from rescue.formats.integrity import DIGESTS

MAGIC = b"RESCUE-DEPLOY/1\n"
COMPRESSIONS = ("zstd", "none")
HEADER_LIMIT = 64 << 10  # a header line longer than this is no deployment of ours
DEFAULT_PORT = 9000  # udpcast's own default port base; it uses this port and the next
REPORT_OFFSET = 2  # the back channel listens on the port base + 2
RECEIVE_TIMEOUT = 60  # seconds without data after which a receiver gives the stream up
# udp-receiver's socket buffer: with the default, a receiver busy writing drops a quarter of
# the packets and the sender sends them again (measured on veth: 24% re-sent, 0% with 4 MiB)
RECEIVE_BUFFER = 4 << 20
# the sender says hello again this often (ms): with its single hello, receivers already
# waiting joined only after about two seconds (measured: 2.02 s against 0.12 s for 1 MiB)
HELLO_INTERVAL = 100


@dataclass(frozen=True)
class Header:
    """What a receiver must know before it writes: sizes, table, digest, wire encoding."""

    image: str  # the image's file name, shown on the receivers
    size: int  # logical bytes that follow, decoded
    table: str | None  # "gpt" or "dos" when the image starts with that table
    digest: str  # a name in formats.integrity.DIGESTS
    expected: str  # that digest of the whole image
    compression: str  # "zstd" or "none"
    report_port: int

    def encode(self) -> bytes:
        return MAGIC + json.dumps(asdict(self), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def read(cls, stream: IO[bytes]) -> Header:
        """The header at the start of `stream`; a stream that is not ours is a FormatError."""
        magic = stream.readline(len(MAGIC))
        if not magic:
            raise FormatError("no stream arrived")
        if magic != MAGIC:
            raise FormatError("the stream is not a rescue deployment (sent by another program, "
                              "or joined after it began)")
        line = stream.readline(HEADER_LIMIT)
        try:
            header = cls(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise FormatError(f"the deployment header is unreadable ({exc})") from None
        if header.digest not in DIGESTS or header.compression not in COMPRESSIONS:
            raise FormatError(f"the deployment header names a digest ({header.digest}) or "
                              f"a compression ({header.compression}) this version does not "
                              "know")
        return header


@dataclass(frozen=True)
class Report:
    """One receiver's word to the sender: progress while it works, then its result."""

    kind: str  # "hello", "progress" or "result"
    target: str
    target_size: int
    phase: str  # "waiting", "writing", "verifying", "done", "failed"
    written: int = 0
    verified: int = 0
    fingerprint: str = "unchecked"  # "ok", "failed" or "unchecked"
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def encode(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Report:
        try:
            return cls(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise FormatError(f"unreadable report ({exc})") from None

    @property
    def ok(self) -> bool:
        return self.kind == "result" and self.phase == "done" and self.fingerprint == "ok"


def require_udpcast(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise UsageError(f"{program} is not installed (Debian package udpcast)")
    return path


def check_port(port: int) -> int:
    if not 1024 <= port <= 65535 - REPORT_OFFSET:
        raise UsageError(f"--port must be between 1024 and {65535 - REPORT_OFFSET}")
    return port


def sender_command(port: int, interface: str | None, min_receivers: int,
                   max_wait: float | None) -> list[str]:
    """udp-sender reading the stream from stdin, starting once `min_receivers` joined (or
    after `max_wait` seconds with fewer)."""
    argv = [require_udpcast("udp-sender"), "--nokbd", "--portbase", str(port),
            "--min-receivers", str(min_receivers), "--retries-until-drop", "20",
            "--rexmit-hello-interval", str(HELLO_INTERVAL)]
    if max_wait is not None:
        argv += ["--max-wait", f"{max_wait:g}"]
    return argv + (["--interface", interface] if interface else [])


def receiver_command(port: int, interface: str | None) -> list[str]:
    """udp-receiver writing the stream to stdout; it gives up when the sender goes silent."""
    argv = [require_udpcast("udp-receiver"), "--nokbd", "--portbase", str(port),
            "--receive-timeout", str(RECEIVE_TIMEOUT), "--rcvbuf", str(RECEIVE_BUFFER)]
    return argv + (["--interface", interface] if interface else [])


class ToolLog:
    """A udpcast program's stderr, read on a thread of its own: its progress lines end in
    carriage returns, and the lines that matter (who joined, who the sender is) are found by
    pattern as they come."""

    def __init__(self, process: subprocess.Popen[bytes], pattern: str,
                 found: Callable[[re.Match[str]], None]) -> None:
        self.last = ""  # the last line it printed: why it stopped, when it failed
        self._pattern = re.compile(pattern)
        self._found = found
        assert process.stderr is not None
        self._stream = process.stderr
        self._thread = threading.Thread(target=self._read, name="udpcast-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        partial = ""
        while block := os.read(self._stream.fileno(), 4096):
            *lines, partial = re.split(r"[\r\n]", partial + block.decode(errors="replace"))
            for line in filter(None, map(str.strip, lines)):
                self.last = line
                if match := self._pattern.search(line):
                    self._found(match)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

