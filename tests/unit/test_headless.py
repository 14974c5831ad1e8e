"""The core must run without the UI: no module of these layers may pull in textual or rich."""

import pkgutil
import subprocess
import sys

import pytest

import rescue

HEADLESS = ("rescue.engine", "rescue.formats", "rescue.io", "rescue.fs", "rescue.devices",
            "rescue.explore", "rescue.sim", "rescue.rangemap", "rescue.errors", "rescue.units")


def headless_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(rescue.__path__, "rescue."):
        if info.name.startswith(HEADLESS):
            names.append(info.name)
    return sorted(names)


def test_every_core_layer_has_modules() -> None:
    found = {name.rsplit(".", 1)[0] for name in headless_modules()}
    assert {"rescue.engine", "rescue.formats", "rescue.io"} <= found


@pytest.mark.parametrize("module", headless_modules())
def test_core_module_imports_no_ui(module: str) -> None:
    code = (f"import sys, {module}\n"
            "ui = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
            "print(','.join(ui))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"{module} imports UI modules: {out}"
