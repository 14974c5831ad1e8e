"""`rescue deploy` over a real multicast LAN: network namespaces on a bridge, udpcast, and a
loop device per receiver, judged by comparing every target with the source disk.

A receiver counts as done only when its own read-back proved the image; the tests cover the
ways multicast goes wrong without telling: a receiver killed mid-stream, one cut off from the
network, one that joins after the transfer began, one whose disk is too small.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import CLI_ENV, REPO_ROOT, summary
from tests.fixtures.multicast import Host, lan, netns_available
from tests.fixtures.restore import DISK, GPT_LAYOUT, MIB, cmp, digest, imaged_disk, run, target
from tests.functional.test_restore import assert_partitions_equal

pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(not netns_available(), reason="needs root and ip netns")]

BIG = 192 * MIB  # random bytes: long enough on the wire to act while it streams
PORT = 9200  # each test's namespaces are its own; not udpcast's default, to try --port


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A GPT disk with real file systems and its qcow2 image; a raw image of random bytes."""
    folder = tmp_path_factory.mktemp("deploy-sources")
    big = folder / "random.img"
    with open(big, "wb") as f:
        for _ in range(BIG // MIB):
            f.write(os.urandom(MIB))
    return {**imaged_disk(folder, "gpt", DISK, GPT_LAYOUT, 1, "qcow2"), "random.img": big}


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver's scratch folder in the test's own: one this test kills cannot clean up."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def rescue_in(host: Host, *args: str) -> subprocess.Popen[str]:
    """`rescue ARGS` inside the host's namespace, in a process group of its own (so killing
    it kills its udpcast program too)."""
    return subprocess.Popen(host.command(sys.executable, "-m", "rescue", *args),
                            cwd=REPO_ROOT, env={**os.environ, **CLI_ENV},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def receive(host: Host, device: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return rescue_in(host, "deploy", "receive", device, "--yes", "--json",
                     "--interface", host.interface, "--port", str(port), *extra)


def send(host: Host, image: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return rescue_in(host, "deploy", "send", str(image), "--json", "--interface",
                     host.interface, "--port", str(port), *extra)


def finished(process: subprocess.Popen[str], timeout: float = 240
             ) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def by_target(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in result["receivers"] if r["target"]}


def wait_until_writing(process: subprocess.Popen[str]) -> None:
    """Read the receiver's progress lines until it has written part of the stream."""
    assert process.stdout is not None
    for line in process.stdout:
        report = json.loads(line)
        if report.get("phase") == "writing" and report.get("written", 0) > 0:
            return
    pytest.fail("the receiver ended before it wrote anything")


def test_three_receivers_each_hold_the_image(sources: dict[str, Path], tmp_path: Path,
                                            stack: ExitStack) -> None:
    port = PORT
    with lan(4) as (sender, *hosts):
        devices = [target(stack, tmp_path, f"r{i}", DISK, fill=b"old data ") for i in range(3)]
        # one reads back while it writes, one after, one as its disk suits
        receivers = [receive(host, device, port, "--read-back", when) for host, device, when
                     in zip(hosts, devices, ("during", "after", "auto"), strict=True)]
        time.sleep(1)
        result = finished(send(sender, sources["gpt.qcow2"], port, "--min-receivers", "3"))
        assert result.returncode == 0, result.stderr
        report = summary(result)
        assert {r["address"] for r in report["receivers"]} == {h.address for h in hosts}
        assert all(r["ok"] and r["fingerprint"] == "ok" for r in report["receivers"])
        assert report["wire"] < report["size"] // 4  # compressed: mostly empty file systems
        for process in receivers:
            done = finished(process)
            assert done.returncode == 0, done.stderr
            assert summary(done)["fingerprint"] == "ok"
    for device in devices:
        cmp(sources["gpt"], device, DISK)


def test_a_receiver_killed_mid_stream_is_failed_and_the_others_finish(
        sources: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    port = PORT
    with lan(4) as (sender, *hosts):
        devices = [target(stack, tmp_path, f"k{i}", BIG) for i in range(3)]
        receivers = [receive(host, device, port, "--read-back", "during") for host, device
                     in zip(hosts, devices, strict=True)]
        time.sleep(1)
        sending = send(sender, sources["random.img"], port, "--min-receivers", "3")
        wait_until_writing(receivers[0])
        os.killpg(receivers[0].pid, signal.SIGKILL)
        result = finished(sending)
        assert result.returncode == 3, result.stderr
        reports = by_target(summary(result))
        killed = next(r for r in summary(result)["receivers"] if r["address"] == hosts[0].address)
        assert not killed["ok"] and killed["error"]
        for device, process in zip(devices[1:], receivers[1:], strict=True):
            assert reports[device]["ok"], reports
            assert finished(process).returncode == 0
            assert digest(device) == digest(sources["random.img"])
        receivers[0].wait()
    assert digest(devices[0]) != digest(sources["random.img"])


def test_a_receiver_cut_off_the_network_is_failed_by_its_silence(
        sources: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    port = PORT
    with lan(3) as (sender, cut, kept):
        devices = [target(stack, tmp_path, f"c{i}", BIG) for i in range(2)]
        receivers = [receive(host, device, port) for host, device in zip((cut, kept), devices,
                                                                           strict=True)]
        time.sleep(1)
        sending = send(sender, sources["random.img"], port, "--min-receivers", "2",
                       "--report-timeout", "5")
        wait_until_writing(receivers[0])
        subprocess.run(cut.command("ip", "link", "set", cut.interface, "down"), check=True)
        result = finished(sending)
        assert result.returncode == 3, result.stderr
        reports = {r["address"]: r for r in summary(result)["receivers"]}
        assert not reports[cut.address]["ok"]
        assert "stopped reporting" in reports[cut.address]["error"]
        assert reports[kept.address]["ok"]
        assert finished(receivers[1]).returncode == 0
        os.killpg(receivers[0].pid, signal.SIGKILL)
        receivers[0].wait()
    assert digest(devices[1]) == digest(sources["random.img"])


def test_a_receiver_that_joins_late_is_failed(sources: dict[str, Path], tmp_path: Path,
                                              stack: ExitStack) -> None:
    port = PORT
    with lan(3) as (sender, early, late):
        devices = [target(stack, tmp_path, f"l{i}", DISK, fill=b"old data ") for i in range(2)]
        on_time = receive(early, devices[0], port)
        time.sleep(1)
        sending = send(sender, sources["gpt.qcow2"], port, "--min-receivers", "2",
                       "--max-wait", "2", "--report-timeout", "5")
        time.sleep(4)  # the transfer has begun without the second receiver
        latecomer = receive(late, devices[1], port)
        result = finished(sending)
        os.killpg(latecomer.pid, signal.SIGTERM)
        late_result = finished(latecomer)
        assert result.returncode == 3, result.stderr
        receivers = summary(result)["receivers"]
        assert [r["ok"] for r in receivers] == [True, False]
        assert receivers[1]["error"] == "did not join before the transfer began"
        assert finished(on_time).returncode == 0
        assert late_result.returncode != 0
        with open(devices[1], "rb") as late_disk:
            assert late_disk.read(9) == b"old data "  # nothing was written on it
    cmp(sources["gpt"], devices[0], DISK)


def test_a_target_too_small_is_failed_and_left_as_it_was(sources: dict[str, Path],
                                                        tmp_path: Path,
                                                        stack: ExitStack) -> None:
    port = PORT
    with lan(2) as (sender, host):
        small = target(stack, tmp_path, "small", DISK // 2, fill=b"keep me ")
        before = digest(small)
        receiving = receive(host, small, port)
        time.sleep(1)
        result = finished(send(sender, sources["gpt.qcow2"], port, "--report-timeout", "10"))
        assert result.returncode == 3
        (report,) = summary(result)["receivers"]
        assert not report["ok"] and "too small" in report["error"]
        done = finished(receiving)
        assert done.returncode == 3
        assert "too small" in summary(done)["error"]
    assert digest(small) == before


def test_a_larger_gpt_disk_gets_the_image_and_its_backup_table_at_the_end(
        sources: dict[str, Path], tmp_path: Path, stack: ExitStack) -> None:
    with lan(2) as (sender, host):
        device = target(stack, tmp_path, "larger", 80 * MIB, fill=b"old data ")
        receiving = receive(host, device, PORT)
        time.sleep(1)
        result = finished(send(sender, sources["gpt.qcow2"], PORT))
        assert result.returncode == 0, result.stderr
        assert finished(receiving).returncode == 0
    assert "No problems found" in run("sgdisk", "-v", device)
    with open(device, "rb") as disk:  # the backup header now sits in the disk's last sector
        disk.seek(80 * MIB - 512)
        assert disk.read(8) == b"EFI PART"
    assert_partitions_equal(sources["gpt"], device)


def test_an_interrupted_sender_stops_udp_sender_and_says_so(sources: dict[str, Path]) -> None:
    with lan(1) as (sender,):
        sending = rescue_in(sender, "deploy", "send", str(sources["gpt.qcow2"]), "--interface",
                            sender.interface, "--min-receivers", "2")
        time.sleep(3)  # waiting for receivers that never come
        sending.send_signal(signal.SIGTERM)  # to rescue alone, not its process group
        result = finished(sending, timeout=30)
        assert result.returncode == 130, result.stderr
        assert result.stderr.splitlines() == [
            "rescue: interrupted; the receivers did not get the whole image"]
        assert not run("ip", "netns", "pids", sender.namespace).split()
