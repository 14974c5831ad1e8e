"""GNU ddrescue's reads log (`--log-reads`) and events log (`--log-events`): written, and read
back from either tool, so a rescue can be compared with ddrescue's read by read.

Reads log: a header of comment lines, then one line per read attempt,
`0x%08X<TAB>size<TAB>copied_size<TAB>error_size` (the position is where the block begins, even
when reading backwards); a comment `# <elapsed>  <phase message>` where a phase or pass begins,
after a blank line; a comment `# <elapsed>` when the elapsed second has moved on; and
`# End time:` when the run ends.

Events log: a header, then `<elapsed, 14 wide>  <rescued %>  <event>` per pass begun and at the
end of the run (`End of run (0x%08X  <status>)`); the reason a run stopped early, indented 22
blanks; and, as ddrescue 1.30 does, a line with the average rate and the read errors. Elapsed
times are ddrescue's `1d:02h:03m:04s`, shortened from the left; percentages are truncated to
two decimals, as ddrescue prints them.

ddrescue overwrites a reads log and appends to an events log; we append to both, so a resumed
job keeps one log of each with a header per run. Each line is written whole and flushed at
once: a job killed with -9 leaves a log whose every line is complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import IO, Protocol

from rescue import __version__
from rescue.errors import DestinationError, FormatError
from rescue.rangemap import FINISHED, RangeMap
from rescue.units import duration_parts

READS_TITLE = "Reads Logfile"
EVENTS_TITLE = "Events Logfile"
READS_COLUMNS = "#  Ipos       Size  Copied_size  Error_size"
EVENTS_COLUMNS = "#         Time  Rescued  Event"
_STAMP = "%Y-%m-%d %H:%M:%S"
_MESSAGE_INDENT = " " * 22  # where ddrescue writes the reason a run stopped

# ddrescue's message when each phase or pass begins; sweeping reads non-tried blocks, as
# ddrescue's own sweeping pass (pass 5 before 1.30) says
_PHASE_MESSAGES = {"copying": "Copying non-tried blocks... Pass {passno} ({direction})",
                   "sweeping": "Copying non-tried blocks... Pass {passno} ({direction})",
                   "trimming": "Trimming failed blocks... ({direction})",
                   "scraping": "Scraping failed blocks... ({direction})",
                   "retrying": "Retrying bad sectors... Retry {passno} ({direction})"}


class ReadObserver(Protocol):
    """What a rescue tells about every read it makes, and each phase it enters."""

    def read(self, pos: int, size: int, copied: int, error_size: int) -> None: ...

    def phase(self, text: str) -> None: ...


def phase_text(phase: str, passno: int, forward: bool) -> str:
    """ddrescue's message for a phase ("copying", "sweeping", "trimming", ...)."""
    return _PHASE_MESSAGES[phase].format(passno=passno,
                                          direction="forwards" if forward else "backwards")


def format_elapsed(seconds: float) -> str:
    """Seconds as ddrescue writes them in its logs: 4s, 3m:04s, 2h:03m:04s, 1d:02h:03m:04s."""
    days, hours, minutes, secs = duration_parts(seconds)
    if days:
        return f"{days}d:{hours:02d}h:{minutes:02d}m:{secs:02d}s"
    if hours:
        return f"{hours}h:{minutes:02d}m:{secs:02d}s"
    if minutes:
        return f"{minutes}m:{secs:02d}s"
    return f"{secs}s"


def format_percent(part: int, whole: int) -> str:
    """`part` of `whole` as ddrescue's 'Rescued' column: 6.2 wide, truncated, then '%'."""
    hundredths = 10000 * part // whole if whole else 10000
    return f"{hundredths // 100:3d}.{hundredths % 100:02d}%"


def format_rate(bytes_per_second: float) -> str:
    """A rate as ddrescue's status shows it: an integer of at most five digits, SI prefix."""
    number, prefix = int(bytes_per_second), ""
    for step in "kMGTPE":
        if number <= 99999:
            break
        number, prefix = number // 1000, step
    return f"{number} {prefix}B/s"


class _Log:
    """A log file opened for appending, with ddrescue's header; every line goes out whole and
    at once (line-buffered), so the file is readable while the job runs."""

    def __init__(self, path: str, title: str, columns: str, command_line: str) -> None:
        self.path = path
        self._started = time.monotonic()
        try:
            appending = os.path.exists(path) and os.path.getsize(path) > 0
            self._file: IO[str] = open(path, "a", buffering=1, encoding="utf-8",  # noqa: SIM115
                                       newline="\n")
        except OSError as error:
            raise DestinationError(f"cannot open the log {path}: {error.strerror}") from None
        lines = [f"# {title}. Created by rescue version {__version__}",
                 f"# Command line: {command_line}",
                 f"# Start time:   {time.strftime(_STAMP)}", columns]
        try:
            self._write("\n".join([""] * appending + lines))
        except DestinationError:
            self._close_quietly()
            raise

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _write(self, text: str) -> None:
        try:
            self._file.write(text + "\n")
        except OSError as error:
            raise DestinationError(f"cannot write the log {self.path}: {error.strerror}"
                                   ) from None

    def close(self) -> None:
        """The end time, as ddrescue ends a log, then the file closed. Best effort: a write
        that failed before has stopped the job already and said why."""
        if self._file.closed:
            return
        with contextlib.suppress(DestinationError):
            self._write(f"# End time:     {time.strftime(_STAMP)}")
        self._close_quietly()

    def _close_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


class ReadsLogWriter(_Log):
    """`--log-reads`: one line per read attempt, good or failed."""

    def __init__(self, path: str, command_line: str) -> None:
        super().__init__(path, READS_TITLE, READS_COLUMNS, command_line)
        self._after_message = True  # no blank line between the header and the first phase
        self._second = 0  # the last elapsed second marked

    def read(self, pos: int, size: int, copied: int, error_size: int) -> None:
        second = int(self.elapsed())
        mark = f"# {format_elapsed(second)}\n" if second > self._second else ""
        self._second = max(second, self._second)
        self._write(f"{mark}0x{pos:08X}\t{size}\t{copied}\t{error_size}")
        self._after_message = False

    def phase(self, text: str) -> None:
        blank = "" if self._after_message else "\n"
        self._write(f"{blank}# {format_elapsed(self.elapsed())}  {text}")
        self._after_message = True


class EventsLogWriter(_Log):
    """`--log-events`: each pass begun, why a run stopped, and how it ended."""

    def __init__(self, path: str, command_line: str) -> None:
        super().__init__(path, EVENTS_TITLE, EVENTS_COLUMNS, command_line)

    def event(self, text: str, rescued: str) -> None:
        """One event; `rescued` is the percentage as format_percent gives it."""
        self._write(f"{format_elapsed(self.elapsed()):>14}  {rescued}  {text}")

    def message(self, text: str) -> None:
        """Why the run stopped (interrupted, a source gone, a full disk), without time."""
        self._write(_MESSAGE_INDENT + text)

    def end(self, rescued: str, pos: int, status: str, average_rate: float,
            read_errors: int) -> None:
        """The end of the run: where it stopped and in what status, then ddrescue 1.30's
        line with the average rate and the read errors."""
        self.event(f"End of run (0x{pos:08X}  {status})", rescued)
        self.event(f"average rate: {format_rate(average_rate)}, read errors: {read_errors}",
                   rescued)


# ---- reading both tools' logs --------------------------------------------------------------

_NUMBER = r"(0x[0-9A-Fa-f]+|[0-9]+)"
_READ_LINE = re.compile(rf"{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s*")
_ELAPSED = r"(?:[0-9]+d:)?(?:[0-9]+h:)?(?:[0-9]+m:)?[0-9]+s"
_MARK = re.compile(rf"#\s+({_ELAPSED})(?:\s\s+(\S.*?))?\s*")
_EVENT_LINE = re.compile(rf"\s*({_ELAPSED})\s+([0-9]+\.[0-9]+)%\s\s+(\S.*?)\s*")
_MESSAGE_LINE = re.compile(r"\s{2,}(\S.*?)\s*")
_END_OF_RUN = re.compile(rf"End of run \({_NUMBER}\s+(\w+)\)")
_SUMMARY = re.compile(r"average rate:\s*([0-9.]+ ?[kMGTPE]?i?B/s).*read errors:\s*([0-9_]+)",
                      re.IGNORECASE)
_HEADER = re.compile(r"# .*Logfile\. Created by ")


def parse_elapsed(text: str) -> int:
    """Seconds of an elapsed time as ddrescue writes it (format_elapsed's inverse)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(part[:-1]) * units[part[-1]] for part in text.split(":"))


@dataclass(frozen=True)
class Read:
    """One read attempt: where, how many bytes were asked, copied and failed."""

    pos: int
    size: int
    copied: int
    error_size: int

    @property
    def failed(self) -> bool:
        return self.error_size > 0


@dataclass(frozen=True)
class PhaseMark:
    """A phase or pass begun: after `index` reads of the log, at `elapsed` seconds of its run."""

    index: int
    elapsed: int
    text: str


@dataclass
class ReadsLog:
    reads: list[Read] = field(default_factory=list)
    phases: list[PhaseMark] = field(default_factory=list)
    runs: int = 0  # headers: one per run that wrote to the file

    def read_errors(self) -> int:
        return sum(read.failed for read in self.reads)

    def read_errors_until_last_good(self) -> int:
        """Failed reads before the last read that rescued bytes not rescued before: what the
        rescue paid in errors for all it got. Reads of sectors already rescued (rescue's
        checks that the source still answers) rescue nothing new."""
        size = max((read.pos + read.copied for read in self.reads), default=0)
        if not size:
            return self.read_errors()
        rescued = RangeMap(size)
        errors = errors_then = 0
        for read in self.reads:
            errors += read.failed
            if read.copied and rescued.state_bytes(read.pos, read.pos + read.copied
                                                   )[FINISHED] < read.copied:
                rescued.set(read.pos, read.copied, FINISHED)
                errors_then = errors
        return errors_then


@dataclass(frozen=True)
class Event:
    """An events-log line; `elapsed` and `rescued` are None on a message line."""

    elapsed: int | None
    rescued: float | None
    text: str


@dataclass
class EventsLog:
    events: list[Event] = field(default_factory=list)
    runs: int = 0

    def ends(self) -> list[tuple[int, str]]:
        """Each run's end: (current position, status name)."""
        return [(int(m[1], 0), m[2]) for e in self.events if (m := _END_OF_RUN.match(e.text))]

    def summary(self) -> tuple[str, int] | None:
        """The last run's (average rate, read errors), where a line gives them (1.30)."""
        found = [(m[1], int(m[2].replace("_", ""))) for e in self.events
                 if (m := _SUMMARY.search(e.text))]
        return found[-1] if found else None


def _lines(text: str) -> list[tuple[int, str]]:
    """The numbered lines; a last line without its newline was cut short by a kill (ddrescue
    writes through a buffer) and is left out."""
    lines = text.split("\n")
    lines.pop()  # after the last newline: empty, or a line cut short
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, 1)]


def parse_reads(text: str, path: str = "<reads log>") -> ReadsLog:
    """A reads log of GNU ddrescue's or ours, each run's lines in order."""
    log = ReadsLog()
    for number, line in _lines(text):
        if not line.strip():
            continue
        if line.startswith("#"):
            if _HEADER.match(line):
                log.runs += 1
            elif (mark := _MARK.fullmatch(line)) and mark[2]:
                log.phases.append(PhaseMark(len(log.reads), parse_elapsed(mark[1]), mark[2]))
            continue
        found = _READ_LINE.fullmatch(line)
        if found is None:
            raise FormatError(f"{path}:{number}: not a line of a reads log: {line[:80]!r}")
        pos, size, copied, error_size = (int(n, 0) if n.startswith("0x") else int(n)
                                         for n in found.groups())
        log.reads.append(Read(pos, size, copied, error_size))
    return log


def parse_events(text: str, path: str = "<events log>") -> EventsLog:
    """An events log of GNU ddrescue's or ours."""
    log = EventsLog()
    for number, line in _lines(text):
        if not line.strip():
            continue
        if line.startswith("#"):
            log.runs += bool(_HEADER.match(line))
        elif event := _EVENT_LINE.fullmatch(line):
            log.events.append(Event(parse_elapsed(event[1]), float(event[2]), event[3]))
        elif message := _MESSAGE_LINE.fullmatch(line):
            log.events.append(Event(None, None, message[1]))
        else:
            raise FormatError(f"{path}:{number}: not a line of an events log: {line[:80]!r}")
    return log


def load_reads(path: str) -> ReadsLog:
    return parse_reads(_text(path), path)


def load_events(path: str) -> EventsLog:
    return parse_events(_text(path), path)


def _text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
