"""Used blocks of file systems we do not parse ourselves, from `partclone.<fs> --domain`.

partclone needs a file or device holding just the file system; a partition inside a disk or
image file is handed to it through a read-only loop device with an offset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from rescue.errors import FormatError
from rescue.formats import mapfile
from rescue.fs.signatures import BY_NAME
from rescue.fs.used import Extent

TIMEOUT = 600.0


def tool_for(fs_type: str) -> str | None:
    """The installed partclone program for `fs_type`, if any."""
    signature = BY_NAME.get(fs_type)
    name = signature.partclone if signature else None
    return shutil.which(f"partclone.{name}") if name else None


@contextlib.contextmanager
def _file_system_path(path: str, offset: int, size: int) -> Iterator[str]:
    """`path` itself if the file system fills it, else a read-only loop device over the slice."""
    with open(path, "rb") as f:
        whole = f.seek(0, os.SEEK_END)
    if offset == 0 and size == whole:
        yield path
        return
    try:
        result = subprocess.run(["losetup", "-f", "--show", "--read-only", "-o", str(offset),
                                 "--sizelimit", str(size), path],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FormatError(f"cannot attach a loop device for partclone: {exc}") from None
    if result.returncode:
        raise FormatError(f"cannot attach a loop device for partclone: "
                          f"{result.stderr.strip()}")
    device = result.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def partclone_used(path: str, offset: int, size: int, fs_type: str) -> tuple[Extent, ...]:
    """Extents partclone marks used in the file system at [offset, offset+size) of `path`."""
    tool = tool_for(fs_type)
    if tool is None:
        raise FormatError(f"partclone has no tool for {fs_type} here")
    with tempfile.TemporaryDirectory(prefix="rescue-domain-") as folder, \
            _file_system_path(path, offset, size) as fs_path:
        out = os.path.join(folder, "domain.map")
        try:
            result = subprocess.run([tool, "-q", "-D", "-s", fs_path, "-o", out],
                                    capture_output=True, text=True, timeout=TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FormatError(f"{os.path.basename(tool)} failed: {exc}") from None
        if result.returncode or not os.path.exists(out):
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
            raise FormatError(f"{os.path.basename(tool)} could not map {fs_path}: "
                              f"{last[0] if last else 'exit ' + str(result.returncode)}")
        domain = mapfile.load(out, size)
    return tuple((pos, length) for pos, length, state in domain.rmap.areas() if state == "+")
