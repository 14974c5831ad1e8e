"""Receive a multicast deployment onto one disk, prove it, and tell the sender.

The target is judged by the same write-safety policy as a restore's (the system disk, a mounted
disk, a disk in use are refused) and confirmed the same way (engine/consent.py) before the
receiver joins: a room's transfer must not wait on someone typing. Once the header arrives the
target must hold the image's logical size, or the receiver writes nothing and reports failed.

The stream is written in order with the restore's block target (O_DIRECT, the disk claimed so
nothing mounts it meanwhile), synced, and read back past the page cache and hashed: the disk
counts as done only when that digest is the image's. As in a restore, a disk that does not
spin is read back while it is written, following what is synced (the network sets the pace,
so the proof costs no time of its own); a spinning one after the writing. udpcast cannot
tell a receiver that lost its place from one that kept it, the read-back can. Progress and
the result go to the sender over the back channel every second, so a receiver that dies is
noticed by its silence.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO

import zstandard

from rescue.devices import safety
from rescue.devices.locks import Locks
from rescue.engine.choices import READ_BACKS
from rescue.engine.deploywire import (
    DEFAULT_PORT,
    Header,
    Report,
    ToolLog,
    check_port,
    receiver_command,
)
from rescue.engine.jobs import JobControl
from rescue.engine.pipeline import CHUNK, Chunk, Span, Target, Writers
from rescue.engine.restore import TargetCheck
from rescue.errors import (
    DestinationError,
    ExitCode,
    FormatError,
    RefusedError,
    UsageError,
)
from rescue.formats.integrity import DIGESTS
from rescue.fs import fitting
from rescue.io.blockdev import Watermark, read_chunks, rotational, write_error
from rescue.units import human_size

HEARTBEAT = 1.0  # seconds between progress reports to the sender
CHECKPOINT = 5.0  # seconds between syncs of the target while it is written, as a restore's
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ReceiveRequest:
    target: str
    interface: str | None = None
    port: int = DEFAULT_PORT
    read_back: str = "auto"  # during the writing, after it, or as the disk suits

    def __post_init__(self) -> None:
        check_port(self.port)
        if self.read_back not in READ_BACKS:
            raise UsageError(f"--read-back must be one of {', '.join(READ_BACKS)}")

    def reads_back_during(self) -> bool:
        return self.read_back == "during" or (
            self.read_back == "auto" and not rotational(self.target))


@dataclass(frozen=True)
class ReceiveResult:
    report: Report  # what the sender was told
    image: str  # the image's name, as the sender gave it ("" when no header came)
    sender: str | None

    @property
    def exit_code(self) -> ExitCode:
        if self.report.ok:
            return ExitCode.OK
        return ExitCode.UNREADABLE if self.report.fingerprint == "failed" else \
            ExitCode.DESTINATION


class _Failed(Exception):
    """Ends this receiver's work with a reason; the sender is told it."""


class ReceiveJob:
    """One receiver: `check()` judges the target, `run()` joins, writes, proves and reports;
    `progress()` may be called from any thread."""

    def __init__(self, request: ReceiveRequest, control: JobControl | None = None) -> None:
        self.request = request
        self.control = control or JobControl()
        self.report = Report("hello", request.target, 0, "waiting")
        self.sender: str | None = None
        self.image = ""
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._sender_known = threading.Event()  # udp-receiver's log named the sender
        self._lock = threading.Lock()

    def check(self) -> TargetCheck:
        """The restore's policy on the target; what it receives is known only once the stream
        begins, so the check offers the whole disk."""
        disk = safety.check_disk_targets([self.request.target])[0]
        span = Span(0, disk.size, "whole", None) if disk.sector is not None else None
        self.report = replace(self.report, target_size=disk.size)
        return TargetCheck(disk.path, disk.name, disk.serial, disk.model, disk.size, span,
                           disk.verdict)

    def progress(self) -> Report:
        return self.report

    def _update(self, **changes: object) -> None:
        with self._lock:
            self.report = replace(self.report, **changes)  # type: ignore[arg-type]

    # ---- running -------------------------------------------------------------------------

    def run(self) -> ReceiveResult:
        check = self.check()
        if not check.allowed():
            raise RefusedError(check.problem() or f"{check.target} cannot take the image")
        with Locks() as held:
            held.write(check.target)
            self._process = subprocess.Popen(
                receiver_command(self.request.port, self.request.interface),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            log = ToolLog(self._process, r"Connected as #\d+ to (\S+)", self._connected)
            stop = threading.Event()
            beat = threading.Thread(target=self._beat, args=(stop,), daemon=True,
                                    name="deploy-heartbeat")
            beat.start()
            try:
                self._receive(check, log)
                self._update(kind="result", phase="done", fingerprint="ok")
            except _Failed as exc:
                self._update(kind="result", phase="failed", error=str(exc))
            finally:
                stop.set()
                beat.join()
                self._end_tool()
                self._send(self.report)
                if self._channel is not None:
                    self._channel.close()
        return ReceiveResult(self.report, self.image, self.sender)

    def _connected(self, match: re.Match[str]) -> None:
        self.sender = match.group(1)
        self._sender_known.set()

    def _beat(self, stop: threading.Event) -> None:
        """Progress to the sender every second; cancelling stops udp-receiver."""
        while not stop.wait(HEARTBEAT):
            if self.control.cancelled.is_set():
                self._end_tool()
            self._send(self.report)

    def _send(self, report: Report) -> None:
        """Best effort: a receiver that cannot reach its sender still finishes its disk."""
        with self._lock:
            if self._channel is not None:
                try:
                    self._channel.sendall(report.encode())
                except OSError:
                    self._channel = None

    def _end_tool(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _receive(self, check: TargetCheck, log: ToolLog) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        try:
            header = Header.read(stream)
        except FormatError as exc:
            cancelled = self.control.cancelled.is_set()
            raise _Failed("interrupted while waiting for the sender" if cancelled
                          else f"{exc} (udp-receiver: {log.last})") from None
        self.image = header.image
        self._call_back(header)
        if header.size > check.size:
            raise _Failed(f"{check.target} is too small: it holds {human_size(check.size)} "
                          f"({check.size} bytes), the image needs {human_size(header.size)} "
                          f"({header.size} bytes)")
        data: IO[bytes] = stream
        if header.compression == "zstd":
            data = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        self._update(phase="writing")
        written = Watermark() if self.request.reads_back_during() else None
        with ThreadPoolExecutor(1, thread_name_prefix="deploy-read-back") as reading:
            digest = reading.submit(self._read_back, header, written) if written else None
            try:
                self._write(data, header, written)
            finally:
                if written is not None:  # however the writing ended, the read-back stops there
                    written.end()
            self._update(phase="verifying")
            digest = digest or reading.submit(self._read_back, header, None)
        if digest.result() != header.expected:
            self._update(fingerprint="failed")
            raise _Failed(f"{check.target} does not read back as the image: its "
                          f"{header.digest} differs")
        if header.table == "gpt" and check.size != header.size:
            try:
                fitting.move_gpt_backup(check.target)
            except DestinationError as exc:
                raise _Failed(str(exc)) from None

    def _call_back(self, header: Header) -> None:
        """Open the back channel to the sender udp-receiver connected to (its log, read on
        another thread, names it before the stream's first bytes)."""
        if not self._sender_known.wait(CONNECT_TIMEOUT) or self.sender is None:
            raise _Failed("udp-receiver did not name its sender")
        try:
            channel = socket.create_connection((self.sender, header.report_port),
                                               CONNECT_TIMEOUT)
        except OSError as exc:
            raise _Failed(f"cannot report to {self.sender}: {exc.strerror or exc}") from None
        with self._lock:
            self._channel = channel
        self._send(self.report)

    def _write(self, data: IO[bytes], header: Header, written: Watermark | None) -> None:
        """The stream onto the target through the restore's writer: a thread of its own that
        writes while the next chunk arrives, syncing as it goes (advancing `written`, which a
        read-back follows); a short stream fails. Its map only serves the writer (a multicast
        stream cannot be resumed) and goes with it."""
        size = header.size
        with tempfile.TemporaryDirectory(prefix="rescue-deploy-") as folder, \
                Writers(skip_holes=False, checkpoint=CHECKPOINT) as writers:
            target = Target(self.request.target, Span(0, size, "whole", header.table),
                            os.path.join(folder, "target.map"), "", self.control.clock)
            target.written = written
            writers.start_writers([target])
            received = 0
            try:
                while received < size and not target.failed:
                    wanted = min(CHUNK, size - received)
                    buffer = writers.pool.take()
                    got = _fill(data, memoryview(buffer)[:wanted])
                    if got:
                        writers.deliver(Chunk(received, got, None, buffer, writers.pool))
                    else:
                        writers.pool.give(buffer)
                    received += got
                    self._update(written=received)
                    if got < wanted:
                        raise _Failed(self._short(received, size))
            except zstandard.ZstdError as exc:
                raise _Failed(f"the stream is corrupt at {received} bytes ({exc})") from None
        if target.error is not None:
            raise _Failed(target.error)

    def _short(self, written: int, size: int) -> str:
        if self.control.cancelled.is_set():
            return f"interrupted at {human_size(written)} of {human_size(size)}"
        return (f"the stream ended at {human_size(written)} of {human_size(size)} "
                "(the sender stopped or dropped this receiver)")

    def _read_back(self, header: Header, written: Watermark | None) -> str:
        """The target's first `size` bytes, read past the page cache and hashed; with
        `written`, each chunk once it is synced, ending early where the writer stopped."""
        hasher = DIGESTS[header.digest]()
        verified = 0
        chunks = read_chunks(self.request.target, header.size, CHUNK, lambda _: None,
                             written=written)
        try:
            for _, data, _ in chunks:
                if self.control.cancelled.is_set():
                    raise _Failed(f"interrupted while reading back at {human_size(verified)}")
                hasher.update(data)
                verified += len(data)
                self._update(verified=verified)
        except OSError as exc:
            raise _Failed(write_error(self.request.target, exc, "cannot read back")) from None
        finally:
            chunks.close()
        if verified < header.size:
            raise _Failed(f"{self.request.target} reads back only {human_size(verified)}")
        return hasher.hexdigest()


def _fill(data: IO[bytes], view: memoryview) -> int:
    """Read into all of `view` unless the stream ends first; how much was read."""
    got = 0
    while got < len(view):
        n = data.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got

