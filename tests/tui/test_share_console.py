"""Images on a network share from the console, against a real sshd and smbd on 127.0.0.1: the
image wizard's share fields, "Test connection" (the room there, or one line saying why not), an
imaging job to ssh:// that equals a local image, survives the server going away mid-job and
leaves nothing mounted, smb's password written nowhere, and an image opened from the picker."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from rescue.engine.rescue import Outcome
from rescue.formats import mapfile
from rescue.rangemap import FINISHED
from rescue.tui.app import RescueApp, make_home_app
from rescue.tui.jobs import RunningJob, RunningRestore
from rescue.tui.screens.browser import ImageBrowser
from rescue.tui.screens.disks import DisksScreen
from rescue.tui.screens.image_picker import ImagePicker
from rescue.tui.screens.image_wizard import ImageWizard
from rescue.tui.screens.job import JobScreen
from rescue.tui.screens.restore import RestoreScreen
from rescue.tui.screens.restore_wizard import RestoreWizard
from rescue.tui.screens.share_dialog import ShareDialog
from rescue.tui.widgets.sector_map import MapLook
from tests.fixtures.cli import REPO_ROOT, rescue, run
from tests.fixtures.loop import loop_device
from tests.fixtures.shares import (
    SMB_PASSWORD,
    SMB_USER,
    SshServer,
    free_port,
    smb_server,
    ssh_server,
)
from tests.fixtures.tui import drive, make_file, wait_until
from tests.tui.test_wizards import set_field, shown

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(240)]

SOURCE = "sim:size=16M,seed=5"
SLOW_SOURCE = "sim:size=40M,seed=7,rate=8M"  # five seconds of imaging: time to pull the plug


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = ssh_server(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def ssh_env(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshServer:
    """The test key for the mounts; the local copies of maps under tmp_path."""
    monkeypatch.setenv("RESCUE_SSH_OPTS", sshd.ssh_opts)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return sshd


def no_share_mounts() -> bool:
    return "rescue-share-" not in Path("/proc/self/mounts").read_text()


def status(app: RescueApp) -> str:
    return str(app.screen.query_one("#share-status", Static).content)


async def share_step(pilot: Pilot, source: str, address: str, path: str) -> ImageWizard:
    """The image wizard at its destination step, the share chosen and its fields filled."""
    await pilot.press("i")
    wizard = pilot.app.screen
    assert isinstance(wizard, ImageWizard)
    await set_field(pilot, "#source-path", source)
    await pilot.press("enter")
    assert wizard.step_id == "dest"
    wizard.query_one("#dest-where", Select).value = "share"
    await pilot.pause()
    await set_field(pilot, "#share-address", address)
    await set_field(pilot, "#share-user", "root")
    await set_field(pilot, "#share-path", path)
    return wizard


async def start_then_kill_the_server(pilot: Pilot, server: SshServer,
                                     remote: Path) -> RunningJob:
    """Start the job from the wizard's summary and kill the server once 8 MiB are on it."""
    await pilot.press("enter")
    await wait_until(pilot, lambda: bool(pilot.app.jobs))
    running = pilot.app.jobs[0]
    assert isinstance(running, RunningJob)
    await wait_until(pilot, lambda: remote.exists() and remote.stat().st_blocks * 512
                     > 8 << 20, timeout=60)
    server.kill()
    return running


def test_test_connection_reports_the_room_on_the_share(ssh_env: SshServer) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))

    async def scenario(pilot: Pilot) -> None:
        await share_step(pilot, SOURCE, f"127.0.0.1:{ssh_env.port}",
                         f"{ssh_env.root}/room.img")
        await pilot.click("#share-test")
        await wait_until(pilot, lambda: "connected" in status(app))
        assert "free of" in status(app)
        assert "an image of 16 MiB fits" in status(app)
        assert "connected:" in shown(app)  # on the screen, at 80x24
        assert no_share_mounts()  # the test unmounted what it mounted

    drive(app, scenario)


@pytest.mark.parametrize("address", ["127.0.0.1:{closed}", "no-such-host.invalid"])
def test_a_wrong_address_shows_one_error_line(ssh_env: SshServer, address: str) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))

    async def scenario(pilot: Pilot) -> None:
        await share_step(pilot, SOURCE, address.format(closed=free_port()), "/tmp/x.img")
        await pilot.click("#share-test")
        await wait_until(pilot, lambda: status(app).startswith("cannot mount"))
        line = status(app)
        assert "\n" not in line and "Traceback" not in line
        assert "ssh://root@" in line
        assert no_share_mounts()
        await pilot.press("ctrl+n", "ctrl+n", "enter")  # started anyway: refused in one line
        problem = app.screen.query_one("#problem", Static)
        await wait_until(pilot, lambda: str(problem.content).startswith("cannot mount"))
        assert isinstance(app.screen, ImageWizard) and not app.jobs
        assert no_share_mounts()

    drive(app, scenario)


def test_an_image_job_to_ssh_equals_a_local_image(ssh_env: SshServer, tmp_path: Path) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    url, remote = ssh_env.place("console.img")

    async def scenario(pilot: Pilot) -> None:
        wizard = await share_step(pilot, SOURCE, f"127.0.0.1:{ssh_env.port}", str(remote))
        await pilot.press("enter")
        assert wizard.step_id == "options", shown(app)
        await pilot.press("ctrl+n")
        assert wizard.step_id == "summary"
        command = wizard.choices.request().command_line
        assert command == f"rescue image {SOURCE} {url} --format raw"
        assert f"same as: rescue image {SOURCE} ssh://root@127.0.0.1" in shown(app)
        await pilot.press("enter")  # the share is mounted in a thread, then the job shows
        await wait_until(pilot, lambda: isinstance(app.screen, JobScreen))
        running = app.jobs[0]
        assert isinstance(running, RunningJob)
        await wait_until(pilot, lambda: running.done, timeout=120)
        assert running.outcome is Outcome.RESCUED, running.log

    drive(app, scenario)
    local = tmp_path / "local.img"
    assert rescue("image", SOURCE, local).returncode == 0
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", local, remote)
    assert Path(f"{remote}.map").read_text().splitlines()[-1].endswith("+")
    assert no_share_mounts()


@pytest.mark.parametrize("wrong", ["0", "-5", "", "2.5", "abc"])
def test_the_wait_for_a_lost_share_must_be_whole_seconds_above_zero(
        ssh_env: SshServer, wrong: str) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))

    async def scenario(pilot: Pilot) -> None:
        wizard = await share_step(pilot, SOURCE, f"127.0.0.1:{ssh_env.port}", "/tmp/w.img")
        assert wizard.query_one("#share-reconnect", Input).value == "300"  # the CLI's default
        await set_field(pilot, "#share-reconnect", wrong)
        await pilot.press("ctrl+n")
        assert wizard.step_id == "dest"
        problem = str(wizard.query_one("#problem", Static).content)
        assert problem.startswith("wait if lost: a whole number of seconds above 0")
        assert "wait if lost: a whole number" in shown(app)

    drive(app, scenario)


def test_the_wait_for_a_lost_share_reaches_the_summary_the_command_and_the_job(
        ssh_env: SshServer, tmp_path: Path) -> None:
    """2 s typed: shown, in the repeat command, and the job gives up after 2 s as
    `rescue image --reconnect-timeout 2` does, its map kept for that command."""
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    url, remote = ssh_env.place("impatient.img")

    async def scenario(pilot: Pilot) -> None:
        wizard = await share_step(pilot, SLOW_SOURCE, f"127.0.0.1:{ssh_env.port}", str(remote))
        await set_field(pilot, "#share-reconnect", "2", typed=True)
        await pilot.press("ctrl+n", "ctrl+n")
        assert wizard.step_id == "summary", shown(app)
        assert "a lost share waited for up to 2 s" in shown(app)
        command = wizard.choices.request().command_line
        assert command == f"rescue image {SLOW_SOURCE} {url} --format raw --reconnect-timeout 2"
        assert "--reconnect-timeout 2" in shown(app)
        running = await start_then_kill_the_server(pilot, ssh_env, remote)
        await wait_until(pilot, lambda: running.done, timeout=60)
        assert any("share lost and not back within 2 s" in line for line in running.log), \
            running.log

    try:
        drive(app, scenario)
    finally:
        if ssh_env.process is None:
            ssh_env.start()
    assert no_share_mounts()
    kept = list((tmp_path / "state" / "rescue" / "maps").glob("*.map"))
    assert len(kept) == 1  # the map the job kept here, which the same command takes up
    again = rescue("image", SLOW_SOURCE, url, "--reconnect-timeout", "2")
    assert again.returncode == 0, again.stderr
    assert str(kept[0]) in again.stdout.splitlines()[0]


def test_a_server_killed_mid_image_is_waited_for_in_the_job_screen(
        ssh_env: SshServer, tmp_path: Path) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    _, remote = ssh_env.place("killed.img")

    async def scenario(pilot: Pilot) -> None:
        await share_step(pilot, SLOW_SOURCE, f"127.0.0.1:{ssh_env.port}", str(remote))
        await pilot.press("enter")
        wizard = app.screen
        assert isinstance(wizard, ImageWizard)
        await pilot.press("ctrl+n")
        running = await start_then_kill_the_server(pilot, ssh_env, remote)
        await wait_until(pilot, lambda: any("share lost, reconnecting" in line
                                            for line in running.log), timeout=60)
        await wait_until(pilot, lambda: "share lost, reconnecting" in shown(app))
        time.sleep(1)
        ssh_env.start()
        await wait_until(pilot, lambda: running.done, timeout=180)
        assert running.outcome is Outcome.RESCUED, running.log

    try:
        drive(app, scenario)
    finally:
        if ssh_env.process is None:
            ssh_env.start()
    local = tmp_path / "local.img"
    assert rescue("image", SLOW_SOURCE.replace("rate=8M", "rate=0"), local).returncode == 0
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", local, remote)
    assert no_share_mounts()


def test_an_image_on_the_share_opens_from_the_picker_and_is_let_go_at_quit(
        ssh_env: SshServer) -> None:
    _, remote = ssh_env.place("browse.img")
    run("mkfs.ext4", "-q", "-F", make_file(str(remote), 8 << 20))
    app = make_home_app(MapLook(ascii=True, monochrome=True))

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("o")
        assert isinstance(app.screen, ImagePicker)
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ShareDialog)
        await set_field(pilot, "#share-address", f"127.0.0.1:{ssh_env.port}")
        await set_field(pilot, "#share-user", "root")
        await set_field(pilot, "#share-path", f"{remote}.missing")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "no such image" in status(app))
        await wait_until(pilot, no_share_mounts)  # the folder without it is let go again
        await set_field(pilot, "#share-path", str(remote))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ImageBrowser))
        browser = app.screen
        assert isinstance(browser, ImageBrowser)
        assert browser.image_path.endswith("/browse.img") and not no_share_mounts()
        await wait_until(pilot, lambda: bool(browser.file_tree.root.children))

    drive(app, scenario)
    assert no_share_mounts()  # the app let the share go as it quit


def test_the_smb_password_reaches_the_mount_and_is_written_nowhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("RESCUE_SMB_PASSWORD", raising=False)
    server = smb_server(tmp_path / "smbd")
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    url, remote = server.place("smb.img")

    async def scenario(pilot: Pilot) -> None:
        wizard = await share_step(pilot, SOURCE, f"127.0.0.1:{server.port}", "data/smb.img")
        wizard.query_one("#share-type", Select).value = "smb"
        await set_field(pilot, "#share-user", SMB_USER)
        await set_field(pilot, "#share-password", "wrong-password")
        await pilot.click("#share-test")
        await wait_until(pilot, lambda: status(app).startswith("cannot"))
        await set_field(pilot, "#share-password", SMB_PASSWORD)
        await pilot.click("#share-test")
        await wait_until(pilot, lambda: "connected" in status(app))
        assert SMB_PASSWORD not in shown(app)
        await pilot.press("ctrl+n", "ctrl+n")
        assert wizard.choices.request().command_line == (
            f"rescue image {SOURCE} {url} --format raw")
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(app.jobs))
        running = app.jobs[0]
        assert isinstance(running, RunningJob)
        await wait_until(pilot, lambda: running.done, timeout=120)
        assert running.outcome is Outcome.RESCUED, running.log
        assert not any(SMB_PASSWORD in line for line in running.log)

    try:
        drive(app, scenario)
    finally:
        server.kill()
    assert "RESCUE_SMB_PASSWORD" not in os.environ  # set only while a mount ran
    written = [remote, Path(f"{remote}.map"), *(tmp_path / "state").rglob("*")]
    assert all(SMB_PASSWORD.encode() not in path.read_bytes()
               for path in written if path.is_file())
    local = tmp_path / "local.img"
    assert rescue("image", SOURCE, local).returncode == 0
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", local, remote)
    assert no_share_mounts()


def test_a_restore_from_an_image_on_the_share_names_it_by_its_url(
        ssh_env: SshServer, tmp_path: Path) -> None:
    url, remote = ssh_env.place("restore.img")
    make_file(str(remote), 2 << 20, os.urandom(2 << 20))
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    with loop_device(make_file(str(tmp_path / "target.bin"), 4 << 20)) as target:

        async def scenario(pilot: Pilot) -> None:
            disks = app.screen
            assert isinstance(disks, DisksScreen)
            await wait_until(pilot, lambda: target in disks.paths())
            disks.table.move_cursor(row=disks.paths().index(target))
            await pilot.pause()
            await pilot.press("r")
            wizard = app.screen
            assert isinstance(wizard, RestoreWizard)
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: isinstance(app.screen, ImagePicker))
            await pilot.press("ctrl+s")
            await set_field(pilot, "#share-address", f"127.0.0.1:{ssh_env.port}")
            await set_field(pilot, "#share-user", "root")
            await set_field(pilot, "#share-path", str(remote))
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen is wizard and wizard.step_id == "targets")
            assert url in str(wizard.query_one("#image-info", Static).content)
            await pilot.press("ctrl+n", "ctrl+n")
            assert wizard.request is not None
            assert wizard.request.command_line.startswith(f"rescue restore {url} {target}")
            wizard.query_one("#confirm-fields Input").focus()
            await pilot.press(*os.path.basename(target), "enter")
            await wait_until(pilot, lambda: isinstance(app.screen, RestoreScreen))
            restoring = app.jobs[0]
            assert isinstance(restoring, RunningRestore)
            await wait_until(pilot, lambda: restoring.done, timeout=60)
            assert restoring.error is None, restoring.log
            assert f"started: {url} onto {target}" in restoring.log[0]

        drive(app, scenario)
        with open(target, "rb") as disk:
            assert disk.read(2 << 20) == remote.read_bytes()
    assert no_share_mounts()


def test_quitting_mid_job_leaves_the_map_beside_the_image_and_nothing_mounted(
        ssh_env: SshServer) -> None:
    app = make_home_app(MapLook(ascii=True, monochrome=True))
    url, remote = ssh_env.place("quit.img")

    async def scenario(pilot: Pilot) -> None:
        await share_step(pilot, SLOW_SOURCE, f"127.0.0.1:{ssh_env.port}", str(remote))
        await pilot.press("ctrl+n", "ctrl+n", "enter")
        await wait_until(pilot, lambda: bool(app.jobs))
        await wait_until(pilot, lambda: remote.exists() and remote.stat().st_blocks * 512
                         > 4 << 20, timeout=60)
        assert not no_share_mounts()
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")  # cancel the job and quit
        await wait_until(pilot, lambda: app.jobs[0].done)

    drive(app, scenario)
    assert no_share_mounts()
    beside = Path(f"{remote}.map")
    assert beside.exists() and f"rescue image {SLOW_SOURCE} {url}" in beside.read_text()
    rescued = mapfile.load(str(beside)).rmap.totals()[FINISHED]
    assert 4 << 20 <= rescued < 40 << 20  # what was written by then, the rest to resume


def test_the_format_renames_the_image_on_the_share() -> None:
    """No server needed: the share is mounted only when the job starts."""
    app = make_home_app(MapLook(ascii=True, monochrome=True))

    async def scenario(pilot: Pilot) -> None:
        wizard = await share_step(pilot, SOURCE, "nas.invalid:2222", "srv/images/sdb.img")
        await pilot.press("enter")
        assert wizard.step_id == "options"
        wizard.query_one("#format", Select).value = "qcow2"
        await pilot.pause()
        assert wizard.choices.dest == "ssh://root@nas.invalid:2222/srv/images/sdb.qcow2"
        assert str(wizard.share_form.query_one("#share-path", Input).value) == \
            "/srv/images/sdb.qcow2"
        await pilot.press("ctrl+n")
        assert wizard.choices.request().command_line.startswith(
            f"rescue image {SOURCE} ssh://root@nas.invalid:2222/srv/images/sdb.qcow2 "
            "--format qcow2")

    drive(app, scenario)


PROBE_ON_A_TERMINAL = """
import sys
from rescue.stores.mount import probe
from rescue.stores.url import parse
try:
    probe(parse(sys.argv[1], folder=True), interactive=False)
except Exception as error:
    print("refused:", error)
"""


def probe_on_a_terminal(url: str, env: dict[str, str]) -> str:
    """What the console's probe does with a terminal as its stdin, as the console has: it
    must fail in words, not ask there (a prompt would wait until the timeout)."""
    controller, terminal = pty.openpty()
    job = subprocess.Popen([sys.executable, "-c", PROBE_ON_A_TERMINAL, url], cwd=REPO_ROOT,
                           stdin=terminal, stdout=terminal, stderr=terminal,
                           env={**os.environ, **env}, start_new_session=True)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                shown += os.read(controller, 4096)
            except OSError:
                break
        elif job.poll() is not None:
            break
    job.kill()
    job.wait()
    os.close(controller)
    return shown.decode(errors="replace")


def test_the_console_mounts_never_ask_on_its_terminal(ssh_env: SshServer,
                                                      tmp_path: Path) -> None:
    stranger = f"-i {ssh_env.key} -o UserKnownHostsFile={tmp_path / 'known'}"  # host unknown
    shown = probe_on_a_terminal(f"ssh://root@127.0.0.1:{ssh_env.port}{ssh_env.root}",
                                {"RESCUE_SSH_OPTS": stranger, "PYTHONPATH": str(REPO_ROOT)})
    assert "refused: cannot mount" in shown and "continue connecting" not in shown, shown
    server = smb_server(tmp_path / "smbd")
    try:
        shown = probe_on_a_terminal(f"{server.prefix}", {"PYTHONPATH": str(REPO_ROOT)})
    finally:
        server.kill()
    assert "a password is needed" in shown and "password for" not in shown, shown
    assert no_share_mounts()
