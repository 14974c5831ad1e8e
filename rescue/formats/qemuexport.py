"""Images only QEMU reads, shown to rescue as raw files by `qemu-storage-daemon`.

VMDK, VHDX, VDI, VHD and QED disks, and the qcow2 images our own reader refuses (encrypted
with LUKS, an external data file, extended L2 entries, another tool's backing chain), are
read by QEMU itself: `qemu-storage-daemon` exports the image through FUSE as a raw file, and
that file is read with our raw reader, so every command that reads a raw image reads these.

The daemon never outlives its user: it is stopped when the export is closed, on every exit
path, and `setpriv --pdeathsig` has the kernel stop it when rescue dies, `kill -9` included.
The kernel sends that signal when the *thread* that started the daemon ends, so every daemon
is started by one launcher thread that lives as long as the process. A passphrase reaches
QEMU through a `secret` object that reads a 0600 file in a private folder in memory
(/dev/shm), removed as soon as the export is up: it is never in an argument list or a log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from rescue.errors import DestinationError, FormatError, UsageError
from rescue.formats.base import Capabilities
from rescue.formats.qcow2header import (
    HEADER_V2,
    HEADER_V3,
    INCOMPAT_DATA_FILE,
    INCOMPAT_EXTENDED_L2,
    V3_HEADER_LENGTH,
)
from rescue.formats.raw import RawReader, RawWriter

PASSPHRASE_VARIABLE = "RESCUE_PASSPHRASE"
_START_TIMEOUT = 15.0
_CREATE_TRIES = 3
_SPURIOUS_TIMING = "Unable to get accurate CPU usage"  # QEMU's key-derivation timing, see below
_LAUNCHER = ThreadPoolExecutor(1, thread_name_prefix="qemu-launcher")
_passphrase: bytes | None = None
_ask: Callable[[str], bytes] | None = None
# the read-only exports readers share: (path, driver) -> (what stops it, raw file, readers)
_shared: dict[tuple[str, str], tuple[contextlib.ExitStack, str, int]] = {}
_SHARED_LOCK = threading.Lock()


def use_passphrase(passphrase: bytes) -> None:
    """The passphrase of the encrypted images this process opens (given on the command line's
    prompt or file); without one, RESCUE_PASSPHRASE is asked."""
    global _passphrase
    _passphrase = passphrase


def ask_passphrase_with(ask: Callable[[str], bytes]) -> None:
    """How to ask for a passphrase no option or variable gave (a prompt on a terminal)."""
    global _ask
    _ask = ask


def passphrase_for(path: str) -> bytes:
    """The passphrase that opens the encrypted image `path`, or the line that says how to
    give one."""
    if _passphrase is not None:
        return _passphrase
    if os.environ.get(PASSPHRASE_VARIABLE):
        return os.environ[PASSPHRASE_VARIABLE].encode()
    if _ask is not None:
        use_passphrase(_ask(path))
        return passphrase_for(path)
    raise UsageError(f"{path} is encrypted; give its passphrase with --passphrase-file FILE or "
                     f"{PASSPHRASE_VARIABLE}")


def passphrase_if_encrypted(path: str, image_format: str) -> bytes | None:
    """The passphrase `path` needs: an encrypted qcow2's, or None for any other image."""
    return passphrase_for(path) if image_format == "qcow2" and qcow2_encrypted(path) else None


def read_passphrase_file(path: str) -> bytes:
    """A passphrase from a file: its first line, without the line's end."""
    try:
        with open(path, "rb") as f:
            line = f.readline().rstrip(b"\r\n")
    except OSError as error:
        raise UsageError(f"cannot read the passphrase file {path}: {error.strerror}") from None
    if not line:
        raise UsageError(f"the passphrase file {path} is empty")
    return line


def _qcow2_fields(head: bytes) -> tuple[int, int, int]:
    """A qcow2 header's backing file offset, crypt method and incompatible feature bits (a
    version 2 header has none); zeros where `head` is too short to hold them."""
    if len(head) < HEADER_V2.size:
        return 0, 0, 0
    _, version, backing_offset, _, _, _, crypt_method, *_ = HEADER_V2.unpack_from(head)
    has_features = version >= 3 and len(head) >= V3_HEADER_LENGTH
    incompatible = HEADER_V3.unpack_from(head, HEADER_V2.size)[0] if has_features else 0
    return backing_offset, crypt_method, incompatible


def qcow2_needs_qemu(head: bytes) -> bool:
    """Whether a qcow2 header asks for what only QEMU reads: a backing file, encryption, an
    external data file or extended L2 entries."""
    backing_offset, crypt_method, incompatible = _qcow2_fields(head)
    return bool(backing_offset or crypt_method
                or incompatible & (INCOMPAT_DATA_FILE | INCOMPAT_EXTENDED_L2))


def qcow2_encrypted(path: str) -> bool:
    with open(path, "rb") as f:
        return _qcow2_fields(f.read(V3_HEADER_LENGTH))[1] != 0


@contextlib.contextmanager
def exported(path: str, driver: str, *, writable: bool = False,
             passphrase: bytes | None = None) -> Iterator[str]:
    """`path`, a `driver` image, as a raw file through qemu-storage-daemon's FUSE export,
    read-only unless `writable`; `passphrase` opens an encrypted qcow2. A qcow2 overlay brings
    its backing file, which qemu opens read-only."""
    with _scratch("rescue-export") as folder:
        target = os.path.join(folder, "disk")
        open(target, "wb").close()
        read_only = "off" if writable else "on"
        # a reader takes no lock, so the image job can read back what its writer wrote
        locking = "" if writable else ",locking=off"
        secret: list[str] = []
        key = ""
        if passphrase is not None:
            secret = ["--object", f"secret,id=key,file={_key_file(folder, passphrase)}"]
            key = ",encrypt.format=luks,encrypt.key-secret=key"
        daemon = _launch(
            ["setpriv", "--pdeathsig", "TERM", "qemu-storage-daemon", *secret, "--blockdev",
             f"driver=file,node-name=file,filename={_escaped(path)},read-only={read_only}"
             f"{locking}",
             "--blockdev",
             f"driver={driver},node-name=disk,file=file,read-only={read_only}{key}",
             "--export", f"type=fuse,id=exp,node-name=disk,mountpoint={target},"
                         f"writable={'on' if writable else 'off'}"])
        try:
            _wait_exported(daemon, target, path)
            _forget_key(folder)
            yield target
        finally:
            _forget_key(folder)
            _stop(daemon)


def _stop(daemon: subprocess.Popen[str]) -> None:
    """SIGTERM has the daemon unmount its export; one that does not answer is killed."""
    daemon.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.wait(timeout=30)
        return
    daemon.kill()
    daemon.wait()


class ExportedReader(RawReader):
    """An image QEMU reads, read as the raw file its export shows. The readers of one image
    in a process (a restore's decoders and its read-back) share one export: each start of
    QEMU on an encrypted image costs a LUKS key derivation, about 2 s by design. The last
    reader's close stops QEMU."""

    def __init__(self, path: str, driver: str, passphrase: bytes | None = None) -> None:
        self.driver = driver
        self.encrypted = passphrase is not None
        self._key = (os.path.realpath(path), driver)
        raw = _acquire(self._key, passphrase)
        try:
            super().__init__(raw)
        except BaseException:
            _release(self._key)
            raise
        self.path = path

    def details(self) -> dict[str, object]:
        return {"read_by": "qemu-storage-daemon", "driver": self.driver,
                **({"encryption": "luks"} if self.encrypted else {})}

    def close(self) -> None:
        if self._fd >= 0:
            super().close()
            _release(self._key)


def _acquire(key: tuple[str, str], passphrase: bytes | None) -> str:
    """The raw file of the shared export of `key` (path, driver), started by its first user."""
    with _SHARED_LOCK:
        if key in _shared:
            stack, raw, users = _shared[key]
            _shared[key] = (stack, raw, users + 1)
            return raw
        stack = contextlib.ExitStack()
        raw = stack.enter_context(exported(key[0], key[1], passphrase=passphrase))
        _shared[key] = (stack, raw, 1)
        return raw


def _release(key: tuple[str, str]) -> None:
    with _SHARED_LOCK:
        stack, raw, users = _shared[key]
        if users > 1:
            _shared[key] = (stack, raw, users - 1)
            return
        del _shared[key]
    stack.close()


class EncryptedWriter:
    """A qcow2 encrypted with LUKS by QEMU (`qemu-img create`), written through a writable
    export as a raw disk: QEMU encrypts every cluster, rescue writes plain sectors. An image
    that is there already is continued, as a raw or qcow2 image is on resume. QEMU forbids
    compressed clusters in an encrypted image, so it is not compressed."""

    capabilities = Capabilities()

    def __init__(self, path: str, size: int, passphrase: bytes) -> None:
        self.path, self.size = path, size
        fresh = not os.path.exists(path) or not os.path.getsize(path)  # --force empties it
        if not fresh and not qcow2_encrypted(path):
            raise UsageError(f"{path} is there and is not an encrypted qcow2 image; give a new "
                             "name for an encrypted one")
        # a new image is made and opened under another name (LUKS's key derivation takes
        # seconds), and takes its own once QEMU has it open: a job killed meanwhile leaves
        # no image without a map, which a rerun would refuse
        opened = f"{path}.creating" if fresh else path
        if fresh:
            _create_encrypted(opened, size, passphrase)
        self._export = contextlib.ExitStack()
        try:
            raw = self._export.enter_context(
                exported(opened, "qcow2", writable=True, passphrase=passphrase))
            if fresh:
                os.replace(opened, path)
            self._raw = RawWriter(raw, size)
        except BaseException:
            self._export.close()
            if fresh:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(opened)
            raise

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._raw.write(offset, data)

    def sync(self) -> None:
        self._raw.sync()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            self._export.close()


def _create_encrypted(path: str, size: int, passphrase: bytes) -> None:
    """`qemu-img create` of the encrypted qcow2. QEMU (as Debian 12 ships it) times its key
    derivation on a first round so short that a busy or fast machine can measure 0 ms and
    fail ("Unable to get accurate CPU usage"); that run is tried again, a few times."""
    for _ in range(_CREATE_TRIES):
        with _scratch("rescue-create") as folder:
            try:
                done = subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", "--object",
                     f"secret,id=key,file={_key_file(folder, passphrase)}", "-o",
                     "encrypt.format=luks,encrypt.key-secret=key", path, str(size)],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                    env=_without_passphrase())
            except FileNotFoundError:
                raise DestinationError("qemu-img is not installed; it makes encrypted images "
                                       "(Debian: apt install qemu-utils)") from None
        if done.returncode == 0 or _SPURIOUS_TIMING not in done.stderr:
            break
    if done.returncode:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DestinationError(f"qemu-img cannot create {path}: {said}")


def _without_passphrase() -> dict[str, str]:
    """This process's environment for QEMU, without the passphrase a user may have put in
    it: QEMU gets it through its secret object alone."""
    return {name: value for name, value in os.environ.items() if name != PASSPHRASE_VARIABLE}


def _escaped(path: str) -> str:
    """A path as one value of QEMU's comma-separated options: a comma is doubled."""
    return os.path.abspath(path).replace(",", ",,")


def _scratch(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A private folder (0700) in memory where there is one, named after this process; those
    of processes that are gone are removed first."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name.removeprefix(f"{kind}-").split("-", 1)[0]
        if name.startswith(f"{kind}-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{kind}-{os.getpid()}-", dir=base)


def _key_file(folder: str, passphrase: bytes) -> str:
    path = os.path.join(folder, "key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(passphrase)
    return path


def _forget_key(folder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, "key"))


def _launch(args: list[str]) -> subprocess.Popen[str]:
    """The daemon, started by the launcher thread that lives as long as rescue does."""
    missing = next((tool for tool in ("setpriv", "qemu-storage-daemon")
                    if shutil.which(tool) is None), None)
    if missing:
        raise FormatError(f"{missing} is not installed; QEMU reads this image for rescue "
                          "(Debian: apt install qemu-system-common util-linux)")
    try:
        return _LAUNCHER.submit(subprocess.Popen, args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=_without_passphrase()).result()
    except OSError as error:
        raise FormatError(f"cannot start qemu-storage-daemon: {error.strerror}") from None


def _wait_exported(daemon: subprocess.Popen[str], target: str, path: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not os.path.ismount(target):
        if daemon.poll() is not None or time.monotonic() > deadline:
            said = daemon.stderr.read().strip() if daemon.stderr and daemon.poll() else ""
            raise FormatError(_qemu_error(said, path))
        time.sleep(0.02)


def _qemu_error(said: str, path: str) -> str:
    """QEMU's complaint as one line about the image."""
    if "Invalid password" in said or "cannot unlock" in said:
        return f"wrong passphrase for the encrypted image {path}"
    line = (said.splitlines() or ["it did not start"])[-1]
    line = line.removeprefix("qemu-storage-daemon: ")
    return f"QEMU cannot open {path}: {line}"
