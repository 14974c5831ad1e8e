"""Typed errors with exit codes: a user sees one clear line, scripts branch on the code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of every `rescue` command."""

    OK = 0  # everything rescued / done
    UNREADABLE = 1  # finished, but some sectors could not be read (or verify found damage)
    USAGE = 2  # bad arguments or bad input (missing source, corrupt mapfile, not an image)
    DESTINATION = 3  # destination I/O error, e.g. the destination is full
    SOURCE_LOST = 4  # the source vanished or stopped answering altogether
    REFUSED = 5  # the write-safety policy refused the target
    TIMEOUT = 6  # --timeout: nothing read successfully for too long; map saved, resumable
    INTERRUPTED = 130  # SIGINT/SIGTERM; map saved, resumable


class RescueError(Exception):
    """An error the user can act on; `str(error)` is the one line they see."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(RescueError):
    exit_code = ExitCode.USAGE


class SourceError(RescueError):
    """The source cannot be opened or is not usable (missing, a directory, ...)."""

    exit_code = ExitCode.USAGE


class SourceLostError(RescueError):
    exit_code = ExitCode.SOURCE_LOST


class DestinationError(RescueError):
    exit_code = ExitCode.DESTINATION


class FormatError(RescueError):
    """An image or mapfile is damaged, truncated or uses a feature we do not support."""

    exit_code = ExitCode.USAGE


class DamagedImageError(RescueError):
    """An image's own checks found damage (checksums, structure, the manifest's digest)."""

    exit_code = ExitCode.UNREADABLE


class RefusedError(RescueError):
    exit_code = ExitCode.REFUSED


class Interrupted(RescueError):
    """A job stopped on SIGINT or SIGTERM before its end: what it saved is resumable, and
    nothing half-done carries the final name."""

    exit_code = ExitCode.INTERRUPTED
