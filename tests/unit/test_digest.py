"""The streamed SHA-256 equals the image's real one, or admits it cannot know it."""

import hashlib
import random

from rescue.engine.digest import DigestingWriter
from rescue.formats.image import logical_sha256
from rescue.formats.raw import RawReader, RawWriter


def test_in_order_writes_with_holes_give_the_image_sha256(tmp_path):
    size = 3 << 20
    rng = random.Random(5)
    writer = DigestingWriter(RawWriter(str(tmp_path / "a.img"), size))
    expected = bytearray(size)
    for offset in range(0, size, 96 * 1024):  # 64 KiB of data, then a 32 KiB hole
        data = rng.randbytes(min(64 * 1024, size - offset))
        writer.write(offset, memoryview(data))
        expected[offset:offset + len(data)] = data
    streamed = writer.hexdigest()
    writer.close()
    assert streamed == hashlib.sha256(expected).hexdigest()
    with RawReader(str(tmp_path / "a.img")) as reader:
        assert logical_sha256(reader) == streamed


def test_an_out_of_order_write_gives_no_streamed_digest(tmp_path):
    writer = DigestingWriter(RawWriter(str(tmp_path / "b.img"), 1 << 20))
    writer.write(512 * 1024, b"x" * 4096)
    writer.write(0, b"y" * 4096)  # a later pass filling a gap
    assert writer.hexdigest() is None
    writer.close()
    with open(tmp_path / "b.img", "rb") as f:
        assert f.read(4096) == b"y" * 4096
