"""Images on network shares: `rescue image` to ssh:// and smb:// URLs on real servers (sshd,
Samba's smbd) on this machine, read back by restore, verify, info and ls from the same URLs;
a server killed mid-job and started again; the password never written down."""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.commands.shares import run_on_shares
from rescue.errors import ExitCode
from rescue.stores.mount import ShareError, ShareMount, mounted, probe
from rescue.stores.url import parse
from tests.fixtures.cli import (
    CLI_ENV,
    REPO_ROOT,
    assert_clean_failure,
    rescue,
    rescue_process,
    run,
)
from tests.fixtures.loop import loop_device
from tests.fixtures.shares import (
    SMB_PASSWORD,
    Server,
    SshServer,
    free_port,
    smb_server,
    ssh_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

SLOW_SOURCE = "sim:size=40M,seed=7,rate=8M"  # five seconds of imaging: time to pull the plug


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    work = tmp_path_factory.mktemp("servers")
    started: dict[str, Server] = {}
    try:
        started["ssh"] = ssh_server(work / "ssh")
        started["smb"] = smb_server(work / "smb")
        yield started
    finally:
        for server in started.values():
            server.kill()


@pytest.fixture
def share_env(servers: dict[str, Server], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    """The variables a script sets for the shares; the local map copies under tmp_path."""
    ssh = servers["ssh"]
    assert isinstance(ssh, SshServer)
    monkeypatch.setenv("RESCUE_SSH_OPTS", ssh.ssh_opts)
    monkeypatch.setenv("RESCUE_SMB_PASSWORD", SMB_PASSWORD)
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


def _ext4_disk(tmp_path: Path) -> Path:
    """A 64 MiB ext4 file system with files of random bytes, built without mounting it."""
    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    for number in range(4):
        (tree / "docs" / f"file{number}.bin").write_bytes(os.urandom(3 << 20))
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    os.truncate(disk, 64 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", tree, disk)
    return disk


def _no_share_mounts() -> bool:
    return "rescue-share-" not in Path("/proc/self/mounts").read_text()


@pytest.mark.parametrize("scheme", ["ssh", "smb"])
def test_image_to_a_share_equals_a_local_image_and_reads_back(
        scheme: str, servers: dict[str, Server], share_env: Path, tmp_path: Path) -> None:
    server = servers[scheme]
    url, remote = server.place(f"disk-{scheme}.qcow2")
    local = tmp_path / "local.qcow2"
    with loop_device(str(_ext4_disk(tmp_path))) as device:
        imaged = rescue("image", device, url)
        assert imaged.returncode == ExitCode.OK, imaged.stderr
        assert rescue("image", device, local).returncode == ExitCode.OK
    run("qemu-img", "compare", local, remote)
    assert Path(f"{remote}.map").read_text().splitlines()[-1].endswith("+")  # beside the image
    assert list((share_env / "rescue" / "maps").glob("*.map"))  # and kept here
    info = rescue("info", url)
    assert info.returncode == ExitCode.OK, info.stderr
    assert f"image:       {url} (qcow2)" in info.stdout  # named as given, not by a mount point
    verified = rescue("verify", url)
    assert verified.returncode == ExitCode.OK, verified.stdout + verified.stderr
    listed = rescue("ls", url, "/docs")
    assert listed.returncode == ExitCode.OK, listed.stderr
    assert all(f"file{number}.bin" in listed.stdout for number in range(4))
    target = tmp_path / "target.img"
    target.write_bytes(b"")
    os.truncate(target, 64 << 20)
    with loop_device(str(target)) as disk:
        restored = rescue("restore", url, disk, "--yes")
        assert restored.returncode == ExitCode.OK, restored.stderr
    run("qemu-img", "compare", "-f", "raw", target, local)
    assert _no_share_mounts()


@pytest.mark.parametrize("scheme", ["ssh", "smb"])
def test_a_server_killed_mid_image_is_waited_for_and_the_image_completes(
        scheme: str, servers: dict[str, Server], share_env: Path, tmp_path: Path) -> None:
    server = servers[scheme]
    url, remote = server.place(f"killed-{scheme}.qcow2")
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1")
    _wait_for_growth(remote, 8 << 20)
    server.kill()
    time.sleep(3)
    server.start()
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == ExitCode.OK, stderr
    assert "share lost, reconnecting" in stderr
    local = tmp_path / "local.qcow2"
    assert rescue("image", SLOW_SOURCE.replace("rate=8M", "rate=0"), local).returncode == 0
    run("qemu-img", "compare", local, remote)
    assert rescue("verify", url).returncode == ExitCode.OK
    assert _no_share_mounts()


def test_a_share_that_stays_away_ends_with_exit_3_and_a_resumable_map(
        servers: dict[str, Server], share_env: Path, tmp_path: Path) -> None:
    server = servers["ssh"]
    url, remote = server.place("gone.qcow2")
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1",
                         "--reconnect-timeout", "2")
    _wait_for_growth(remote, 8 << 20)
    server.kill()
    try:
        _, stderr = job.communicate(timeout=120)
    finally:
        server.start()
    assert job.returncode == ExitCode.DESTINATION, stderr
    assert "share lost and not back within 2 s" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    resumed = rescue("image", SLOW_SOURCE, url)
    assert resumed.returncode == ExitCode.OK, resumed.stderr
    assert "will resume" in resumed.stdout
    assert _no_share_mounts()


def _wait_for_growth(path: Path, size: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= size:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not reach {size} bytes")


def test_the_smb_password_is_written_nowhere(servers: dict[str, Server], share_env: Path,
                                              tmp_path: Path) -> None:
    server = servers["smb"]
    url, _ = server.place("secret.qcow2")
    logs = tmp_path / "logs"
    logs.mkdir()
    imaged = rescue("image", "sim:size=4M,seed=3,bad=1M+64k", url, "--log-reads",
                    logs / "reads.log", "--log-events", logs / "events.log", "--json")
    assert imaged.returncode == ExitCode.UNREADABLE, imaged.stderr
    assert SMB_PASSWORD not in imaged.stdout + imaged.stderr
    written = [path for root in (server.root, share_env, logs)
               for path in root.rglob("*") if path.is_file()]
    assert any(path.name == "secret.qcow2" for path in written)
    assert any(path.name == "secret.qcow2.map" for path in written)
    secret = SMB_PASSWORD.encode()
    assert [path for path in written if secret in path.read_bytes()] == []


def test_a_wrong_smb_password_is_one_line(servers: dict[str, Server], share_env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESCUE_SMB_PASSWORD", "not-the-password")
    result = rescue("info", servers["smb"].place("nothing.qcow2")[0])
    assert_clean_failure(result, ExitCode.USAGE,
                         r"cannot reach smb://nobody@127\.0\.0\.1:\d+/data: ")
    assert _no_share_mounts()


@pytest.mark.parametrize(("where", "said"), [
    ("127.0.0.1:{port}", r"ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused"),
    ("no-such-host.invalid", r"ssh: Could not resolve hostname no-such-host\.invalid"),
])
def test_an_ssh_share_that_cannot_be_mounted_says_why(share_env: Path, where: str,
                                                      said: str) -> None:
    """sshfs alone says "read: Connection reset by peer" whatever went wrong."""
    url = f"ssh://{where.format(port=free_port())}/srv/disk.qcow2"
    result = rescue("info", url)
    assert_clean_failure(result, ExitCode.USAGE, r"cannot mount ssh://\S+/srv: " + said)
    assert _no_share_mounts()


def test_nfs_without_a_kernel_client_says_what_is_missing(share_env: Path) -> None:
    modprobe = shutil.which("modprobe")
    has_client = "\tnfs\n" in Path("/proc/filesystems").read_text() or (
        modprobe is not None and subprocess.run([modprobe, "-n", "nfs"],
                                                capture_output=True).returncode == 0)
    if has_client and shutil.which("mount.nfs"):
        pytest.skip("this machine can mount NFS")
    result = rescue("info", "nfs://127.0.0.1/export/disk.qcow2")
    assert_clean_failure(result, ExitCode.USAGE,
                         r"cannot mount nfs://127\.0\.0\.1/export: (mount\.nfs is missing|"
                         r"this kernel has no NFS client)")


def test_interrupting_a_job_on_a_share_unmounts_it(servers: dict[str, Server],
                                                   share_env: Path) -> None:
    url, remote = servers["ssh"].place("interrupted.qcow2")
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1")
    _wait_for_growth(remote, 4 << 20)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == ExitCode.INTERRUPTED, stderr
    assert _no_share_mounts()
    assert Path(f"{remote}.map").exists()  # the map went beside the image before the unmount


@pytest.mark.parametrize("scheme", ["ssh", "smb"])
def test_probe_answers_for_a_folder_and_refuses_a_missing_one(
        scheme: str, servers: dict[str, Server], share_env: Path) -> None:
    folder, _ = servers[scheme].place("")
    found = probe(parse(folder.rstrip("/"), folder=True))
    served = os.statvfs(servers[scheme].root)  # the served folder's file system, seen here
    assert found.space is not None
    free, total = found.space
    assert total == served.f_blocks * served.f_frsize
    assert abs(free - served.f_bavail * served.f_frsize) < 256 << 20  # others write meanwhile
    missing = r"(no such folder on the share|No such file or directory)$"
    with pytest.raises(ShareError, match=missing):
        probe(parse(f"{folder}no-such-folder", folder=True))
    assert _no_share_mounts()


def test_a_streamed_image_to_smb_equals_a_local_one(servers: dict[str, Server],
                                                     share_env: Path, tmp_path: Path) -> None:
    url, remote = servers["smb"].place("streamed.img.zst")
    source = "sim:size=8M,seed=2,bad=3M+64k"
    assert rescue("image", source, url).returncode == ExitCode.UNREADABLE
    assert rescue("image", source, tmp_path / "local.img.zst").returncode == ExitCode.UNREADABLE
    assert rescue("verify", url).returncode == ExitCode.OK
    decoded = [subprocess.run(["zstd", "-dc", image], capture_output=True, check=True).stdout
               for image in (remote, tmp_path / "local.img.zst")]
    assert len(decoded[0]) == 8 << 20 and decoded[0] == decoded[1]


def test_the_smb_password_is_asked_on_the_terminal_unechoed(
        servers: dict[str, Server], share_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = servers["smb"].place("asked.img")
    assert rescue("image", "sim:size=1M,seed=5", url).returncode == ExitCode.OK
    monkeypatch.delenv("RESCUE_SMB_PASSWORD")
    screen, code = _on_terminal(["info", url], answer=SMB_PASSWORD, after="password for")
    assert code == ExitCode.OK, screen
    assert "password for nobody on 127.0.0.1/data" in screen and "raw" in screen
    assert SMB_PASSWORD not in screen


def _on_terminal(args: list[str], answer: str, after: str) -> tuple[str, int]:
    """Run the CLI on a terminal of its own, type `answer` once `after` is shown; all it
    showed, and its exit code."""
    controller, terminal = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    job = subprocess.Popen([sys.executable, "-m", "rescue", *args], cwd=REPO_ROOT,
                           env={**os.environ, **CLI_ENV}, stdin=terminal, stdout=terminal,
                           stderr=terminal, start_new_session=True, preexec_fn=take_terminal)
    os.close(terminal)
    shown, answered = b"", False
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            job.kill()
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the program
            break
        if not chunk:
            break
        shown += chunk
        if not answered and after.encode() in shown:
            os.write(controller, f"{answer}\n".encode())
            answered = True
    os.close(controller)
    return shown.decode(errors="replace"), job.wait(timeout=60)


def test_the_map_beside_the_image_follows_the_job_while_it_runs(
        servers: dict[str, Server], share_env: Path) -> None:
    url, remote = servers["ssh"].place("followed.qcow2")
    beside = Path(f"{remote}.map")
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1")
    try:
        deadline = time.monotonic() + 30
        while not beside.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert beside.exists() and job.poll() is None  # a stick that reboots finds it there
    finally:
        _, stderr = job.communicate(timeout=120)
    assert job.returncode == ExitCode.OK, stderr
    assert beside.read_text().splitlines()[-1].endswith("+")  # and the final one after


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_outside_a_job_still_unmounts_the_share(
        sig: signal.Signals, servers: dict[str, Server], share_env: Path) -> None:
    url, _ = servers["ssh"].place("signalled.img")
    mounted_then: list[bool] = []

    def signalled(args: argparse.Namespace) -> int:
        mounted_then.append(not _no_share_mounts())
        os.kill(os.getpid(), sig)
        time.sleep(10)  # interrupted long before
        return 0

    args = argparse.Namespace(command="info", image=url)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        run_on_shares(args, signalled)
    assert mounted_then == [True] and _no_share_mounts()
    assert signal.getsignal(sig) == before  # the command's handler is gone with it


def _mounts_under(folder: Path) -> list[str]:
    """Mount points below `folder`, as /proc/self/mountinfo lists them."""
    points = (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return [point for point in points if point.startswith(f"{folder}/")]


def _until_nothing_left_in(folder: Path, timeout: float = 15.0) -> list[str]:
    """What is still mounted or kept in `folder` once it emptied or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        left = _mounts_under(folder) + [entry.name for entry in folder.iterdir()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of the test's own, where rescue makes its private mount points:
    other jobs on this machine mount shares in /run at the same time."""
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


def _killed_mid_image(url: str, remote: Path, runtime: Path) -> int:
    """Start `rescue image` onto `url`, SIGKILL it once the image grows; its pid."""
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1")
    _wait_for_growth(remote, 8 << 20)
    assert _mounts_under(runtime)
    job.kill()
    job.communicate(timeout=30)
    return job.pid


def _rerun_resumes_to_a_local_image(url: str, remote: Path, tmp_path: Path) -> None:
    resumed = rescue("image", SLOW_SOURCE, url)
    assert resumed.returncode == ExitCode.OK, resumed.stderr
    assert "will resume" in resumed.stdout
    local = tmp_path / "local.qcow2"
    assert rescue("image", SLOW_SOURCE.replace("rate=8M", "rate=0"), local).returncode == 0
    run("qemu-img", "compare", local, remote)


@pytest.mark.parametrize("scheme", ["ssh", "smb"])
def test_a_job_killed_with_sigkill_leaves_no_mount_behind(
        scheme: str, servers: dict[str, Server], share_env: Path, runtime: Path,
        tmp_path: Path) -> None:
    url, remote = servers[scheme].place(f"sigkill-{scheme}.qcow2")
    _killed_mid_image(url, remote, runtime)
    # at once, not at the next mount; nor its private folder (smb's password file)
    assert _until_nothing_left_in(runtime) == []
    _rerun_resumes_to_a_local_image(url, remote, tmp_path)
    assert _mounts_under(runtime) == [] and list(runtime.iterdir()) == []


def _guards_of(runtime: Path) -> list[int]:
    """The processes whose command line names a folder in `runtime` and that are no FUSE
    helper: what rescue leaves watching its mounts."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and any(str(runtime).encode() in arg for arg in argv) \
                and not any(arg.endswith((b"sshfs", b"smbnetfs")) for arg in argv):
            found.append(int(entry.name))
    return found


def test_a_mount_whose_owner_and_guard_were_killed_is_swept_by_the_next_mount(
        servers: dict[str, Server], share_env: Path, runtime: Path, tmp_path: Path) -> None:
    """Killed all at once (an OOM kill of the whole group, a container stopped), nothing
    unmounted: the next share mount takes away what a dead rescue left, and only that."""
    url, remote = servers["ssh"].place("swept.qcow2")
    job = rescue_process("image", SLOW_SOURCE, url, "--checkpoint", "1")
    _wait_for_growth(remote, 8 << 20)
    guards = _guards_of(runtime)
    assert guards
    for pid in guards:
        os.kill(pid, signal.SIGKILL)
    job.kill()
    job.communicate(timeout=30)
    time.sleep(1)
    assert _mounts_under(runtime)  # the FUSE helper still serves it: nobody cleaned up
    alive = servers["ssh"].place("alive.img")[0]
    with mounted(parse(alive)) as other:  # a live one of this process is not swept
        assert len(_mounts_under(runtime)) == 1
        assert rescue("info", url).returncode == ExitCode.OK
        assert _mounts_under(runtime) == [other.path]
    _rerun_resumes_to_a_local_image(url, remote, tmp_path)
    assert _mounts_under(runtime) == [] and list(runtime.iterdir()) == []


def test_a_share_closed_twice_is_let_go_once(servers: dict[str, Server], share_env: Path,
                                             runtime: Path) -> None:
    """The console and a job's end may both let go of one share."""
    share = ShareMount(parse(servers["ssh"].place("twice.img")[0]).parent)
    assert _mounts_under(runtime)
    share.close()
    share.close()
    assert _until_nothing_left_in(runtime) == []
