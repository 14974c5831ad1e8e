"""A Clonezilla partition image unpacks into a scratch file in $TMPDIR. A folder that fills up
while it unpacks (another program writing there, on a real tmpfs) stops every read past what
was unpacked with one DestinationError that names the folder: it must never pass for damage
in the archive, whose reads would then go on as zeros."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.errors import DestinationError
from rescue.formats.clonezilla import SavedPartition, _Unpacked
from tests.fixtures.disks import small_tmpfs

MIB = 1 << 20


def fill(folder: Path) -> None:
    """What another program does: write into the folder until it is full."""
    with open(folder / "other", "wb") as f:
        try:
            while True:
                f.write(bytes(64 << 10))
                f.flush()
        except OSError:
            pass


@pytest.mark.root
def test_a_scratch_folder_that_fills_while_unpacking_stops_the_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with small_tmpfs(8 * MIB) as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        partition = SavedPartition("sdz1", 0, 4 * MIB, "ext4", "partclone", "zst")

        def blocks() -> Iterator[tuple[int, bytes, int]]:
            yield 0, b"x" * MIB, MIB
            fill(scratch)
            for at in range(1, 4):
                yield at * MIB, b"y" * MIB, (at + 1) * MIB

        copy = _Unpacked(partition, blocks, [(0, 4 * MIB)], 0)
        assert copy.read(0, MIB) == (b"x" * MIB, MIB)
        with pytest.raises(DestinationError,
                           match=rf"partition sdz1 .* into {scratch}: No space left on device"):
            copy.read(MIB, 3 * MIB)


@pytest.mark.root
def test_room_is_counted_in_what_the_folder_allocates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved blocks smaller than the folder's unit of allocation take whole units: 2 MiB of
    1 KiB blocks 4 KiB apart need 8 MiB of a tmpfs, and a folder of 4 MiB is refused."""
    with small_tmpfs(4 * MIB) as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        partition = SavedPartition("sdz2", 0, 8 * MIB, "ext4", "partclone", "zst")
        runs = [(at, 1024) for at in range(0, 8 * MIB, 4096)]
        with pytest.raises(DestinationError, match=r"needs 8 MiB in .*which has 4 MiB free"):
            _Unpacked(partition, lambda: iter(()), runs, 0)
        assert not list(scratch.iterdir())
