"""One open image for exploring: its reader, volumes, unreadable map and file systems."""

from __future__ import annotations

from rescue.explore.damage import UNREADABLE, unreadable_map
from rescue.explore.filesystem import FileSystem
from rescue.explore.readers import open_filesystem
from rescue.explore.volumes import Layout, Volume, choose, read_layout
from rescue.formats.image import open_reader


class ImageSession:
    """Opens the image once; each volume's file system is opened when first asked for."""

    def __init__(self, path: str, image_format: str | None = None) -> None:
        self.path = path
        self.reader = open_reader(path, image_format)
        try:
            self.layout: Layout = read_layout(self.reader)
            self.unreadable = unreadable_map(path, self.reader.size)
        except BaseException:
            self.reader.close()
            raise
        self._filesystems: dict[int, FileSystem] = {}

    def volume(self, number: int | None) -> Volume:
        return choose(self.layout, number)

    def filesystem(self, number: int | None) -> FileSystem:
        volume = self.volume(number)
        if volume.number not in self._filesystems:
            self._filesystems[volume.number] = open_filesystem(self.reader, volume,
                                                               self.unreadable)
        return self._filesystems[volume.number]

    def unreadable_bytes(self, volume: Volume) -> int:
        """Bytes of the volume that are bad or were never read."""
        if self.unreadable is None:
            return 0
        totals = self.unreadable.state_bytes(volume.start, volume.end)
        return sum(totals.get(state, 0) for state in UNREADABLE)

    def close(self) -> None:
        self._filesystems.clear()
        self.reader.close()

    def __enter__(self) -> ImageSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
