"""`rescue ls`, `rescue extract`, `rescue mount` and `rescue umount`: what an image holds.

The explore modules load the file-system readers (The Sleuth Kit, libfsntfs) and the mount
module libfuse: each is imported only when a command that needs it runs, so every other command
starts without them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from rescue.commands import add_image_argument
from rescue.errors import DestinationError, ExitCode, UsageError
from rescue.units import human_size

if TYPE_CHECKING:
    from rescue.explore.extract import Report
    from rescue.explore.filesystem import Entry, FileSystem
    from rescue.explore.session import ImageSession

TARGET_HELP = "[PARTITION:]PATH, e.g. 2:/home; without PARTITION the one file system is meant"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ls = subparsers.add_parser("ls", help="list an image's partitions, or files inside one")
    add_image_argument(ls)
    ls.add_argument("target", nargs="?", help=f"{TARGET_HELP}; omit to list partitions")
    ls.add_argument("-R", "--recursive", action="store_true", help="list whole subtrees")
    ls.add_argument("-a", "--all", action="store_true",
                    help="show the file system's own metadata files too ($MFT, ...)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(run=run_ls)

    ext = subparsers.add_parser(
        "extract", help="copy files or folders out of an image, safely; report damaged files",
        description="Copy PATH into the directory DEST (created if missing) as DEST/NAME; "
        "symlinks are recreated as they are, device nodes, FIFOs and sockets skipped, NTFS "
        "alternate data streams written beside their file as NAME:STREAM, owners kept when "
        "root extracts from ext or XFS. Exit status 1 if any data is not extracted: a damaged "
        "file (its lost bytes zero-filled), an entry whose metadata is unreadable, or an entry "
        "that could not be written.")
    add_image_argument(ext)
    ext.add_argument("target", help=TARGET_HELP)
    ext.add_argument("dest", help="directory to copy into (created if missing)")
    ext.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    ext.add_argument("--json", action="store_true", help="print the report as JSON")
    ext.set_defaults(run=run_extract)

    mnt = subparsers.add_parser(
        "mount", help="show an image's partitions' files and its raw disk, read-only (FUSE)",
        description="DIR/disk is the image as a read-only raw disk and DIR/pN (DIR/fs without "
        "a partition table) each partition's files, read by rescue itself: no root and no "
        "kernel driver needed, and bytes the image lacks read as I/O errors, never as zeros. "
        "Every mount is ro,nosuid,nodev,noexec: nothing in the image runs or reaches a device.")
    add_image_argument(mnt)
    mnt.add_argument("dir", help="an existing empty directory to show the disk and partitions in")
    mnt.add_argument("--raw-only", action="store_true", help="do not show the partitions")
    mnt.add_argument("--kernel", action="store_true",
                     help="mount the partitions with the kernel's drivers (root only), not "
                     "through FUSE: faster, but the kernel parses the untrusted image")
    mnt.add_argument("--allow-other", action="store_true",
                     help="let other users in too (by default only you)")
    mnt.add_argument("--json", action="store_true",
                     help="print the disk and the mounted partitions as JSON")
    mnt.set_defaults(run=run_mount)

    umnt = subparsers.add_parser("umount", help="undo `rescue mount DIR`")
    umnt.add_argument("dir", help="the directory given to `rescue mount`")
    umnt.set_defaults(run=run_umount)


def _time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))


def entry_record(entry: Entry, lost: tuple[tuple[int, int], ...]) -> dict[str, object]:
    from rescue.explore.filesystem import printable

    return {"path": entry.display_path, "kind": entry.kind, "size": entry.size,
            "mode": f"{entry.mode:04o}", "uid": entry.uid, "gid": entry.gid,
            "mtime_ns": entry.mtime_ns, "atime_ns": entry.atime_ns,
            "target": printable(entry.target) if entry.target is not None else None,
            "lost": [list(r) for r in lost]}


def entry_line(entry: Entry, lost: tuple[tuple[int, int], ...], name: str,
               metadata_lost: bool = False) -> str:
    from rescue.explore.filesystem import mode_string, printable

    flag = "!" if lost or metadata_lost else " "
    link = f" -> {printable(entry.target)}" if entry.target is not None else ""
    return (f"{flag} {mode_string(entry)} {entry.uid:>5} {entry.gid:>5} {entry.size:>12} "
            f"{_time(entry.mtime_ns)} {name}{link}")


def _list_volumes(session: ImageSession, as_json: bool, out: TextIO) -> None:
    from rescue.explore.filesystem import printable
    from rescue.explore.volumes import volume_dir

    for volume in session.layout.volumes:
        bad = session.unreadable_bytes(volume)
        if as_json:
            print(json.dumps({"partition": volume.number, "start": volume.start,
                              "size": volume.size, "fstype": volume.fstype,
                              "label": volume.label, "type": volume.description,
                              "unreadable": bad, "mount_dir": volume_dir(volume)}), file=out)
            continue
        flag = "!" if bad else " "
        label = f" {printable(volume.label.encode())!r}" if volume.label else ""
        damage = f"  {human_size(bad)} unreadable" if bad else ""
        print(f"{flag} {volume.number:>3}  start {volume.start:>14}  {human_size(volume.size):>10}"
              f"  {volume.fstype or 'unknown':<8}{label}  ({volume.description}){damage}",
              file=out)
    for warning in session.layout.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _list_entries(fs: FileSystem, top: Entry, args: argparse.Namespace, out: TextIO) -> int:
    from rescue.explore.filesystem import printable

    unlisted: list[tuple[str, str]] = []
    if top.kind != "dir":
        entries = iter((top,))
    elif args.recursive:
        entries = fs.walk(top, args.all, unlisted)
    else:
        entries = fs.children(top, args.all)
    damaged = 0
    for entry in entries:
        lost = fs.lost(entry)
        metadata_lost = fs.metadata_lost(entry)
        streams = [(stream, fs.lost(stream)) for stream in fs.streams(entry)]
        damaged += bool(lost or metadata_lost) + sum(bool(gone) for _, gone in streams)
        if args.json:
            record = entry_record(entry, lost)
            record["metadata_lost"] = metadata_lost
            record["streams"] = [{"name": printable(stream.stream or b""), "size": stream.size,
                                  "lost": [list(r) for r in stream_lost]}
                                 for stream, stream_lost in streams]
            print(json.dumps(record), file=out)
            continue
        name = entry.display_path if args.recursive or entry is top else printable(
            entry.name, name=True)
        print(entry_line(entry, lost, name, metadata_lost), file=out)
        for stream, stream_lost in streams:  # NTFS alternate data streams, as file:stream
            print(entry_line(stream, stream_lost,
                             f"{name}:{printable(stream.stream or b'', name=True)}"), file=out)
    if damaged and not args.json:
        print(f"warning: {damaged} entr{'y lacks' if damaged == 1 else 'ies lack'} data (marked "
              "!): it, or the metadata that says what it is, lies in bad or never-read parts "
              "of the image, or no metadata says where", file=sys.stderr)
    if top.kind == "dir" and (fs.lost(top) or fs.metadata_lost(top)):
        print(f"warning: part of folder {top.display_path} lies in bad or never-read parts of "
              "the image: the entries kept there are not listed", file=sys.stderr)
    for path, why in unlisted:
        print(f"warning: folder {path} is not listed: {why}", file=sys.stderr)
    return damaged


def run_ls(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from rescue.explore.session import ImageSession
    from rescue.explore.volumes import parse_target

    with ImageSession(args.image, args.image_format) as session:
        if args.target is None:
            _list_volumes(session, args.json, out)
            return ExitCode.OK
        number, path = parse_target(args.target)
        fs = session.filesystem(number)
        _list_entries(fs, fs.lookup(path), args, out)
    return ExitCode.OK


def print_report(report: Report, out: TextIO) -> None:
    for path, ranges in report.damaged:
        lost = sum(end - start for start, end in ranges)
        spans = ", ".join(f"{start}-{end}" for start, end in ranges)
        print(f"DAMAGED  {path}: {lost} bytes lost (zero-filled) at bytes {spans}", file=out)
    for path, why in report.missing:
        print(f"MISSING  {path}: {why}", file=out)
    for path, why in report.skipped:
        print(f"SKIPPED  {path}: {why}", file=out)
    for path, name, why in report.renamed:
        print(f"RENAMED  {path} -> {name} ({why})", file=out)
    extra = f"{report.hard_links} hard links, " if report.hard_links else ""
    extra += f"{report.streams} streams, " if report.streams else ""
    print(f"{report.files} files, {report.directories} folders, {report.symlinks} symlinks, "
          f"{extra}"
          f"{human_size(report.bytes)} extracted; {len(report.damaged)} damaged, "
          f"{len(report.missing)} not extracted, {len(report.skipped)} skipped, "
          f"{len(report.renamed)} renamed", file=out)


def run_extract(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from rescue.explore.extract import extract
    from rescue.explore.session import ImageSession
    from rescue.explore.volumes import parse_target

    with ImageSession(args.image, args.image_format) as session:
        number, path = parse_target(args.target)
        fs = session.filesystem(number)
        report = extract(fs, fs.lookup(path), args.dest, image=args.image)
    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as f:
                json.dump(report.to_dict(), f, indent=2)
        except OSError as error:
            raise DestinationError(f"cannot write report {args.report}: {error.strerror}"
                                   ) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        print_report(report, out)
    return int(report.exit_code)


def _mount_module() -> ModuleType:
    """The mount code, imported only by the commands that mount: its FUSE bindings load
    libfuse, which every other command (and the demo) must run without."""
    try:
        return importlib.import_module("rescue.explore.mount")
    except OSError as error:  # mfusepy raises it when no libfuse is installed
        raise UsageError(f"mounting needs libfuse 3 (Debian: apt install fuse3): {error}"
                         ) from None


def run_mount(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    result = _mount_module().mount_image(args.image, args.dir, partitions=not args.raw_only,
                                         image_format=args.image_format,
                                         allow_other=args.allow_other, kernel=args.kernel)
    if args.json:
        print(json.dumps({"directory": result.directory, "disk": result.disk, "pid": result.pid,
                          "partitions": [{"partition": volume.number, "fstype": volume.fstype,
                                          "mount_dir": target, "loop": loop,
                                          "via": "kernel" if loop else "fuse"}
                                         for volume, target, loop in result.mounted],
                          "warnings": result.warnings}), file=out)
        return ExitCode.OK
    print(f"{result.disk}: the image as a read-only raw disk (server pid {result.pid})",
          file=out)
    for volume, target, loop in result.mounted:
        print(f"{target}: partition {volume.number} ({volume.fstype}) read-only via "
              f"{loop or 'FUSE'}", file=out)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"undo with: rescue umount {result.directory}", file=out)
    return ExitCode.OK


def run_umount(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    result = _mount_module().unmount_image(args.dir)
    print(f"unmounted {len(result.unmounted)}, detached {len(result.detached)} loop device(s), "
          f"stopped {len(result.stopped)} server(s)", file=out)
    return ExitCode.OK
