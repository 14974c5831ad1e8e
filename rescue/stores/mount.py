"""A share's folder mounted for one job: sshfs for ssh://, smbnetfs (FUSE over libsmbclient)
for smb://, the kernel's NFS client for nfs://.

Each mount lives in a private directory (mode 0700) with nosuid,nodev, and is unmounted when
the job ends, also on an error or ^C, and by its guard when rescue is killed
(`leftovers.py`). A lost share (the server went away, the network dropped)
is told apart from a full or broken one, so an imaging job can wait for it and mount it again.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rescue.errors import UsageError
from rescue.stores import leftovers
from rescue.stores.url import StoreUrl

SSH_OPTS_ENV = "RESCUE_SSH_OPTS"
SMB_PASSWORD_ENV = "RESCUE_SMB_PASSWORD"
MOUNT_WAIT = 20.0  # seconds a FUSE mount may take to show the share
# errors that say the share is gone, not that a file on it is bad
LOST_ERRNOS = {errno.ENOTCONN, errno.ECONNABORTED, errno.ECONNRESET, errno.ECONNREFUSED,
               errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EIO,
               errno.ESHUTDOWN, errno.ENODEV}


class ShareError(UsageError):
    """A share that cannot be mounted: the tool missing, the server not answering, refused."""


def _run(argv: list[str], what: str, env: dict[str, str] | None = None,
         timeout: float = 60.0) -> None:
    """Run a mount helper; its complaint, first line, becomes the one line the user sees."""
    try:
        done = subprocess.run(argv, stdin=None if sys.stdin.isatty() else subprocess.DEVNULL,
                              capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise ShareError(f"{what}: {argv[0]} is missing (install it)") from None
    except subprocess.TimeoutExpired:
        raise ShareError(f"{what}: no answer within {timeout:.0f} s") from None
    if done.returncode:
        said = next((line.strip() for line in (done.stderr + done.stdout).splitlines()
                     if line.strip()), f"exit status {done.returncode}")
        raise ShareError(f"{what}: {said}")


def _is_mounted(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        target = os.path.realpath(path)
        return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)


@dataclass
class _Backend(ABC):
    """How one scheme mounts, and where in the mount the URL's folder appears."""

    url: StoreUrl  # the folder to mount
    work: str  # the private directory: the mount point and the helper's files
    secret: str | None = None  # a password, once asked; never written by us
    # whether a prompt may be shown on the terminal: not under the console, which owns it
    interactive: bool = True

    @property
    def mountpoint(self) -> str:
        return os.path.join(self.work, leftovers.MOUNTPOINT)

    @property
    def folder(self) -> str:
        """The URL's folder inside the mount."""
        return self.mountpoint

    @property
    def may_ask(self) -> bool:
        return self.interactive and sys.stdin.isatty()

    @abstractmethod
    def mount(self) -> None:
        """Mount the share at `mountpoint`, or raise ShareError saying why not."""

    def unmount(self) -> None:
        leftovers.unmount(self.mountpoint)

    def space(self, folder: str) -> tuple[int, int] | None:
        """Free and total bytes where `folder` lies; None where the client cannot say."""
        stat = os.statvfs(folder)
        if not stat.f_blocks:
            return None
        return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


class _Ssh(_Backend):
    def mount(self) -> None:
        url = self.url
        user = f"{url.user}@" if url.user else ""
        host = f"[{url.host}]" if ":" in url.host else url.host
        ssh = ["ssh", *shlex.split(os.environ.get(SSH_OPTS_ENV, ""))]
        if not self.may_ask:  # a script cannot answer a password prompt: fail instead
            ssh += ["-o", "BatchMode=yes"]
        argv = ["sshfs", f"{user}{host}:{url.path}", self.mountpoint,
                "-o", "nosuid,nodev,ServerAliveInterval=5,ServerAliveCountMax=3",
                "-o", "ssh_command=" + " ".join(ssh)]
        if url.port:
            argv += ["-p", str(url.port)]
        try:
            _run(argv, f"cannot mount {url}")
        except ShareError as failed:
            # sshfs says only "read: Connection reset by peer" whatever went wrong; ssh itself,
            # with the same configuration, says why (refused, unknown host, key not accepted)
            port = ["-p", str(url.port)] if url.port else []
            _run([*ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *port,
                  f"{user}{url.host}", "true"], f"cannot mount {url}", timeout=30)
            raise failed


class _Smb(_Backend):
    """smbnetfs shows the whole network as /HOST/SHARE/...; its files (the password among
    them) live in the private directory, given to it as its HOME."""

    @property
    def folder(self) -> str:
        return os.path.join(self.mountpoint, self._server, self.url.path.strip("/"))

    @property
    def _server(self) -> str:
        """The server as smbnetfs names it: libsmbclient takes a port after the host."""
        return f"{self.url.host}:{self.url.port}" if self.url.port else self.url.host

    def mount(self) -> None:
        url = self.url
        home = os.path.join(self.work, "home")
        conf = os.path.join(home, ".smb")
        os.makedirs(conf, mode=0o700, exist_ok=True)
        with open(os.path.join(conf, "smbnetfs.conf"), "w", encoding="utf-8") as netfs:
            netfs.write('show_$_shares "true"\nsmbnetfs_debug 0\nsmb_debug_level 0\n'
                        'include "smbnetfs.auth"\n')
        auth = os.open(os.path.join(conf, "smbnetfs.auth"),
                       os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(auth, "w", encoding="utf-8") as file:
            if url.user:  # one server per private HOME: its one account
                file.write(f'auth "{url.user}" "{self._password()}"\n')
        env = {**os.environ, "HOME": home}
        _run(["smbnetfs", self.mountpoint, "-o",
              "nosuid,nodev,big_writes,max_write=1048576"], f"cannot mount {url}", env)
        self._wait_for_share()

    def _password(self) -> str:
        """Asked once, kept in memory only: mounting again after a loss asks nobody."""
        if self.secret is None:
            self.secret = smb_password(self.url, self.may_ask)
        return self.secret

    def space(self, folder: str) -> tuple[int, int] | None:
        """smbnetfs reports no sizes: smbclient asks the server."""
        argv = ["smbclient", f"//{self.url.host}/{self.url.share}", "-c", "du"]
        argv += ["-p", str(self.url.port)] if self.url.port else []
        argv += ["-U", self.url.user] if self.url.user else ["-N"]
        env = {**os.environ, "PASSWD": self._password()} if self.url.user else None
        try:
            said = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30,
                                  stdin=subprocess.DEVNULL).stdout
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return None
        found = re.search(r"(\d+) blocks of size (\d+)\. (\d+) blocks available", said)
        if found is None:
            return None
        blocks, size, free = (int(number) for number in found.groups())
        return free * size, blocks * size

    def _wait_for_share(self) -> None:
        """smbnetfs mounts at once and connects on first use: a wrong password or a server
        that does not answer shows only there."""
        share = os.path.join(self.mountpoint, self._server, self.url.share)
        deadline = time.monotonic() + MOUNT_WAIT
        while True:
            try:
                os.stat(os.path.join(share, "."))
                os.listdir(share)
                return
            except OSError as error:
                if time.monotonic() > deadline or error.errno in (errno.EACCES, errno.EPERM):
                    self.unmount()
                    share_url = StoreUrl("smb", self.url.host, f"/{self.url.share}",
                                         self.url.user, self.url.port)
                    raise ShareError(f"cannot reach {share_url}: {error.strerror}") from None
                time.sleep(0.5)


class _Nfs(_Backend):
    def mount(self) -> None:
        url = self.url
        if not shutil.which("mount.nfs"):
            raise ShareError(f"cannot mount {url}: mount.nfs is missing (install nfs-common)")
        if not _kernel_has("nfs"):
            raise ShareError(f"cannot mount {url}: this kernel has no NFS client (modprobe "
                             "nfs, or use ssh:// or smb://)")
        options = "nosuid,nodev" + (f",port={url.port}" if url.port else "")
        _run(["mount", "-t", "nfs", "-o", options, f"{url.host}:{url.path}", self.mountpoint],
             f"cannot mount {url}")


def _kernel_has(fstype: str) -> bool:
    """Whether the kernel knows `fstype` now, or can load it."""
    with open("/proc/filesystems", encoding="utf-8") as known:
        if any(line.split()[-1] == fstype for line in known if line.strip()):
            return True
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/sbin:/usr/sbin")
    return modprobe is not None and subprocess.run(
        [modprobe, "-q", fstype], capture_output=True, check=False).returncode == 0


BACKENDS: dict[str, type[_Backend]] = {"ssh": _Ssh, "smb": _Smb, "nfs": _Nfs}


def smb_password(url: StoreUrl, may_ask: bool) -> str:
    """RESCUE_SMB_PASSWORD for scripts, else asked on the terminal; never stored by us."""
    password = os.environ.get(SMB_PASSWORD_ENV)
    if password is not None:
        return password
    if not may_ask:
        raise ShareError(f"{url}: a password is needed: set {SMB_PASSWORD_ENV} or run on a "
                         "terminal")
    return getpass.getpass(f"password for {url.user} on {url.host}/{url.share}: ")


class ShareMount:
    """The folder of a store URL, mounted until `close()`; `lost()` says the share is gone,
    `remount()` brings it back. Not `interactive`: no password asked on the terminal (the
    console draws there), a missing one is an error instead."""

    def __init__(self, folder: StoreUrl, interactive: bool = True) -> None:
        self.url = folder
        self._owned = leftovers.Owned()  # first sweeps what a killed rescue left mounted
        self._backend = BACKENDS[folder.scheme](folder, self._owned.work,
                                                interactive=interactive)
        os.mkdir(self._backend.mountpoint, 0o700)
        try:
            self._backend.mount()
        except BaseException:
            self._remove_dir()
            raise
        self._owned.guard()

    @property
    def path(self) -> str:
        """The local path of the URL's folder."""
        return self._backend.folder

    def local(self, url: StoreUrl) -> str:
        """The local path of a file in this folder."""
        return os.path.join(self.path, url.name)

    def lost(self) -> bool:
        """Whether the share no longer answers (its server or the network went away)."""
        if not _is_mounted(self._backend.mountpoint):  # sshfs unmounts itself as it ends
            return True
        try:
            os.statvfs(self.path)
            os.listdir(self.path)
        except OSError as error:
            return error.errno in LOST_ERRNOS
        return False

    def remount(self) -> bool:
        """Let go of the dead mount and try once to mount the share again."""
        self._backend.unmount()
        try:
            self._backend.mount()
        except ShareError:
            return False
        return not self.lost()

    def reconnect(self, timeout: float, interval: float = 2.0) -> bool:
        """Mount the lost share again, trying until `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not self.remount():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    def free_space(self) -> tuple[int, int] | None:
        """Free and total bytes on the share; None where the server does not say."""
        return self._backend.space(self.path)

    def close(self) -> None:
        try:
            self._backend.unmount()
        finally:
            self._remove_dir()

    def _remove_dir(self) -> None:
        """The private directory and what a helper kept there, once nothing is mounted."""
        for _ in range(50):
            if not _is_mounted(self._backend.mountpoint):
                break
            time.sleep(0.1)
        shutil.rmtree(self._backend.work, ignore_errors=True)
        self._owned.release()


def as_urls(text: str, mounts: Iterable[ShareMount]) -> str:
    """`text` with each mount's local folder written as its URL: the user reads
    `ssh://nas/srv/sdb.qcow2`, the name they gave, not a private mount point."""
    for mount in mounts:
        text = text.replace(mount.path, str(mount.url))
    return text


@contextmanager
def mounted(url: StoreUrl) -> Iterator[ShareMount]:
    """The folder holding `url`, mounted for the length of the `with` block."""
    share = ShareMount(url.parent)
    try:
        yield share
    finally:
        share.close()


@dataclass(frozen=True)
class Probe:
    """What `probe` found: the share answers, with this much room."""

    url: StoreUrl
    space: tuple[int, int] | None  # free and total bytes, when the share says


def probe(url: StoreUrl, interactive: bool = True) -> Probe:
    """Test a connection to the folder `url` names and report its free space (for the
    console's network-share step, before a job is started)."""
    share = ShareMount(url, interactive)
    try:
        if not os.path.isdir(share.path):
            raise ShareError(f"{url}: no such folder on the share")
        return Probe(url, share.free_space())
    finally:
        share.close()
