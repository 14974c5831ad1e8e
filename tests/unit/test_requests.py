"""Requests render the command that does the same: parsed back, it builds an equal request."""

from __future__ import annotations

import os

import pytest

from rescue.cli import build_parser
from rescue.commands.image import rescue_options
from rescue.engine.convert import Conversion
from rescue.engine.imaging import ImageRequest
from rescue.engine.rescue import RescueOptions
from rescue.engine.restore import RestoreRequest
from rescue.errors import UsageError
from rescue.formats.image import default_threads

IMAGE_REQUESTS = [
    ImageRequest(source="/dev/sdb", dest="disk.img"),
    ImageRequest(source="/dev/sdb", dest="a b.qcow2", map_path="m.map", image_format="qcow2",
                 level=7, domain_path="d.map", mode="used", order="metadata-first", force=True,
                 options=RescueOptions(cluster_size=128 * 1024, skip_size=4096,
                                       max_skip_size=1 << 20, retries=2, trim=False,
                                       scrape=False, reverse=True, min_read_rate=0,
                                       timeout=2.5, checkpoint_interval=3.0),
                 reads_log="reads.log", events_log="a b/events.log", threads=3),
    ImageRequest(source="/dev/sdb", dest="disk.img", first=("/home/ann", "2:/Users/ann b")),
]


@pytest.mark.parametrize("request_", IMAGE_REQUESTS)
def test_image_request_argv_parses_back_to_the_same_request(request_: ImageRequest) -> None:
    args = build_parser().parse_args(request_.to_argv()[1:])
    again = ImageRequest(source=args.source, dest=args.dest, map_path=args.map_path,
                         image_format=args.format, level=args.level, domain_path=args.domain,
                         mode=args.mode, order=args.order, first=tuple(args.first),
                         force=args.force, options=rescue_options(args),
                         reads_log=args.log_reads, events_log=args.log_events,
                         threads=args.threads)
    assert again == request_


def test_restore_request_argv_parses_back_to_the_same_request() -> None:
    request = RestoreRequest("img.qcow2", ("/dev/sdb", "/dev/sdc"), partition=2, verify=False,
                             skip_holes=True, force=True, map_dir="/x", check_image=True,
                             checkpoint=2.0, image_format="qcow2", threads=1, read_back="after")
    args = build_parser().parse_args(request.to_argv()[1:])
    again = RestoreRequest(image=args.image, targets=tuple(args.targets),
                           partition=args.partition, verify=args.verify,
                           skip_holes=args.skip_holes, force=args.force, map_dir=args.map_dir,
                           check_image=args.check_image, checkpoint=args.checkpoint,
                           image_format=args.image_format, threads=args.threads,
                           read_back=args.read_back)
    assert again == request


@pytest.mark.parametrize(("changes", "options", "message"), [
    ({"level": 20, "image_format": "qcow2"}, {}, "the level must be between 1 and 19"),
    ({"level": 0}, {}, "the level must be between 1 and 19"),  # by name a .qcow2
    ({}, {"cluster_size": 1000}, "--cluster-size must be a multiple of 512"),
    ({}, {"retries": -1}, "--retries must not be negative"),
    ({}, {"skip_size": 511}, "--skip-size must be at least 512"),
    ({}, {"skip_size": 4096, "max_skip_size": 2048}, "--max-skip-size must be at least"),
    ({}, {"min_read_rate": -1}, "--min-read-rate must not be negative"),
    ({}, {"timeout": 0.5}, "the timeout must be at least 1"),
    ({}, {"timeout": -3}, "the timeout must be at least 1"),
    ({}, {"timeout": float("nan")}, "the timeout must be at least 1"),
    ({}, {"checkpoint_interval": -1}, "--checkpoint must not be negative"),
    ({}, {"checkpoint_interval": float("nan")}, "--checkpoint must not be negative"),
])
def test_an_image_request_refuses_what_no_run_could_use(changes: dict, options: dict,
                                                        message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ImageRequest(source="/dev/sdb", dest="disk.qcow2", options=RescueOptions(**options),
                     **changes)


@pytest.mark.parametrize("threads", [0, -1, 257])
def test_every_request_refuses_a_thread_count_no_job_could_use(threads: int) -> None:
    message = f"--threads must be between 1 and 256, got {threads}"
    with pytest.raises(UsageError, match=message):
        ImageRequest(source="/dev/sdb", dest="disk.qcow2", threads=threads)
    with pytest.raises(UsageError, match=message):
        RestoreRequest("img.qcow2", ("/dev/sdb",), threads=threads)
    with pytest.raises(UsageError, match=message):
        Conversion("img.qcow2", "/nonexistent/out.img.zst", threads=threads)


def test_threads_default_to_the_cpus_this_process_may_use() -> None:
    """Left out, --threads is None in the request (its command line leaves it out too) and
    the job takes one thread per CPU of the process's affinity."""
    args = build_parser().parse_args(["image", "/dev/sdb", "disk.qcow2"])
    assert args.threads is None
    assert "--threads" not in ImageRequest(source="/dev/sdb", dest="disk.qcow2").to_argv()
    assert default_threads() == len(os.sched_getaffinity(0)) >= 1
    for command in (["image", "s", "d"], ["restore", "i", "t"], ["convert", "s", "d"]):
        assert build_parser().parse_args([*command, "--threads", "2"]).threads == 2


def test_a_raw_image_takes_any_level_since_it_compresses_nothing() -> None:
    assert ImageRequest(source="/dev/sdb", dest="disk.img", level=0).level == 0
    assert ImageRequest(source="/dev/sdb", dest="disk", image_format="raw", level=99).level == 99


def test_a_restore_request_refuses_an_unknown_read_back() -> None:
    with pytest.raises(UsageError, match="--read-back must be one of auto, during, after"):
        RestoreRequest("img.qcow2", ("/dev/sdb",), read_back="later")


@pytest.mark.parametrize("checkpoint", [-1.0, float("nan")])
def test_a_restore_request_refuses_a_negative_checkpoint(checkpoint: float) -> None:
    with pytest.raises(UsageError, match="--checkpoint must not be negative"):
        RestoreRequest("img.qcow2", ("/dev/sdb",), checkpoint=checkpoint)


def test_the_presenters_pass_option_values_through_for_the_requests_to_judge() -> None:
    args = build_parser().parse_args(["image", "/dev/sdb", "disk.img", "--skip-size", "100",
                                      "--checkpoint", "-1"])
    with pytest.raises(UsageError, match="--skip-size must be at least 512"):
        rescue_options(args)
