"""The map of an image on a share, kept on this machine too: which copy a run starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.stores.state import copy_beside, local_map_path, newer_to_local
from rescue.stores.url import parse


def test_each_url_has_its_own_local_map_under_the_state_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = local_map_path(parse("ssh://nas:2222/srv/a/disk.qcow2"))
    second = local_map_path(parse("smb://nas/srv/a/disk.qcow2"))
    assert first != second
    assert local_map_path(parse("ssh://nas/srv/a_b.img")) != local_map_path(
        parse("ssh://nas/srv/a/b.img"))
    assert all(Path(path).parent == tmp_path / "rescue" / "maps" for path in (first, second))
    assert (tmp_path / "rescue" / "maps").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(("remote_age", "local_age", "kept"), [
    (10, 100, "remote"),  # another machine went on with the job
    (100, 10, "local"),  # the share lost what it had not written
    (None, 10, "local"),  # no map beside the image
    (10, None, "remote"),  # a first run here
])
def test_a_run_starts_from_the_newer_map(tmp_path: Path, remote_age: int | None,
                                         local_age: int | None, kept: str) -> None:
    remote, local = tmp_path / "remote.map", tmp_path / "local.map"
    now = 1_700_000_000
    for path, age in ((remote, remote_age), (local, local_age)):
        if age is not None:
            path.write_text(path.stem)
            os.utime(path, (now - age, now - age))
    newer_to_local(str(remote), str(local))
    assert local.read_text() == kept


def test_the_map_goes_beside_the_image_or_says_why_not(tmp_path: Path) -> None:
    local = tmp_path / "local.map"
    local.write_text("map")
    assert copy_beside(str(local), str(tmp_path / "image.map")) is None
    assert (tmp_path / "image.map").read_text() == "map"
    problem = copy_beside(str(local), str(tmp_path / "gone" / "image.map"))
    assert problem is not None and str(local) in problem
    assert copy_beside(str(tmp_path / "none.map"), str(tmp_path / "x.map")) is None
