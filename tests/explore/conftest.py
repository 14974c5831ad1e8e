"""Images of real file systems, built once per test session (they take seconds each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.explore import image_to, make_filesystem, make_gpt_disk, make_tree


@pytest.fixture(scope="session")
def explore_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explore")


@pytest.fixture(scope="session")
def source_tree(explore_dir: Path) -> Callable[[str], Path]:
    """kind → the tree put into that file system: with a symlink only where one can live."""
    trees: dict[bool, Path] = {}

    def tree(kind: str) -> Path:
        symlinks = kind == "ext4"
        if symlinks not in trees:
            root = explore_dir / f"tree-{'links' if symlinks else 'plain'}"
            root.mkdir()
            make_tree(root, symlinks=symlinks)
            trees[symlinks] = root
        return trees[symlinks]

    return tree


@pytest.fixture(scope="session")
def filesystem_image(explore_dir: Path, source_tree: Callable[[str], Path]
                     ) -> Callable[[str], Path]:
    """kind → a raw image of that file system holding `source_tree(kind)`, built once."""
    built: dict[str, Path] = {}

    def build(kind: str) -> Path:
        if kind not in built:
            image = explore_dir / f"{kind}.fs"
            make_filesystem(kind, source_tree(kind), image)
            built[kind] = image
        return built[kind]

    return build


@pytest.fixture(scope="session")
def gpt_ext4_qcow2(explore_dir: Path, filesystem_image: Callable[[str], Path]) -> Path:
    """A GPT disk whose partition 1 holds the ext4 file system, imaged to qcow2."""
    disk = explore_dir / "gpt-ext4.raw"
    make_gpt_disk([filesystem_image("ext4")], disk)
    return image_to(disk, explore_dir / "gpt-ext4.qcow2")
