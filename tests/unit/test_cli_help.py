"""`rescue COMMAND --help` explains every argument: one without help leaves a user guessing
what to type."""

from __future__ import annotations

import argparse

import pytest

from rescue.cli import build_parser


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(action.choices for action in parser._actions
                if isinstance(action, argparse._SubParsersAction))


@pytest.mark.parametrize("name", list(commands()))
def test_every_argument_has_help(name: str) -> None:
    undocumented = [action.dest for action in commands()[name]._actions
                    if not action.help and not isinstance(action, argparse._HelpAction)]
    assert undocumented == []


@pytest.mark.parametrize("name", ["info", "verify", "ls", "extract", "mount"])
def test_commands_that_print_a_result_offer_json(name: str) -> None:
    assert "--json" in commands()[name]._option_string_actions
