"""Multicast deployment to three receivers against a unicast copy to one, over the same veths.

In one run, on a LAN of network namespaces joined by a bridge (tests/fixtures/multicast.py): a
mixed-content disk is imaged with `rescue image` into a qcow2 (it has a manifest, so the sender
hashes nothing beforehand), then written onto loop devices by

- `rescue deploy send` to three receivers (`rescue deploy receive`), zstd on the wire, and
  again with `--no-compress`, and to one receiver: wall time from the sender's start to the
  last report, which includes each receiver's read-back and digest;
- the peer: the same logical bytes (the raw disk) over one plain TCP stream into
  `dd oflag=direct conv=fsync` on one receiver, then `b3sum` of that disk (the read-back a
  deployment does), and the same stream zstd-compressed (`zstd -1` / `zstd -d`).

Prints the times, each receiver's throughput (every receiver gets the whole image in that
time), the bytes on the wire, and the ratios, for each of `--rates`: links shaped to a switch
port's rate (1 Gbit/s, a room's LAN) and unshaped ("none": a veth moves TCP at memory speed in
64 KiB segments, and the four "machines" share this machine's cores, which no room does). The
loop devices' backing files live in /dev/shm and are rewritten before each run, so no run pays
for first-touch allocation. Medians of `--repeat` interleaved rounds, because the machines
are shared.

Run as root: python bench/bench_deploy.py [--size 512M] [--repeat 3] [--rates 1gbit,none]
[--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack

from common import REPO, make_mixed_disk, report

from rescue.units import human_rate, human_size, parse_size
from tests.fixtures.loop import loop_device
from tests.fixtures.multicast import Host, lan

PORT = 9300
TCP_PORT = 9400
SERVE = ("import socket, shutil, sys\n"
         "server = socket.create_server(('', int(sys.argv[1])))\n"
         "connection, _ = server.accept()\n"
         "with connection, connection.makefile('wb') as out:\n"
         "    shutil.copyfileobj(sys.stdin.buffer, out, 4 << 20)\n")
FETCH = ("import socket, shutil, sys\n"
         "connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
         "shutil.copyfileobj(connection.makefile('rb'), sys.stdout.buffer, 4 << 20)\n")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def rescue_in(host: Host, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(host.command(sys.executable, "-m", "rescue", *args), env=env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def refill(backings: list[str], size: int) -> None:
    """Write every byte of the targets' backing files again: no run pays first-touch costs."""
    for path in backings:
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M",
                        f"count={size // (4 << 20)}", "status=none"], check=True)


def deploy(sender: Host, receivers: list[Host], devices: list[str], image: str,
           *options: str) -> tuple[float, int]:
    """Seconds from the sender's start to its summary, and the bytes it put on the wire."""
    waiting = [rescue_in(host, "deploy", "receive", device, "--yes", "--interface",
                         host.interface, "--port", str(PORT))
               for host, device in zip(receivers, devices, strict=True)]
    time.sleep(1)  # every receiver listens before the sender starts
    started = time.perf_counter()
    sending = rescue_in(sender, "deploy", "send", image, "--json", "--interface",
                        sender.interface, "--port", str(PORT), "--min-receivers",
                        str(len(receivers)), *options)
    out, err = sending.communicate()
    elapsed = time.perf_counter() - started
    for process in waiting:
        process.communicate()
    if sending.returncode != 0:
        raise SystemExit(f"deploy failed: {err[-800:]}")
    return elapsed, json.loads(out.splitlines()[-1])["wire"]


def unicast(sender: Host, receiver: Host, device: str, disk: str, compress: bool
            ) -> tuple[float, int]:
    """Seconds for the raw disk over one TCP stream into dd, then b3sum of the target; bytes
    on the wire."""
    squeeze, unsqueeze = ("zstd -1 -T0 -c |", "zstd -d -c |") if compress else ("", "")
    with open(disk, "rb") as source:
        serve = subprocess.Popen(sender.command(
            "bash", "-c", f"{squeeze} python3 -c \"$0\" {TCP_PORT}", SERVE), stdin=source)
        time.sleep(0.5)
        started = time.perf_counter()
        subprocess.run(receiver.command(
            "bash", "-c", f"python3 -c \"$0\" {sender.address} {TCP_PORT} | {unsqueeze} "
            f"dd of={device} bs=4M iflag=fullblock oflag=direct conv=fsync status=none && "
            f"b3sum --no-names {device} >/dev/null", FETCH), check=True)
        elapsed = time.perf_counter() - started
        serve.wait()
    return elapsed, os.path.getsize(disk) if not compress else _wire(disk)


def _wire(disk: str) -> int:
    done = subprocess.run(f"zstd -1 -T0 -c < {disk} | wc -c", shell=True, check=True,
                          capture_output=True, text=True)
    return int(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rates", default="1gbit,none",
                        help="link rates to measure at, tc's notation; none: unshaped")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-deploy-") as work, \
            ExitStack() as stack:
        disk = os.path.join(work, "disk.img")
        image = os.path.join(work, "disk.qcow2")
        make_mixed_disk(disk, size)
        with loop_device(disk) as source:
            subprocess.run([sys.executable, "-m", "rescue", "image", source, image],
                           env=env(), check=True, capture_output=True)
        backings = [os.path.join("/dev/shm", f"bench-deploy-{os.getpid()}-{i}")
                    for i in range(3)]
        for path in backings:
            stack.callback(lambda p=path: os.path.exists(p) and os.unlink(p))
        refill(backings, size)
        devices = [stack.enter_context(loop_device(path)) for path in backings]
        for rate in args.rates.split(","):
            with lan(4, None if rate == "none" else rate) as (sender, *hosts):
                measure(f"links {rate}", size, args.repeat, backings, {
                    "deploy, 3 receivers, zstd": lambda: deploy(sender, hosts, devices, image),
                    "deploy, 3 receivers, --no-compress": lambda: deploy(
                        sender, hosts, devices, image, "--no-compress"),
                    "deploy, 1 receiver, zstd": lambda: deploy(sender, hosts[:1], devices[:1],
                                                               image),
                    "unicast TCP + dd + b3sum, 1 target": lambda: unicast(
                        sender, hosts[0], devices[0], disk, False),
                    "unicast TCP zstd -1 + dd + b3sum, 1 target": lambda: unicast(
                        sender, hosts[0], devices[0], disk, True),
                })


def measure(title: str, size: int, repeat: int, backings: list[str],
            runs: dict[str, Callable[[], tuple[float, int]]]) -> None:
    """Each run `repeat` times, interleaved, onto freshly written targets; medians and
    ratios printed under `title`."""
    times: dict[str, list[float]] = {}
    wire: dict[str, int] = {}
    for _ in range(repeat):
        for name, work_once in runs.items():
            refill(backings, size)
            seconds, wire[name] = work_once()
            times.setdefault(name, []).append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    report(f"{title}: one {human_size(size)} image, median of {repeat}", [
        (name, f"{medians[name]:6.2f} s  {human_rate(size / medians[name]):>12} per receiver  "
               f"{human_size(wire[name]):>10} on the wire") for name in medians])
    single = medians["unicast TCP + dd + b3sum, 1 target"]
    three = medians["deploy, 3 receivers, zstd"]
    report(f"{title}: ratios", [
        ("3 receivers by deploy vs 1 by unicast (time; goal <= 1.2)", f"{three / single:.2f}x"),
        ("3 receivers by deploy vs 3 unicasts one after another (time)",
         f"{three / (3 * single):.2f}x"),
        ("wire bytes, zstd vs --no-compress",
         f"{wire['deploy, 3 receivers, zstd'] / wire['deploy, 3 receivers, --no-compress']:.3f}"),
    ])


if __name__ == "__main__":
    main()
