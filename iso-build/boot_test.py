#!/usr/bin/env python3
"""Boot test of the rescue live ISO under QEMU (TCG), driven over the serial console.

    python3 iso-build/boot_test.py [--iso PATH] [--firmware bios|uefi|both]

BIOS boots the ISO as a CD; UEFI (OVMF) boots it written to a USB stick that also carries a
RESCUE-DATA partition with a rescue-ssh.conf. Each boot gets two virtual disks, a read-only
source full of known bytes and an ext4 destination, and checks, on the serial console: rescue
starts by itself there and on tty1 (read from its screen memory), the TUI opens and quits,
`rescue disks --json` lists both disks, `rescue image` copies the source to a file on the
destination byte for byte, the network came up by DHCP, SSH lets the test's key in
(switched on by `rescue-ssh enable` on the CD, by the stick's file on the stick), and
`rescue image` writes a qcow2 into a share on the test host over SSH (an sshd on the host's
loopback, reached from the guest at SHARE_HOST through QEMU's guestfwd). Every wait
has a timeout and QEMU is always stopped. The serial transcript of each boot is kept beside
the ISO as boot-test-FIRMWARE.log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SSHD = "/usr/sbin/sshd"
MIB = 1 << 20
SOURCE_SIZE = 64 * MIB
DEST_SIZE = 256 * MIB
DATA_PARTITION_SIZE = 16 * MIB
BOOT_TIMEOUT = 480.0  # UEFI firmware, GRUB's 5 s menu and a TCG kernel boot
TUI_TIMEOUT = 180.0  # Python and Textual starting under TCG
ALT_SCREEN = "\x1b[?1049h"  # a full-screen app took over the terminal
ROOT_PASSWORD = "boot-test-password"
SHARE_HOST = "10.0.2.100"  # the guest's address for the host's share server (guestfwd)
TUI_QUIT_KEYS = ("q", "y", "\x11")  # quit; confirm quitting with jobs running; ctrl+q
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78])")
LAUNCHER_START = "starting rescue; quit it for a shell"
LAUNCHER_EXIT = re.compile(r"rescue exited with status (\d+)")


class CheckFailed(Exception):
    """One check of the boot did not hold; the message says which and what was seen."""


class SerialConsole:
    """QEMU's first serial port on its stdin/stdout: a transcript to search and a keyboard."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.transcript = ""
        self._lock = threading.Lock()
        self._log = log_path.open("w", encoding="utf-8", errors="replace")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._markers = 0

    def _read(self) -> None:
        assert self._process.stdout is not None
        while chunk := os.read(self._process.stdout.fileno(), 4096):
            text = chunk.decode("utf-8", errors="replace")
            with self._lock:
                self.transcript += text
            self._log.write(text)
            self._log.flush()

    def send(self, text: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(text.encode())
        self._process.stdin.flush()

    def expect(self, pattern: str | re.Pattern[str], timeout: float, start: int = 0,
               what: str = "") -> re.Match[str]:
        """The first match of `pattern` in the transcript from `start`, waiting up to `timeout`."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                match = regex.search(self.transcript, start)
            if match:
                return match
            if self._process.poll() is not None:
                raise CheckFailed(f"QEMU exited ({self._process.returncode}) waiting for "
                                  f"{what or regex.pattern!r}")
            if time.monotonic() > deadline:
                raise CheckFailed(f"no {what or regex.pattern!r} within {timeout:.0f} s")
            time.sleep(0.2)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        """Run `command` in the console's shell: its exit status and output (CR removed).

        Markers around it are typed split by quotes, so the echo of the typed line never
        matches them; only the shell's output does."""
        self._markers += 1
        begin, end = f"@@B{self._markers}", f"@@E{self._markers}"
        start = len(self.transcript)
        self.send(f'echo {begin[:3]}"{begin[3:]}"; {command}; echo {end[:3]}"{end[3:]}":$?\r')
        match = self.expect(re.compile(rf"{begin}\r?\n(.*?){end}:(\d+)", re.DOTALL), timeout,
                            start, what=f"end of `{command}`")
        return int(match.group(2)), match.group(1).replace("\r", "")

    def stop(self) -> None:
        """QEMU stopped for good, whatever state it is in."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._reader.join(timeout=5)
        self._log.close()


@dataclass
class Machine:
    """What one boot is given, and what its checks compare against."""

    source_sha256: str
    ssh_port: int
    ssh_key: Path
    public_key: str
    ssh_preset: bool  # SSH switched on at boot by a rescue-ssh.conf on the stick
    share: Path  # the folder the host's sshd serves to the guest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_source(path: Path) -> str:
    """A sparse disk image with random data in a few places; returns its SHA-256."""
    rng = random.Random(20240607)
    with path.open("wb") as disk:
        disk.truncate(SOURCE_SIZE)
        for offset in (0, 5 * MIB + 512, 40 * MIB, SOURCE_SIZE - MIB):
            disk.seek(offset)
            disk.write(rng.randbytes(MIB))
    digest = hashlib.sha256()
    with path.open("rb") as disk:
        while block := disk.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def run_tool(*command: str) -> str:
    """A host tool's standard output; its messages are shown only when it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def make_dest(path: Path) -> None:
    with path.open("wb") as disk:
        disk.truncate(DEST_SIZE)
    run_tool("mkfs.ext4", "-q", "-F", "-L", "RESCUE-DST", str(path))


def make_stick(iso: Path, path: Path, ssh_conf: str) -> None:
    """The ISO as written to a USB stick, plus a FAT partition labelled RESCUE-DATA after it
    holding `ssh_conf` as rescue-ssh.conf: what the README tells a user to do."""
    shutil.copyfile(iso, path)
    with path.open("r+b") as stick:
        stick.truncate(path.stat().st_size + DATA_PARTITION_SIZE + MIB)
    run_tool("sgdisk", "--move-second-header", str(path))
    run_tool("sgdisk", "--new=0:0:0", "--typecode=0:0700", "--change-name=0:RESCUE-DATA",
             str(path))
    table = run_tool("partx", "--show", "--noheadings", "--bytes", "-o", "START,SECTORS",
                     str(path))
    start, sectors = (int(field) for field in table.splitlines()[-1].split())
    run_tool("mkfs.vfat", "-n", "RESCUE-DATA", f"--offset={start}", str(path),
             str(sectors // 2))
    conf = path.with_name("rescue-ssh.conf")
    conf.write_text(ssh_conf)
    run_tool("mcopy", "-i", f"{path}@@{start * 512}", str(conf), "::rescue-ssh.conf")


class ShareServer:
    """An sshd on the host's loopback that lets the test's key in as the user running the
    test: the network share the live system images into. Its own config, host key and
    authorized keys in `work`; nothing of the host's sshd is touched."""

    def __init__(self, work: Path, public_key: str) -> None:
        self.port = free_port()
        host_key = work / "share_host_key"
        run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        keys = work / "share_authorized_keys"
        keys.write_text(public_key + "\n")
        config = work / "share_sshd_config"
        config.write_text(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                          f"AuthorizedKeysFile {keys}\nPidFile {work / 'share_sshd.pid'}\n"
                          "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                          "PermitRootLogin prohibit-password\n"
                          "Subsystem sftp internal-sftp\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation root
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CheckFailed("the share's sshd did not start: "
                                  + (self.process.stderr.read().decode() if
                                     self.process.stderr else ""))
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def prepare(firmware: str, iso: Path, work: Path, public_key: str,
            share_port: int) -> tuple[list[str], int]:
    """QEMU's command line for one boot and its forwarded SSH port; the stick is made here.
    The guest reaches the host's share server at SHARE_HOST:22, one `nc` per connection."""
    port = free_port()
    share = f"guestfwd=tcp:{SHARE_HOST}:22-cmd:nc 127.0.0.1 {share_port}"
    command = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-smp", "2", "-m", "2048",
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22,{share}",
        "-device", "virtio-net-pci,netdev=net0",
        "-drive", f"if=none,id=src,format=raw,readonly=on,file={work / 'source.img'}",
        "-device", "virtio-blk-pci,drive=src,serial=RESCUE-SRC",
        "-drive", f"if=none,id=dst,format=raw,file={work / 'dest.img'}",
        "-device", "virtio-blk-pci,drive=dst,serial=RESCUE-DST",
    ]
    if firmware == "bios":
        return [*command, "-cdrom", str(iso), "-boot", "d"], port
    vars_copy = work / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    make_stick(iso, work / "stick.img", f"# written by the boot test\n"
                                        f"password = {ROOT_PASSWORD}\n"
                                        f"authorized_key = {public_key}\n")
    return [*command,
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={vars_copy}",
            "-device", "qemu-xhci,id=xhci",
            "-drive", f"if=none,id=stick,format=raw,file={work / 'stick.img'}",
            "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"], port


def quit_tui(console: SerialConsole, start: int, done: re.Pattern[str]) -> re.Match[str]:
    """Wait for the full-screen TUI to draw its key bar, then quit it; the `done` match.

    `done` (the program's exit) showing up before the screen is a failure: the TUI crashed."""
    drawn = console.expect(f"{re.escape(ALT_SCREEN)}|{done.pattern}", TUI_TIMEOUT, start,
                           what="the TUI's screen")
    if drawn.group(0) != ALT_SCREEN:
        raise CheckFailed("the TUI exited without drawing its screen:\n"
                          + plain(console.transcript[start:drawn.end()])[-3000:])
    console.expect("Quit", TUI_TIMEOUT, drawn.end(), what="the TUI's key bar")
    for key in TUI_QUIT_KEYS:
        console.send(key)
        try:
            return console.expect(done, 20, drawn.end(), what="the TUI quitting")
        except CheckFailed:
            continue
    raise CheckFailed("the TUI did not quit on q, y or ctrl+q")


def plain(text: str) -> str:
    """Terminal output without its escape sequences (colours, cursor moves, modes)."""
    return ANSI_ESCAPE.sub("", text)


def check_no_traceback(text: str, what: str) -> None:
    """Python's tracebacks and Rich's (a TUI crash) both start with this line."""
    if "Traceback (most recent call last)" in plain(text):
        raise CheckFailed(f"{what} crashed:\n{plain(text)[-3000:]}")


class BootChecks:
    """The checks of one boot, in order; each raises CheckFailed or prints one PASS line."""

    def __init__(self, console: SerialConsole, machine: Machine, started: float) -> None:
        self.console = console
        self.machine = machine
        self.started = started

    def poll(self, command: str, timeout: float, ready: Callable[[int, str], T | None],
             failure: str) -> T:
        """Run `command` every 5 s until `ready(status, output)` gives a truthy result, which
        is returned; CheckFailed with `failure` and the last output after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            status, output = self.console.run(command, 60)
            result = ready(status, output)
            if result:
                return result
            if time.monotonic() > deadline:
                raise CheckFailed(f"{failure}:\n{plain(output)[-2000:]}")
            time.sleep(5)

    def passed(self, what: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"  PASS [{elapsed:5.0f} s] {what}", flush=True)

    def autostart(self) -> None:
        """The console logs in and the launcher opens rescue, which either shows the TUI (quit
        here) or, without a TUI home screen, prints its usage; either way, no crash."""
        launched = self.console.expect(re.escape(LAUNCHER_START), BOOT_TIMEOUT,
                                       what="rescue starting on ttyS0")
        self.passed("booted; rescue started on the serial console by itself")
        first = self.console.expect(f"{re.escape(ALT_SCREEN)}|{LAUNCHER_EXIT.pattern}",
                                    TUI_TIMEOUT, launched.end(), what="rescue's first output")
        tui = first.group(0) == ALT_SCREEN
        ended = quit_tui(self.console, launched.end(), LAUNCHER_EXIT) if tui else first
        output = self.console.transcript[launched.end():ended.start()]
        check_no_traceback(output, "rescue on the serial console")
        if not tui and "usage: rescue" not in output:
            raise CheckFailed(f"rescue showed neither its TUI nor its usage:\n"
                              f"{plain(output)[-2000:]}")
        self.passed(f"rescue ran on ttyS0 and exited with status {ended.group(1)}; shell")

    def local_console(self) -> None:
        """tty1, the screen of a machine with a monitor, opens rescue by itself too: its TUI
        runs there and its key bar is in that console's screen memory (/dev/vcs1)."""
        def tui_processes(status: int, output: str) -> list[str]:
            processes, _, screen = output.partition("@screen@")
            check_no_traceback(screen, "rescue on tty1")
            tui = [line for line in processes.splitlines()
                   if re.search(r"\brescue\b(?!-)", line) and "bash" not in line]
            return tui if status == 0 and "Quit" in screen else []

        tui = self.poll("ps -o args= -t tty1; echo @screen@; tr -s ' ' < /dev/vcs1; echo",
                        TUI_TIMEOUT, tui_processes, "rescue's TUI is not on tty1")
        self.passed(f"tty1: rescue's TUI is on screen ({tui[0].strip()[-60:]})")

    def cli(self) -> None:
        status, output = self.console.run("rescue --version", 120)
        if status != 0 or "rescue" not in output:
            raise CheckFailed(f"`rescue --version` gave status {status}: {output}")
        self.passed(f"CLI: {output.strip().splitlines()[-1]}")

    def tui(self) -> None:
        """`rescue demo` opens the full-screen TUI on the vt220 serial console and quits."""
        start = len(self.console.transcript)
        self.console.send("rescue demo; echo demo-status=$?\r")
        done = re.compile(r"demo-status=(\d+)")
        ended = quit_tui(self.console, start, done)
        check_no_traceback(self.console.transcript[start:ended.end()], "the TUI")
        self.passed(f"TUI: `rescue demo` drew its screen and quit (status {ended.group(1)})")

    def disks(self) -> None:
        status, output = self.console.run("rescue disks --json", 180)
        if status != 0:
            raise CheckFailed(f"`rescue disks --json` gave status {status}: {output[-2000:]}")
        try:
            listed = {disk["path"]: disk["size"]
                      for disk in json.loads(output[output.index("{"):])["disks"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckFailed(f"`rescue disks --json` is not the expected JSON ({exc}):\n"
                              f"{output[-2000:]}") from exc
        expected = {"/dev/vda": SOURCE_SIZE, "/dev/vdb": DEST_SIZE}
        for path, size in expected.items():
            if listed.get(path) != size:
                raise CheckFailed(f"`rescue disks --json` lists {path} as {listed.get(path)} "
                                  f"bytes, not {size}: {sorted(listed)}")
        self.passed(f"`rescue disks --json` lists both disks ({', '.join(sorted(listed))})")

    def image(self) -> None:
        status, output = self.console.run(
            "mount /dev/vdb /mnt && rescue image /dev/vda /mnt/source.img && "
            "sha256sum /mnt/source.img", 600)
        if status != 0:
            raise CheckFailed(f"imaging gave status {status}:\n{output[-3000:]}")
        digest = re.search(r"\b([0-9a-f]{64})\s+/mnt/source.img", output)
        if not digest or digest.group(1) != self.machine.source_sha256:
            raise CheckFailed(f"the image differs from the source disk:\n{output[-2000:]}")
        self.passed("`rescue image /dev/vda /mnt/source.img` finished; SHA-256 equals the disk's")

    def network(self) -> None:
        """DHCP gave an IPv4 address (polled: the lease may come after login)."""
        def address(status: int, output: str) -> re.Match[str] | None:
            found = re.search(r"^address: (\S+) (\d+\.\d+\.\d+\.\d+)$", output, re.MULTILINE)
            return found if status == 0 else None

        found = self.poll("rescue-ssh status", 120, address, "no IPv4 address by DHCP")
        self.passed(f"network: {found.group(1)} has {found.group(2)} by DHCP")

    def ssh(self) -> None:
        """SSH is off unless the stick asked for it, else `rescue-ssh enable` switches it on;
        either way root gets a password and the test's key, which then logs in."""
        status, output = self.console.run("rescue-ssh status", 60)
        state = re.search(r"^ssh: (\S+)$", output, re.MULTILINE)
        expected = "active" if self.machine.ssh_preset else "inactive"
        if not state or state.group(1) != expected:
            raise CheckFailed(f"SSH should be {expected} at boot:\n{output}")
        if not self.machine.ssh_preset:
            status, output = self.console.run(
                f"echo {ROOT_PASSWORD} | rescue-ssh enable --password-stdin "
                f"--authorized-key '{self.machine.public_key}'", 180)
            if status != 0 or not re.search(r"^ssh: active$", output, re.MULTILINE):
                raise CheckFailed(f"`rescue-ssh enable` gave status {status}:\n{output}")
        status, output = self.console.run("passwd --status root", 60)
        if status != 0 or output.split()[1:2] != ["P"]:
            raise CheckFailed(f"root's password was not set: {output}")
        how = "rescue-ssh.conf on the stick" if self.machine.ssh_preset else "rescue-ssh enable"
        login = subprocess.run(
            ["ssh", "-i", str(self.machine.ssh_key), "-p", str(self.machine.ssh_port),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=120",
             "-o", "LogLevel=ERROR", "root@127.0.0.1", "rescue --version"],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if login.returncode != 0 or "rescue" not in login.stdout:
            raise CheckFailed(f"SSH login failed ({login.returncode}): {login.stderr.strip()}")
        self.passed(f"SSH ({how}): root has a password; key login ran `rescue --version`")

    def share(self) -> None:
        """`rescue image` into an ssh:// share on the test host: the guest gets the test's
        key (over the SSH login just checked), images the source disk into the host's share
        folder, and the host compares the qcow2 with the source disk."""
        machine = self.machine
        copy = subprocess.run(
            ["scp", "-q", "-i", str(machine.ssh_key), "-P", str(machine.ssh_port),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             str(machine.ssh_key), "root@127.0.0.1:/root/share_key"],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if copy.returncode != 0:
            raise CheckFailed(f"copying the share key in failed: {copy.stderr.strip()}")
        user = os.environ.get("USER") or "root"
        url = f"ssh://{user}@{SHARE_HOST}{machine.share}/source.qcow2"
        status, output = self.console.run(
            "RESCUE_SSH_OPTS='-i /root/share_key -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null' rescue image /dev/vda {url}", 900)
        check_no_traceback(output, "imaging into the share")
        if status != 0:
            raise CheckFailed(f"imaging into {url} gave status {status}:\n{output[-3000:]}")
        image = machine.share / "source.qcow2"
        compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                                  str(machine.share.parent / "source.img"), str(image)],
                                 capture_output=True, text=True)
        if compare.returncode != 0:
            raise CheckFailed(f"the share's image differs from the source disk: "
                              f"{compare.stdout.strip()} {compare.stderr.strip()}")
        self.passed(f"`rescue image /dev/vda {url}`: the host's qcow2 equals the disk")


def run_checks(firmware: str, iso: Path, work: Path, log_path: Path, started: float) -> None:
    """Make the disks (and the stick), boot, run every check; QEMU is stopped in any case."""
    key = work / "id_ed25519"
    run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boot-test", "-f", str(key))
    public_key = key.with_suffix(".pub").read_text().strip()
    source_sha256 = make_source(work / "source.img")
    make_dest(work / "dest.img")
    share = work / "share"
    share.mkdir()
    server = ShareServer(work, public_key)
    command, port = prepare(firmware, iso, work, public_key, server.port)
    machine = Machine(source_sha256, port, key, public_key, ssh_preset=firmware == "uefi",
                      share=share)
    try:
        console = SerialConsole(command, log_path)
    except BaseException:
        server.stop()
        raise
    try:
        checks = BootChecks(console, machine, started)
        checks.autostart()
        checks.local_console()
        checks.cli()
        checks.tui()
        checks.disks()
        checks.image()
        checks.network()
        checks.ssh()
        checks.share()
    finally:
        console.stop()
        server.stop()


def boot_and_check(firmware: str, iso: Path, log_dir: Path) -> bool:
    print(f"== {firmware}: booting {iso.name} under QEMU (TCG)", flush=True)
    started = time.monotonic()
    log_path = log_dir / f"boot-test-{firmware}.log"
    with tempfile.TemporaryDirectory(prefix=f"rescue-boot-{firmware}-") as tmp:
        try:
            run_checks(firmware, iso, Path(tmp), log_path, started)
        except CheckFailed as failure:
            print(f"  FAIL [{time.monotonic() - started:5.0f} s] {failure}", flush=True)
            print(f"  serial transcript: {log_path}", flush=True)
            return False
    print(f"== {firmware}: all checks passed in {time.monotonic() - started:.0f} s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iso", type=Path, default=HERE / "out" / "rescue-live.iso")
    parser.add_argument("--firmware", choices=("bios", "uefi", "both"), default="both")
    args = parser.parse_args(argv)
    if not args.iso.is_file():
        print(f"boot_test: no ISO at {args.iso}; build it with iso-build/build.sh",
              file=sys.stderr)
        return 2
    for tool in ("qemu-system-x86_64", "qemu-img", "sgdisk", "partx", "mkfs.vfat", "mcopy",
                 "mkfs.ext4", "ssh", "scp", "ssh-keygen", SSHD, "nc"):
        if not shutil.which(tool):
            print(f"boot_test: {tool} is missing", file=sys.stderr)
            return 2
    # SIGTERM (a CI timeout) unwinds like Ctrl+C, so QEMU and the temporary disks go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = args.iso.resolve().parent
    firmwares = ("bios", "uefi") if args.firmware == "both" else (args.firmware,)
    results = [boot_and_check(firmware, args.iso.resolve(), log_dir) for firmware in firmwares]
    passed = sum(results)
    print(f"boot test: {passed} passed, {len(results) - passed} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
