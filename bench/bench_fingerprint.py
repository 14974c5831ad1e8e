"""The cost of the image digests per GiB of data and per GiB of holes, with the peer tools.

On one mixed-content file (read once into the page cache first) and on a sparse file of the
same size: CPU seconds of the hashing thread per GiB for BLAKE3 (what new manifests record) and
for the chunk fingerprint and plain SHA-256 that older manifests hold, the seconds the feeding
thread spends handing bytes to a `BackgroundHasher` (the cost left on the read/write path),
and the CPU and wall seconds of `b3sum` and `sha256sum` on the same files. Rounds interleave
the contenders; the best of them is reported. A used-blocks image is mostly holes, and BLAKE3,
unlike the chunk fingerprint, hashes every zero of them.

Run: python bench/bench_fingerprint.py [--size 1G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable

from common import make_mixed_disk, report

from rescue.formats.base import ImageHasher
from rescue.formats.fingerprint import (
    READ_SIZE,
    BackgroundHasher,
    Blake3,
    Fingerprint,
    PlainSha256,
)
from rescue.units import parse_size

GiB = 1 << 30
HASHERS: dict[str, Callable[[], ImageHasher]] = {
    "BLAKE3 (new)": Blake3, "chunk fingerprint (old)": Fingerprint, "SHA-256 (oldest)": PlainSha256}


def pieces(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return list(iter(lambda: f.read(READ_SIZE), b""))


def hash_cpu(make: Callable[[], ImageHasher], data: list[bytes] | None, size: int) -> float:
    """CPU seconds of this thread hashing `data` (or `size` zeros)."""
    hasher = make()
    started = time.thread_time()
    if data is None:
        hasher.zeros(size)
    else:
        for piece in data:
            hasher.update(piece)
    hasher.hexdigest()
    return time.thread_time() - started


def feeding(data: list[bytes], reused: bool) -> tuple[float, float]:
    """(CPU seconds the feeding thread spends in update, not counting waits on a full queue;
    wall seconds to the digest) through a BackgroundHasher. `reused`: the bytes come in one
    reused buffer, as a source's reads do, and are copied."""
    hasher = BackgroundHasher(Blake3())
    buffer = memoryview(bytearray(READ_SIZE))
    fed = 0.0
    started = time.perf_counter()
    for piece in data:
        if reused:
            buffer[:len(piece)] = piece
        before = time.thread_time()
        hasher.update(buffer[:len(piece)] if reused else piece)
        fed += time.thread_time() - before
    hasher.hexdigest()
    return fed, time.perf_counter() - started


def tool(cmd: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of a peer tool."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    size: int = args.size
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-fp-") as workdir:
        mixed, sparse = os.path.join(workdir, "mixed.img"), os.path.join(workdir, "holes.img")
        make_mixed_disk(mixed, size)
        with open(sparse, "wb") as f:
            f.truncate(size)
        data = pieces(mixed)
        best: dict[str, float] = {}

        def keep(name: str, value: float) -> None:
            best[name] = min(best.get(name, value), value)

        for _ in range(args.rounds):
            for name, make in HASHERS.items():
                keep(f"{name}: data, CPU", hash_cpu(make, data, size))
                keep(f"{name}: holes, CPU", hash_cpu(make, None, size))
            for reused in (False, True):
                fed, wall = feeding(data, reused)
                how = "a reused buffer (copied)" if reused else "bytes (in place)"
                keep(f"BackgroundHasher fed {how}: feeder", fed)
                keep(f"BackgroundHasher fed {how}: wall", wall)
            for peer, cmd in (("b3sum", ["b3sum"]), ("b3sum --num-threads 1",
                                                      ["b3sum", "--num-threads", "1"]),
                              ("sha256sum", ["sha256sum"])):
                for what, path in (("data", mixed), ("holes", sparse)):
                    cpu, wall = tool([*cmd, path])
                    keep(f"{peer}: {what}, CPU", cpu)
                    keep(f"{peer}: {what}, wall", wall)
    scale = GiB / size
    report(f"{size / GiB:.2f} GiB, best of {args.rounds} rounds, seconds per GiB",
           [(name, f"{value * scale:6.3f} s/GiB") for name, value in best.items()])


if __name__ == "__main__":
    main()
