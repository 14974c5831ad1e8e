"""The Sleuth Kit's image layer answered by our readers: every reader of a file system by
TSK (explore, the file comparison after a resize) sees any image format, holes as zeros."""

from __future__ import annotations

import pytsk3

from rescue.io.reader import Reader


class ImageView(pytsk3.Img_Info):
    """TSK's image layer answered by our reader: any image format, holes as zeros."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._reader.read(offset, size))

    def get_size(self) -> int:
        return self._reader.size

    def close(self) -> None:
        """The reader belongs to whoever opened it; TSK must not close it."""
