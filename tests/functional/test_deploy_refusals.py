"""`rescue deploy` refusing what it must never do, before any network is touched: a receiver
never overwrites the running system, a mounted disk or a file, and never without a typed
confirmation or --yes; bad options and a missing udpcast are one `rescue:` line each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from rescue.engine import consent
from tests.fixtures.cli import CLI_ENV, REPO_ROOT, assert_clean_failure, rescue
from tests.fixtures.restore import MIB, digest, mounted_here, run, target

pytestmark = pytest.mark.root


def test_a_mounted_disk_is_refused(tmp_path: Path) -> None:
    with ExitStack() as stack:
        device = target(stack, tmp_path, "mounted", 16 * MIB)
        # no lazy init: ext4 would zero its inode tables in the background while mounted
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
        stack.enter_context(mounted_here(device))
        before = digest(device)
        result = rescue("deploy", "receive", device, "--yes")
        assert_clean_failure(result, 5, "mounted")
        assert digest(device) == before


def test_the_running_system_and_files_are_refused(tmp_path: Path) -> None:
    root = run("findmnt", "-nvo", "SOURCE", "/").strip()
    afile = tmp_path / "disk.img"
    afile.write_bytes(bytes(MIB))
    for refused in [str(afile), *([root] if root.startswith("/dev/") else [])]:
        assert_clean_failure(rescue("deploy", "receive", refused, "--yes"), 5, "")
    assert afile.read_bytes() == bytes(MIB)


def test_without_a_terminal_the_receiver_asks_for_yes(tmp_path: Path) -> None:
    with ExitStack() as stack:
        device = target(stack, tmp_path, "unasked", 16 * MIB, fill=b"keep ")
        result = rescue("deploy", "receive", device)
        assert_clean_failure(result, 5, "pass --yes")
        assert consent.NO_TERMINAL in result.stderr
        with open(device, "rb") as disk:
            assert disk.read(5) == b"keep "


@pytest.mark.parametrize(("args", "pattern"), [
    (["send", "/nonexistent.qcow2"], "does not exist"),
    (["send", "IMAGE", "--min-receivers", "0"], "--min-receivers must be at least 1"),
    (["send", "IMAGE", "--port", "80"], "--port must be between"),
    (["send", "IMAGE", "--max-wait", "-3"], "positive number of seconds"),
    (["send", "IMAGE", "--report-timeout", "nan"], "positive number of seconds"),
    (["receive", "/dev/null", "--port", "70000"], "--port must be between"),
])
def test_bad_options_are_one_line(tmp_path: Path, args: list[str], pattern: str) -> None:
    image = tmp_path / "tiny.img"
    image.write_bytes(bytes(MIB))
    result = rescue("deploy", *[str(image) if a == "IMAGE" else a for a in args])
    assert_clean_failure(result, 2, pattern)


def test_without_udpcast_the_sender_says_what_to_install(tmp_path: Path) -> None:
    image = tmp_path / "tiny.img"
    image.write_bytes(bytes(MIB))
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("b3sum", "zstd"):  # anything but udpcast
        if found := shutil.which(tool):
            os.symlink(found, bare / tool)
    result = subprocess.run([sys.executable, "-m", "rescue", "deploy", "send", str(image)],
                            cwd=REPO_ROOT, env={**os.environ, **CLI_ENV, "PATH": str(bare)},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    assert_clean_failure(result, 2, "udp-sender is not installed")
