"""Renames that survive a crash: a file gets its final name only once complete."""

from __future__ import annotations

import os


def replace_durably(synced: str, path: str) -> None:
    """Rename the already synced file `synced` to `path`, then sync the folder so the new
    name itself is on disk; raises OSError."""
    os.replace(synced, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
