"""Qcow2Writer against `zstd -T0 -3` on the same data: speed and size, measured in one run.

    python bench/bench_qcow2_write.py [--size MiB] [--cluster-size BYTES] [DATA]

Without DATA it builds a disk-like mix: a tar stream of /usr (binaries, libraries, text),
incompressible random data and runs of zeros, in 4 MiB pieces, shuffled with a fixed seed.
The writer is fed 1 MiB in order from the file, as a first imaging pass would. Each side runs
`--repeat` times, interleaved, and the best time counts (machines here are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time

from rescue.formats.qcow2 import Qcow2Writer

PIECE = 4 << 20


def build_mix(path: str, size: int) -> None:
    """Roughly 60 % files from /usr, 20 % random, 20 % zeros."""
    rng = random.Random(7)
    pieces = size // PIECE
    kinds = ["usr"] * (pieces * 6 // 10) + ["random"] * (pieces * 2 // 10)
    kinds += ["zero"] * (pieces - len(kinds))
    rng.shuffle(kinds)
    tar = subprocess.Popen(["tar", "-cf", "-", "/usr/lib", "/usr/share"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    assert tar.stdout is not None
    with open(path, "wb") as out:
        for kind in kinds:
            if kind == "usr":
                out.write(tar.stdout.read(PIECE).ljust(PIECE, b"\0"))
            elif kind == "random":
                out.write(rng.randbytes(PIECE))
            else:
                out.write(bytes(PIECE))
    tar.kill()
    tar.wait()


def time_zstd(data: str, out: str) -> float:
    start = time.perf_counter()
    subprocess.run(["zstd", "-q", "-f", "-T0", "-3", data, "-o", out], check=True)
    return time.perf_counter() - start


def time_writer(data: str, out: str, cluster_size: int, threads: int) -> float:
    if os.path.exists(out):
        os.unlink(out)
    size = os.path.getsize(data)
    start = time.perf_counter()
    with open(data, "rb", buffering=0) as source, \
            Qcow2Writer(out, size, cluster_size=cluster_size, threads=threads) as writer:
        buffer = bytearray(1 << 20)
        offset = 0
        while offset < size:
            count = source.readinto(buffer)
            writer.write(offset, memoryview(buffer)[:count])
            offset += count
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--size", type=int, default=512, help="MiB of generated data")
    parser.add_argument("--cluster-size", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        data = args.data or os.path.join(work, "mix.raw")
        if not args.data:
            build_mix(data, args.size << 20)
        subprocess.run(["cat", data], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        zst, qcow = os.path.join(work, "mix.zst"), os.path.join(work, "mix.qcow2")
        zstd_time = ours_time = float("inf")
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            zstd_time = min(zstd_time, time_zstd(data, zst))
            ours_time = min(ours_time, time_writer(data, qcow, args.cluster_size, args.threads))
        mib = os.path.getsize(data) / (1 << 20)
        zstd_size, ours_size = os.path.getsize(zst), os.path.getsize(qcow)
        print(f"data            {mib:8.0f} MiB")
        print(f"zstd -T0 -3     {zstd_time:8.2f} s {mib / zstd_time:8.0f} MiB/s "
              f"{zstd_size / (1 << 20):8.1f} MiB")
        print(f"qcow2 ({args.cluster_size // 1024} KiB)  {ours_time:8.2f} s "
              f"{mib / ours_time:8.0f} MiB/s {ours_size / (1 << 20):8.1f} MiB")
        print(f"speed ratio {zstd_time / ours_time:.2f}x, size ratio {ours_size / zstd_size:.3f}")


if __name__ == "__main__":
    main()
