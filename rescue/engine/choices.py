"""The choices and defaults the jobs offer, in a module light enough for a command's parser to
import without loading the engines (device discovery, file-system readers)."""

from __future__ import annotations

import os

MODES = ("full", "used")  # imaging: every sector, or only what the file systems use
ORDERS = ("auto", "metadata-first", "sequential")  # imaging: what is read first
READ_BACKS = ("auto", "during", "after")  # restore: when a target is read back


def default_map_dir() -> str:
    """Where a restore keeps its targets' resume mapfiles unless told otherwise."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "rescue", "restore")
