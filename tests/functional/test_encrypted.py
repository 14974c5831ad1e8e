"""qcow2 images encrypted with QEMU's LUKS: rescue makes them (`image --encrypt`) and reads
them (restore, ls, info) given the passphrase, and QEMU is the judge of both directions. The
passphrase is in no file rescue writes and in no process's argument list during a job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rescue.errors import ExitCode
from tests.fixtures.cli import (
    CLI_ENV,
    REPO_ROOT,
    assert_clean_failure,
    qemu_img_keyed,
    rescue,
    run,
)
from tests.fixtures.loop import loop_device

MIB = 1 << 20
PASSPHRASE = "tr0ub4dor and 3 horses"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("enc-disk")
    files = folder / "files"
    files.mkdir()
    (files / "secret-plans.txt").write_text("attack at dawn\n" * 1000)
    (files / "random.bin").write_bytes(os.urandom(2 * MIB))
    image = folder / "disk.img"
    run("mkfs.ext4", "-q", "-F", "-d", files, image, "16M")
    return image


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The passphrase as QEMU's secret object reads it: the bytes alone."""
    path = tmp_path_factory.mktemp("secret") / "passphrase"
    path.write_text(PASSPHRASE)
    path.chmod(0o600)
    return path


def command_lines() -> list[bytes]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read())
        except OSError:
            continue
    return lines


def decrypted_by_qemu(image: Path, secret: Path, out: Path) -> bytes:
    run("qemu-img", "convert", "--object", f"secret,id=s,file={secret}", "--image-opts",
        f"driver=qcow2,file.filename={image},encrypt.key-secret=s", "-O", "raw", out)
    return out.read_bytes()


@pytest.mark.slow
def test_an_encrypted_image_is_read_by_qemu_and_leaks_no_passphrase(
        tmp_path: Path, disk: Path, secret: Path) -> None:
    image = tmp_path / "out" / "disk.qcow2"
    image.parent.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "rescue", "image", str(disk), str(image), "--encrypt",
         "--passphrase-file", str(secret)], cwd=REPO_ROOT, env={**os.environ, **CLI_ENV},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[bytes] = []

    def watch() -> None:
        while job.poll() is None:
            seen.extend(line for line in command_lines() if b"qemu" in line)
            if any(PASSPHRASE.encode() in line for line in command_lines()):
                seen.append(b"LEAK")
    watcher = threading.Thread(target=watch)
    watcher.start()
    _, err = job.communicate(timeout=300)
    watcher.join()
    assert job.returncode == 0, err
    assert any(b"qemu-storage-daemon" in line for line in seen)  # the watch saw the job
    assert b"LEAK" not in seen
    for written in image.parent.iterdir():
        data = written.read_bytes()
        assert PASSPHRASE.encode() not in data, written
        assert b"attack at dawn" not in data or written.suffix != ".qcow2", written
    assert decrypted_by_qemu(image, secret, tmp_path / "back.img") == disk.read_bytes()
    info = rescue("info", image, "--passphrase-file", secret)
    assert info.returncode == 0 and "encrypted (LUKS)" in info.stdout, info.stderr
    assert rescue("verify", image, "--passphrase-file", secret).returncode == 0


@pytest.fixture(scope="module")
def qemu_encrypted(disk: Path, secret: Path) -> Path:
    image = disk.with_name("qemu-encrypted.qcow2")
    qemu_img_keyed("convert", "--object", f"secret,id=s,file={secret}", "-O", "qcow2", "-o",
                   "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=50", disk, image)
    return image


@pytest.mark.slow
@pytest.mark.root
def test_a_qemu_encrypted_qcow2_restores_byte_identical(
        tmp_path: Path, disk: Path, qemu_encrypted: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    target = tmp_path / "target.img"
    target.write_bytes(b"\x5a" * disk.stat().st_size)
    monkeypatch.setenv("RESCUE_PASSPHRASE", PASSPHRASE)
    with loop_device(str(target)) as device:
        done = rescue("restore", qemu_encrypted, device, "--yes")
        assert done.returncode == 0, done.stderr
        with open(device, "rb") as f:
            assert f.read() == disk.read_bytes()
    listed = rescue("ls", qemu_encrypted, "/")
    assert listed.returncode == 0 and "secret-plans.txt" in listed.stdout, listed.stderr


def test_a_wrong_or_missing_passphrase_is_one_line(tmp_path: Path, qemu_encrypted: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    for command in ("info", "ls"):
        assert_clean_failure(rescue(command, qemu_encrypted, "--passphrase-file", wrong),
                             ExitCode.USAGE, r"wrong passphrase for the encrypted image")
        assert_clean_failure(rescue(command, qemu_encrypted), ExitCode.USAGE,
                             r"is encrypted; give its passphrase with --passphrase-file")
    monkeypatch.setenv("RESCUE_PASSPHRASE", "also wrong")
    assert_clean_failure(rescue("info", qemu_encrypted), ExitCode.USAGE,
                         r"wrong passphrase")


def test_encrypt_needs_a_qcow2_name(tmp_path: Path, disk: Path, secret: Path) -> None:
    assert_clean_failure(rescue("image", disk, tmp_path / "out.img", "--encrypt",
                                "--passphrase-file", secret), ExitCode.USAGE,
                         r"--encrypt makes an encrypted qcow2 image, not raw")


def test_encrypt_is_never_dropped_for_an_incremental_image(tmp_path: Path, disk: Path,
                                                           secret: Path) -> None:
    """An overlay is written by rescue's own unencrypted qcow2 writer: asked for both, the
    command refuses rather than write the disk's changes in the clear."""
    base = tmp_path / "base.qcow2"
    assert rescue("image", disk, base).returncode == 0
    assert_clean_failure(rescue("image", disk, tmp_path / "new.qcow2", "--base", base,
                                "--encrypt", "--passphrase-file", secret), ExitCode.USAGE,
                         r"--encrypt and --base cannot go together")
    assert not (tmp_path / "new.qcow2").exists()


def typed(args: list[str], answers: list[tuple[str, str]]) -> tuple[str, int]:
    """The CLI on a terminal of its own, each answer typed once its prompt is shown; what the
    terminal showed, and the exit code."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "rescue", *args], cwd=str(REPO_ROOT),
                          env={**os.environ, **CLI_ENV}, timeout=120)
    for prompt, answer in answers:
        child.expect_exact(prompt)
        child.sendline(answer)
    shown = child.before or b""
    child.expect(pexpect.EOF)
    child.close()
    return (shown + (child.before or b"")).decode(errors="replace"), child.exitstatus or 0


@pytest.mark.slow
def test_the_passphrase_is_asked_twice_without_echo(tmp_path: Path, disk: Path,
                                                    secret: Path) -> None:
    image = tmp_path / "typed.qcow2"
    args = ["image", str(disk), str(image), "--encrypt"]
    screen, code = typed(args, [("passphrase for", PASSPHRASE),
                                ("the same passphrase again", "something else")])
    assert code == ExitCode.USAGE and "the two passphrases differ" in screen, screen
    assert not image.exists()
    screen, code = typed(args, [("passphrase for", PASSPHRASE),
                                ("the same passphrase again", PASSPHRASE)])
    assert code == 0, screen
    assert PASSPHRASE not in screen  # no echo
    assert decrypted_by_qemu(image, secret, tmp_path / "back.img") == disk.read_bytes()


@pytest.mark.slow
def test_convert_encrypts_and_decrypts(tmp_path: Path, disk: Path, secret: Path,
                                       qemu_encrypted: Path) -> None:
    """A VHDX into an encrypted qcow2 (QEMU reads it back), and QEMU's encrypted qcow2 into
    a plain .img.zst that verifies against the source's BLAKE3."""
    vhdx = tmp_path / "disk.vhdx"
    run("qemu-img", "convert", "-O", "vhdx", disk, vhdx)
    encrypted = tmp_path / "encrypted.qcow2"
    done = rescue("convert", vhdx, encrypted, "--encrypt", "--passphrase-file", secret)
    assert done.returncode == 0, done.stderr
    assert decrypted_by_qemu(encrypted, secret, tmp_path / "back.img") == disk.read_bytes()
    plain = tmp_path / "plain.img.zst"
    done = rescue("convert", qemu_encrypted, plain, "--passphrase-file", secret)
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["zstd", "-dc", plain], capture_output=True,
                          check=True).stdout == disk.read_bytes()
    assert "BLAKE3 verified" in rescue("verify", plain).stdout


@pytest.mark.slow
def test_an_encrypted_rescue_killed_midway_resumes(tmp_path: Path, secret: Path) -> None:
    """kill -9 mid-job: QEMU goes with rescue, and the same command finishes the image."""
    image = tmp_path / "killed.qcow2"
    source = "sim:size=32M,seed=4"
    job = subprocess.Popen(
        [sys.executable, "-m", "rescue", "image", f"{source},rate=2M", str(image), "--encrypt",
         "--passphrase-file", str(secret), "--checkpoint", "1"], cwd=REPO_ROOT,
        env={**os.environ, **CLI_ENV}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    mapfile = Path(f"{image}.map")
    deadline = time.monotonic() + 120
    while (not mapfile.exists() or "+" not in mapfile.read_text()) and job.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job.kill()
    job.wait()
    deadline = time.monotonic() + 30
    while any(str(image).encode() in line for line in command_lines()):
        assert time.monotonic() < deadline, "qemu-storage-daemon outlived rescue"
        time.sleep(0.1)
    done = rescue("image", source, image, "--encrypt", "--passphrase-file", secret)
    assert done.returncode == 0 and "will resume" in done.stdout + done.stderr, done.stderr
    plain = tmp_path / "plain.img"
    assert rescue("image", source, plain).returncode == 0
    assert decrypted_by_qemu(image, secret, tmp_path / "back.img") == plain.read_bytes()


@pytest.mark.slow
@pytest.mark.root
def test_mount_serves_an_encrypted_image_given_its_passphrase_through_a_pipe(
        tmp_path: Path, disk: Path, secret: Path, qemu_encrypted: Path) -> None:
    where = tmp_path / "mnt"
    where.mkdir()
    done = rescue("mount", qemu_encrypted, where, "--passphrase-file", secret)
    assert done.returncode == 0, done.stderr
    try:
        assert (where / "fs" / "secret-plans.txt").read_text() == "attack at dawn\n" * 1000
        assert not any(PASSPHRASE.encode() in line for line in command_lines())
    finally:
        assert rescue("umount", where).returncode == 0
    deadline = time.monotonic() + 30
    while any(str(qemu_encrypted).encode() in line for line in command_lines()):
        assert time.monotonic() < deadline, "qemu-storage-daemon outlived the mount"
        time.sleep(0.1)


@pytest.mark.slow
def test_force_makes_an_encrypted_image_anew(tmp_path: Path, disk: Path, secret: Path) -> None:
    """An encrypted image whose map is gone is refused, and made anew with --force."""
    image = tmp_path / "again.qcow2"
    args = ["image", disk, image, "--encrypt", "--passphrase-file", secret]
    assert rescue(*args).returncode == 0
    Path(f"{image}.map").unlink()
    assert_clean_failure(rescue(*args), ExitCode.USAGE, r"has no mapfile; use --force")
    done = rescue(*args, "--force")
    assert done.returncode == 0, done.stderr
    assert decrypted_by_qemu(image, secret, tmp_path / "back.img") == disk.read_bytes()
    assert not list(tmp_path.glob("*.creating"))


def test_qemus_spurious_timing_failure_is_tried_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU's key-derivation timing can fail once on a busy machine (seen here); it cannot be
    caused on demand, so a qemu-img in front of the real one fails the first run that way."""
    from rescue.formats import qemuexport

    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True,
                          text=True, check=True).stdout.strip()
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "qemu-img").write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {tmp_path}/failed ]; then touch {tmp_path}/failed; echo \"qemu-img: $7: "
        "Unable to get accurate CPU usage\" >&2; exit 1; fi\n"
        f"exec {real} \"$@\"\n")
    (tools / "qemu-img").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    image = tmp_path / "new.qcow2"
    qemuexport._create_encrypted(str(image), 1 << 20, b"correct horse")
    assert (tmp_path / "failed").exists() and qemuexport.qcow2_encrypted(str(image))
