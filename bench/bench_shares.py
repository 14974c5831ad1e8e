"""Imaging onto network shares against imaging here and against copying the finished image
with the peer tools (`scp`, `smbclient put`), in one run, on servers on 127.0.0.1.

    python bench/bench_shares.py [--size 256M] [--format img|qcow2] [--smb-engines]

--smb-engines instead writes one file of random bytes to the SMB share three ways: through
smbnetfs (the engine rescue mounts with), through the smbprotocol library (pip install
smbprotocol; the other candidate) and with `smbclient put`.

Run as root (loop device, FUSE, sshd and smbd started for the run and stopped after it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import make_mixed_disk, report, rescue_cmd, timed

from rescue.stores.mount import mounted
from rescue.stores.url import parse
from rescue.units import human_rate, parse_size
from tests.fixtures.loop import loop_device
from tests.fixtures.shares import SMB_PASSWORD, SMB_USER, smb_server, ssh_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--format", choices=("img", "qcow2"), default="img")
    parser.add_argument("--smb-engines", action="store_true",
                        help="compare the SMB engines' write throughput instead")
    args = parser.parse_args()
    if args.smb_engines:
        smb_engines(args.size)
        return
    with tempfile.TemporaryDirectory(prefix="bench-shares-") as folder:
        work = Path(folder)
        ssh, smb = ssh_server(work / "ssh"), smb_server(work / "smb")
        env = {**os.environ, "RESCUE_SSH_OPTS": ssh.ssh_opts,
               "RESCUE_SMB_PASSWORD": SMB_PASSWORD, "XDG_STATE_HOME": str(work / "state")}
        try:
            disk = work / "disk.raw"
            make_mixed_disk(str(disk), args.size)
            name = f"x.{args.format}"
            with loop_device(str(disk)) as device:
                local = work / name
                seconds = {
                    "rescue image, local": timed(rescue_cmd("image", device, str(local)), env=env),
                    "rescue image, ssh://": timed(rescue_cmd("image", device,
                                                             ssh.place(name)[0]), env=env),
                    "rescue image, smb://": timed(rescue_cmd("image", device,
                                                             smb.place(name)[0]), env=env),
                }
            seconds["scp of the local image"] = timed(
                ["scp", "-q", "-P", str(ssh.port), *ssh.ssh_opts.split(), str(local),
                 f"root@127.0.0.1:{ssh.root}/copy"])
            seconds["smbclient put of the local image"] = timed(
                ["smbclient", "-p", str(smb.port), "-U", SMB_USER, "//127.0.0.1/data",
                 "-c", f"put {local} copy"], env={**os.environ, "PASSWD": SMB_PASSWORD})
        finally:
            ssh.kill()
            smb.kill()
        report(f"{args.size >> 20} MiB disk as .{args.format} (rate of the source size)",
               [(what, f"{took:6.2f} s  {human_rate(args.size / took)}")
                for what, took in seconds.items()])


def smb_engines(size: int) -> None:
    """Seconds to write `size` random bytes onto the share by each candidate engine."""
    with tempfile.TemporaryDirectory(prefix="bench-shares-") as folder:
        work = Path(folder)
        smb = smb_server(work / "smb")
        blob = work / "blob"
        blob.write_bytes(os.urandom(size))
        os.environ["RESCUE_SMB_PASSWORD"] = SMB_PASSWORD
        try:
            url = parse(smb.place("via-smbnetfs")[0])
            with mounted(url) as share:
                seconds = {"smbnetfs (FUSE)": timed(
                    ["dd", f"if={blob}", f"of={share.local(url)}", "bs=1M", "conv=fsync",
                     "status=none"])}
            seconds["smbprotocol (Python)"] = timed(
                [sys.executable, "-c", SMBPROTOCOL_PUT, str(smb.port), SMB_PASSWORD, str(blob)])
            seconds["smbclient put"] = timed(
                ["smbclient", "-p", str(smb.port), "-U", SMB_USER, "//127.0.0.1/data",
                 "-c", f"put {blob} via-smbclient"], env={**os.environ, "PASSWD": SMB_PASSWORD})
        finally:
            smb.kill()
    report(f"{size >> 20} MiB of random bytes written to SMB",
           [(what, f"{took:6.2f} s  {human_rate(size / took)}") for what, took in seconds.items()])


SMBPROTOCOL_PUT = f"""
import sys, smbclient
port, password, blob = int(sys.argv[1]), sys.argv[2], sys.argv[3]
smbclient.register_session("127.0.0.1", username="{SMB_USER}", password=password, port=port)
with smbclient.open_file("//127.0.0.1/data/via-smbprotocol", mode="wb", port=port) as out:
    with open(blob, "rb") as source:
        while chunk := source.read(1 << 20):
            out.write(chunk)
"""


if __name__ == "__main__":
    main()
