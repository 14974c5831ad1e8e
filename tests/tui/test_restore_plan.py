"""The restore wizard's plan for a disk of another size, at 80x24: the same table, the same
refusals and the same command line as `rescue restore --dry-run`, from a real image of a PC's
disk (GPT, FAT32 EFI system partition, ext4, NTFS) onto real loop devices."""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, SelectionList

from rescue.tui.app import RescueApp
from rescue.tui.screens.restore_wizard import RestoreWizard
from tests.fixtures.cli import rescue
from tests.fixtures.resize import build
from tests.fixtures.restore import target
from tests.fixtures.tui import drive, screen_lines, type_text
from tests.tui.test_wizards import full_text, highlight, home_app, set_field, shown

pytestmark = pytest.mark.slow
MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build(tmp_path_factory.mktemp("pc"))[1])


def dry_run(image: str, device: str, *layout: str) -> tuple[list[str], str]:
    """The plan lines `rescue restore --dry-run` prints for one target (without the target's
    own line and its indent), and its error line."""
    result = rescue("restore", image, device, "--dry-run", *layout, timeout=300)
    return [line[2:] for line in result.stdout.splitlines()[1:-1]], result.stderr.strip()


def on_screen(app: RescueApp, lines: list[str]) -> bool:
    """Whether every line is a whole row of the screen (leading and trailing blanks aside)."""
    rows = {row.strip() for row in screen_lines(app)}
    return all(line.strip() in rows for line in lines)


async def to_checks(pilot: Pilot, image: str, device: str, more: str = "") -> RestoreWizard:
    await highlight(pilot, device)
    await pilot.press("r")
    wizard = pilot.app.screen
    assert isinstance(wizard, RestoreWizard)
    await set_field(pilot, "#image-path", image)
    await pilot.press("enter")
    assert list(wizard.query_one("#target-list", SelectionList).selected) == [device]
    await set_field(pilot, "#more-targets", more)
    await pilot.press("ctrl+n")
    assert wizard.step_id == "check", full_text(pilot.app, "#problem")
    return wizard


def test_the_check_step_shows_the_plan_and_takes_the_sizes(image: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        big = target(stack, tmp_path, "big", 4 * GIB)
        plan, _ = dry_run(image, big)
        sized, _ = dry_run(image, big, "--layout", "2=60%,3=rest")
        _, refused = dry_run(image, big, "--layout", "2=lots")
        assert plan and sized and plan != sized and refused.startswith("rescue: --layout")
        app = home_app()

        async def scenario(pilot: Pilot) -> None:
            wizard = await to_checks(pilot, image, big)
            assert on_screen(app, plan), screen_lines(app)
            assert wizard.request is not None and "--layout" not in wizard.request.to_argv()
            field = wizard.query_one("#layout", Input)
            assert field.has_focus
            await type_text(pilot, "2=lots")
            assert full_text(app, "#problem") == refused.removeprefix("rescue: ")
            await pilot.press("ctrl+n")
            assert wizard.step_id == "check"  # a bad size does not go on
            field.value = ""
            await type_text(pilot, "2=60%,3=rest")
            assert full_text(app, "#problem") == ""
            assert on_screen(app, sized), screen_lines(app)
            await pilot.press("ctrl+n")
            assert wizard.step_id == "confirm"
            argv = ["rescue", "restore", image, big, "--layout", "2=60%,3=rest"]
            assert wizard.request.to_argv() == argv
            assert wizard.request.command_line == shlex.join(argv)
            await pilot.press("escape")

        drive(app, scenario)


def test_a_target_too_small_is_refused_with_the_size_the_data_needs(
        image: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        smaller = target(stack, tmp_path, "smaller", 1229 * MIB)
        tiny = target(stack, tmp_path, "tiny", 700 * MIB)
        shrunk, _ = dry_run(image, smaller)
        _, refused = dry_run(image, tiny)
        assert "shrink" in " ".join(shrunk) and "the image's data needs at least" in refused
        app = home_app()

        async def scenario(pilot: Pilot) -> None:
            wizard = await to_checks(pilot, image, smaller, tiny)
            assert on_screen(app, shrunk), screen_lines(app)
            reason = refused.split(": ", 2)[2].removesuffix(" (--force cannot override this)")
            assert f"✗ {reason}" in " ".join(full_text(app, "#checks").split())
            await pilot.press("ctrl+n")
            assert wizard.step_id == "check"  # nor can it be started
            assert full_text(app, "#problem") == refused.removeprefix("rescue: ")
            assert "may be written" in shown(app)
            await pilot.press("escape")

        drive(app, scenario)


def test_many_targets_scroll_by_keys(image: str, tmp_path: Path) -> None:
    """Three targets' plans and refusal do not fit 24 rows: the keys scroll to the last."""
    with ExitStack() as stack:
        big = target(stack, tmp_path, "big", 4 * GIB)
        others = [target(stack, tmp_path, name, size)
                  for name, size in (("smaller", 1229 * MIB), ("tiny", 700 * MIB))]
        plan, _ = dry_run(image, big)
        app = home_app()

        async def scenario(pilot: Pilot) -> None:
            await to_checks(pilot, image, big, " ".join(others))
            assert on_screen(app, plan), "\n".join(screen_lines(app))  # beside the scroll bar
            end = "partition 3 ntfs: min"  # the end of the last target's refusal
            assert end not in shown(app)  # below the screen
            await pilot.press("tab")  # from the sizes field to the plans
            await pilot.press("end")
            assert end in shown(app), "\n".join(screen_lines(app))
            assert "[ ] Force: override the reasons marked so" in shown(app)
            await pilot.press("escape")

        drive(app, scenario)
