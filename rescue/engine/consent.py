"""Consent to a restore: what may be typed to confirm a target, and the words that refuse one.

Restoring overwrites whole disks, so `rescue restore` and the restore wizard ask the same
question, accept the same answers and refuse with the same reasons.
"""

from __future__ import annotations

from collections.abc import Iterable

from rescue.engine.restore import TargetCheck

OVERWRITTEN = "Everything on these targets will be overwritten:"  # `rescue restore`, above a
# line per target; the wizard's help, above a field per target:
TYPE_TO_CONFIRM = ("Everything on these disks will be overwritten. Type each target's name or "
                   "serial:")
NO_TERMINAL = ("restore needs confirmation but stdin is not a terminal; pass --yes to restore "
               "without asking")


def accepted_words(check: TargetCheck) -> set[str]:
    """What may be typed to confirm a target: its kernel name, its path or its serial."""
    return {word for word in (check.name, check.target, check.serial) if word}


def confirms(check: TargetCheck, typed: str) -> bool:
    return typed.strip() in accepted_words(check)


def refusals(checks: Iterable[TargetCheck], force: bool) -> list[str]:
    """One line for each target that may not be written, naming why."""
    return [check.problem(force) or f"{check.target} cannot take the image"
            for check in checks if not check.allowed(force)]


def prompt(check: TargetCheck) -> str:
    """The question `rescue restore` asks on the terminal for one target."""
    return (f"Type the name{' or serial' if check.serial else ''} of {check.target} "
            f"({check.name}) to confirm: ")


def placeholder(check: TargetCheck) -> str:
    """What the wizard's empty field for one target shows: what to type into it."""
    return f"{check.name} or its serial for {check.target}"


def not_matched(check: TargetCheck) -> str:
    """Why `rescue restore` stops when an answer is wrong."""
    return f"confirmation for {check.target} did not match; nothing written"


def not_confirmed(check: TargetCheck) -> str:
    """What the wizard says while a target's confirmation is still wrong."""
    wanted = " or ".join(sorted(accepted_words(check) - {check.target}))
    return f"not confirmed: type {wanted} to restore onto {check.target}"
