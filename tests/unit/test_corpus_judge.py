"""The judge of every reader (tests/fixtures/corpus.py `differences`) sees each way a reader can
be wrong, and forgives only what the file system itself does not keep: a judge that passes
everything would make the corpus tests and the readers table worthless."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.fixtures.corpus import Case, Record, differences, read_tree

FAT_STEP = 2_000_000_000


@pytest.fixture
def case(tmp_path: Path) -> Case:
    """A truth read from real files (modes and owners kept): a file with a stream, a folder,
    a symlink."""
    root = tmp_path / "tree"
    (root / "folder").mkdir(parents=True)
    (root / "folder" / "file.txt").write_bytes(b"content\n")
    (root / "link").symlink_to("folder/file.txt")
    os.utime(root / "folder" / "file.txt", ns=(1_500_000_000_000_000_000,) * 2)
    truth = read_tree(root, modes=True)
    truth["folder/file.txt"].streams["stream"] = "0" * 64
    return Case("sample", "ext", tmp_path / "sample.img", truth, 1)


def changed(case: Case, path: str, **fields: object) -> dict[str, Record]:
    found = {name: dataclasses.replace(record, streams=dict(record.streams))
             for name, record in case.truth.items()}
    found[path] = dataclasses.replace(found[path], **fields)  # type: ignore[arg-type]
    return found


def test_a_reader_that_matches_the_truth_has_no_differences(case: Case) -> None:
    assert differences(case, changed(case, "link")) == {}


@pytest.mark.parametrize(("path", "fields", "said"), [
    ("folder/file.txt", {"digest": "f" * 64}, "content"),
    ("folder/file.txt", {"size": 9}, "size"),
    ("folder/file.txt", {"kind": "other"}, "kind"),
    ("folder/file.txt", {"mode": 0o4644}, "mode"),
    ("folder/file.txt", {"mode": None}, "mode"),
    ("folder/file.txt", {"owner": (1000, 1000)}, "owner"),
    ("folder/file.txt", {"owner": None}, "owner"),
    ("folder/file.txt", {"mtime_ns": 1_500_000_000_000_000_001}, "mtime"),
    ("folder/file.txt", {"mtime_ns": None}, "mtime"),
    ("folder/file.txt", {"streams": {}}, "streams"),
    ("folder/file.txt", {"streams": {"stream": "1" * 64}}, "streams"),
    ("link", {"digest": "0" * 64}, "content"),
    ("link", {"size": 1}, "size"),
])
def test_each_wrong_field_is_named(case: Case, path: str, fields: dict[str, object],
                                   said: str) -> None:
    wrong = differences(case, changed(case, path, **fields))
    assert list(wrong) == [path]
    assert wrong[path].startswith(said)


def test_missing_and_extra_names_are_both_seen(case: Case) -> None:
    found = changed(case, "link")
    found["LINK"] = found.pop("link")  # a reader that changed a name's case
    assert differences(case, found) == {"link": "missing", "LINK": "not in the file system"}


def test_times_are_judged_at_the_file_systems_resolution(case: Case) -> None:
    fat = dataclasses.replace(case, family="fat", resolution_ns=FAT_STEP)
    stamp = fat.truth["folder/file.txt"].mtime_ns
    assert stamp is not None
    within = changed(fat, "folder/file.txt", mtime_ns=stamp + FAT_STEP - 1)
    assert differences(fat, within) == {}
    beyond = changed(fat, "folder/file.txt", mtime_ns=stamp + FAT_STEP)
    assert list(differences(fat, beyond)) == ["folder/file.txt"]


def test_modes_and_owners_are_judged_only_where_the_file_system_keeps_them(case: Case) -> None:
    fat = dataclasses.replace(case, family="fat")
    assert differences(fat, changed(fat, "folder/file.txt", mode=0o777, owner=None)) == {}
