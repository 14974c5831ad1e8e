"""Send one image to a room of machines at once: udp-sender multicasts it, receivers report.

The image is decoded by its format reader and streamed in order (holes as zeros) behind a
header (engine/deploywire.py), zstd-compressed on the way to udp-sender unless asked not to:
zeros and file-system slack cost almost nothing on the wire then. Before sending, the image's
digest is taken from its manifest, or computed when it has none (one more read), so every
receiver can prove what it wrote by reading it back.

Receivers are counted, never assumed: udp-sender names each receiver that joins; each receiver
opens a back channel and reports its progress and result. A receiver is done only on a result
that says its read-back matched; one that closes its channel without a result (killed, crashed),
falls silent, joins but never reports, or never joins while fewer than `min_receivers` did, is
failed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, cast

import zstandard

from rescue.engine.deploywire import (
    DEFAULT_PORT,
    REPORT_OFFSET,
    Header,
    Report,
    ToolLog,
    check_port,
    sender_command,
)
from rescue.engine.jobs import JobControl
from rescue.engine.pipeline import Decoders
from rescue.errors import ExitCode, FormatError, UsageError
from rescue.formats.fingerprint import READ_SIZE, BackgroundHasher, hash_image
from rescue.formats.image import default_threads, detect_format, open_reader
from rescue.formats.integrity import ImageGate
from rescue.fs.partitions import read_partition_table

# level 1 compresses a mixed disk as small as level 3 does (to 29%), at 350 MiB/s on one
# core against 190: faster than the wire after compression, so the sender never waits on it
ZSTD_LEVEL = 1
ZEROS = bytes(READ_SIZE)


@dataclass(frozen=True)
class SendRequest:
    image: str
    image_format: str | None = None
    min_receivers: int = 1
    max_wait: float | None = None  # start with fewer receivers after this many seconds
    interface: str | None = None
    port: int = DEFAULT_PORT
    compress: bool = True
    report_timeout: float = 60.0  # silence after which a receiver counts as failed

    def __post_init__(self) -> None:
        if self.min_receivers < 1:
            raise UsageError("--min-receivers must be at least 1")
        if self.max_wait is not None and not self.max_wait > 0:
            raise UsageError("--max-wait must be a positive number of seconds")
        if not self.report_timeout > 0:
            raise UsageError("--report-timeout must be a positive number of seconds")
        check_port(self.port)


@dataclass
class _Channel:
    """One receiver's back channel, as heard so far."""

    address: str
    heard: float
    report: Report | None = None
    closed: bool = False

    @property
    def finished(self) -> bool:
        return self.closed or (self.report is not None and self.report.kind == "result")


@dataclass(frozen=True)
class ReceiverResult:
    address: str  # the receiver's IP address, "-" for one that never joined
    ok: bool
    target: str | None = None
    target_size: int = 0
    written: int = 0
    fingerprint: str = "unchecked"
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "ok": self.ok, "target": self.target,
                "target_size": self.target_size, "written": self.written,
                "fingerprint": self.fingerprint, "error": self.error}


@dataclass(frozen=True)
class SendProgress:
    phase: str  # "hashing", "waiting", "sending", "collecting", "finished"
    size: int
    sent: int  # logical bytes handed to udp-sender
    wire: int  # bytes after compression
    joined: tuple[str, ...]
    reports: tuple[Report, ...]

    def as_dict(self) -> dict[str, object]:
        return {"phase": self.phase, "size": self.size, "sent": self.sent, "wire": self.wire,
                "joined": list(self.joined), "reports": [r.as_dict() for r in self.reports]}


@dataclass(frozen=True)
class SendResult:
    receivers: tuple[ReceiverResult, ...]
    size: int
    wire: int
    seconds: float  # from the start of the transfer to udp-sender's end
    image_ok: bool | None  # the image's digest matched its manifest's as it was sent
    problem: str | None = None  # why the stream stopped early
    interrupted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.image_ok is False:
            return ExitCode.UNREADABLE
        ok = self.receivers and all(r.ok for r in self.receivers) and self.problem is None
        return ExitCode.OK if ok else ExitCode.DESTINATION


class _CountingPipe:
    """udp-sender's stdin, counting the bytes that go onto the wire."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe, self.count = pipe, 0

    def write(self, data: bytes | memoryview) -> int:
        self.pipe.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.pipe.flush()


class SendJob:
    """One deployment: `run()` streams the image and returns every receiver's result;
    `progress()` may be called from any thread."""

    def __init__(self, request: SendRequest, control: JobControl | None = None) -> None:
        self.request = request
        self.control = control or JobControl()
        self.image = os.path.abspath(request.image)
        if not os.path.exists(self.image):
            raise UsageError(f"image {request.image} does not exist")
        self.image_format = detect_format(self.image, request.image_format)
        reader = open_reader(self.image, self.image_format)
        try:
            self.size = reader.size
            self.gate = ImageGate(self.image, reader)
            self.table = read_partition_table(reader).kind
        finally:
            reader.close()
        self.phase = "waiting"
        self.sent = 0
        self.wire: _CountingPipe | None = None
        self.joined: list[str] = []
        self.started: float | None = None  # when udp-sender began the transfer
        self._channels: list[_Channel] = []
        self._lock = threading.Lock()

    def progress(self) -> SendProgress:
        with self._lock:
            reports = tuple(c.report for c in self._channels if c.report is not None)
            joined = tuple(self.joined)
        return SendProgress(self.phase, self.size, self.sent,
                            self.wire.count if self.wire else 0, joined, reports)

    # ---- the back channel ----------------------------------------------------------------

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", self.request.port + REPORT_OFFSET))
        except OSError as exc:
            listener.close()
            raise UsageError(f"cannot listen for reports on port "
                             f"{self.request.port + REPORT_OFFSET}: {exc.strerror}") from None
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name="deploy-accept").start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, (address, _) = listener.accept()
            except OSError:
                return  # closed: the deployment is over
            channel = _Channel(address, time.monotonic())
            with self._lock:
                self._channels.append(channel)
            threading.Thread(target=self._hear, args=(connection, channel), daemon=True,
                             name=f"deploy-{address}").start()

    def _hear(self, connection: socket.socket, channel: _Channel) -> None:
        with connection, connection.makefile("rb") as lines:
            try:
                for line in lines:
                    report = Report.decode(line)
                    with self._lock:
                        channel.report, channel.heard = report, time.monotonic()
            except (OSError, FormatError):
                pass
        with self._lock:
            channel.closed = True

    # ---- sending -------------------------------------------------------------------------

    def run(self) -> SendResult:
        command = sender_command(self.request.port, self.request.interface,
                                 self.request.min_receivers, self.request.max_wait)
        expected = self._expected_digest()
        listener = self._listen()
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            log = ToolLog(process, r"New connection from (\S+)|(Starting transfer)", self._joined)
            assert process.stdin is not None
            self.wire = _CountingPipe(process.stdin)
            problem, image_ok = None, None
            ended = threading.Event()
            threading.Thread(target=self._stop_on_cancel, args=(process, ended), daemon=True,
                             name="deploy-cancel").start()
            try:
                image_ok = self._stream(expected)
            except (BrokenPipeError, ConnectionResetError):
                problem = f"udp-sender stopped: {log.last or 'no receiver left'}"
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()
                status = process.wait()
                ended.set()
                log.join(5)
            if self.control.cancelled.is_set():
                problem = "interrupted; the receivers did not get the whole image"
            elif status != 0 and problem is None:
                problem = f"udp-sender failed: {log.last or f'exit status {status}'}"
            seconds = time.monotonic() - (self.started or time.monotonic())
            self.phase = "collecting"
            receivers = self._collect()
        finally:
            listener.close()
            self.phase = "finished"
        return SendResult(receivers, self.size, self.wire.count, seconds, image_ok, problem,
                          self.control.cancelled.is_set())

    def _stop_on_cancel(self, process: subprocess.Popen[bytes], ended: threading.Event) -> None:
        """Cancelling stops udp-sender, which may be waiting for receivers with the stream
        blocked on its full pipe."""
        while not ended.wait(0.2):
            if self.control.cancelled.is_set():
                process.terminate()
                return

    def _joined(self, match: re.Match[str]) -> None:
        address, starting = match.groups()
        with self._lock:
            if address:
                self.joined.append(address)
            elif starting:
                self.started = time.monotonic()
                self.phase = "sending"

    def _expected_digest(self) -> Header:
        """The header, with the manifest's digest, or BLAKE3 computed now when it has none."""
        digest, expected = self.gate.digest, self.gate.expected
        if expected is None or digest is None:
            self.phase = "hashing"
            reader = open_reader(self.image, self.image_format)
            try:
                digest, expected = "BLAKE3", hash_image(reader)
            finally:
                reader.close()
            self.phase = "waiting"
        return Header(os.path.basename(self.image), self.size, self.table, digest, expected,
                      "zstd" if self.request.compress else "none",
                      self.request.port + REPORT_OFFSET)

    def _stream(self, header: Header) -> bool | None:
        """Header, then the image's bytes in order, decoded on the restore's decoder threads
        and hashed on a thread of its own while this one compresses; whether the image's
        digest matched its manifest's (None: the digest was computed here, nothing to
        compare)."""
        assert self.wire is not None
        self.wire.write(header.encode())
        hasher = BackgroundHasher(self.gate.hasher()) if self.gate.expected else None
        decoders = Decoders(self.image, self.image_format, default_threads())
        out: _CountingPipe | zstandard.ZstdCompressionWriter = self.wire
        if self.request.compress:
            out = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
                cast(IO[bytes], self.wire), size=self.size, closefd=False)
        try:
            for piece in decoders.stream(self._pieces(decoders)):
                if self.control.cancelled.is_set():
                    raise BrokenPipeError("cancelled")
                out.write(piece)
                if hasher is not None:
                    hasher.update(piece)
                self.sent += len(piece)
            if isinstance(out, zstandard.ZstdCompressionWriter):
                out.close()
            self.wire.flush()
            return None if hasher is None else self.gate.compare(hasher.hexdigest())
        finally:
            decoders.close()
            if hasher is not None:
                hasher.close()

    def _pieces(self, decoders: Decoders) -> Iterator[Callable[[], bytes]]:
        """The image's pieces in order, as work for the decoders; holes cost no reading."""
        reader = open_reader(self.image, self.image_format)
        try:
            extents = list(reader.extents())
        finally:
            reader.close()
        for offset, length, allocated in extents:
            for pos in range(offset, offset + length, READ_SIZE):
                size = min(READ_SIZE, offset + length - pos)
                yield functools.partial(self._decode, decoders, pos, size, allocated)

    def _decode(self, decoders: Decoders, offset: int, size: int, allocated: bool) -> bytes:
        if not allocated:
            return ZEROS[:size]
        data, damaged = decoders.read(offset, size)
        self.gate.record(damaged)
        return data

    # ---- after sending -------------------------------------------------------------------

    def _collect(self) -> tuple[ReceiverResult, ...]:
        """Wait for every receiver's result: a silent channel fails after the report timeout,
        and so does the wait for receivers that joined but never called (one that never joined
        will not call)."""
        timeout = self.request.report_timeout
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            with self._lock:
                for channel in self._channels:
                    if not channel.finished and now - channel.heard > timeout:
                        channel.closed = True  # silent too long: counted as failed
                pending = [c for c in self._channels if not c.finished]
                missing = len(self.joined) > len(self._channels)  # joined, not called yet
            if self.control.cancelled.is_set() or (
                    not pending and (not missing or now > deadline)):
                break
            time.sleep(0.2)
        with self._lock:
            return self._results()

    def _expected(self) -> int:
        return max(self.request.min_receivers, len(self.joined))

    def _results(self) -> tuple[ReceiverResult, ...]:
        results = [self._result(c) for c in self._channels]
        silent = Counter(self.joined) - Counter(c.address for c in self._channels)
        results += [ReceiverResult(address, False, error="joined but never reported")
                    for address in silent.elements()]
        results += [ReceiverResult("-", False, error="did not join before the transfer began")
                    ] * (self._expected() - len(results))
        return tuple(results)

    @staticmethod
    def _result(channel: _Channel) -> ReceiverResult:
        report = channel.report
        if report is None:
            return ReceiverResult(channel.address, False, error="called back but never reported")
        error = report.error
        if report.kind != "result" and error is None:
            error = f"stopped reporting while {report.phase} (killed or cut off)"
        return ReceiverResult(channel.address, report.ok, report.target, report.target_size,
                              report.written, report.fingerprint, error)

