"""`rescue --version` and `--help` answer without loading the engines: device discovery,
file-system readers and image formats are imported only by the command that runs."""

from __future__ import annotations

import os
import subprocess
import sys

from rescue import __version__
from tests.fixtures.cli import CLI_ENV, rescue

HEAVY = ("pyudev", "rescue.devices.discover", "rescue.engine.imaging", "rescue.engine.restore",
         "rescue.engine.convert", "rescue.engine.rescue", "rescue.fs.used", "rescue.fs.affected",
         "rescue.engine.verify", "rescue.engine.imageinfo", "zstandard", "textual")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, **CLI_ENV}).stdout
    return set(out.split())


def test_version_is_answered_before_any_command_is_imported() -> None:
    loaded = loaded_after("from rescue.cli import main\nmain(['--version'])")
    assert not {name for name in loaded if name.startswith("rescue.commands")}
    assert rescue("--version").stdout == f"rescue {__version__}\n"


def test_the_parsers_are_built_without_the_engines() -> None:
    loaded = loaded_after("from rescue.cli import build_parser\nbuild_parser()")
    assert "rescue.commands.image" in loaded
    assert not {name for name in loaded if name.startswith(HEAVY)}



# what only the commands that need them may load: the console, The Sleuth Kit, FUSE, zstd
UI_AND_LIBRARIES = ("textual", "rich", "pytsk3", "pyfsntfs", "mfusepy", "zstandard")


def loaded_by_cli(*args: str) -> set[str]:
    """The modules a fresh interpreter holds after `rescue ARGS` has answered (its output goes
    to stderr, so that only the module names are read)."""
    return loaded_after("import contextlib\nfrom rescue.cli import main\n"
                        "with contextlib.redirect_stdout(sys.stderr), "
                        "contextlib.suppress(SystemExit):\n"
                        f"    main({list(args)!r})")


def test_version_and_help_load_no_ui_and_no_image_libraries() -> None:
    version, help_ = loaded_by_cli("--version"), loaded_by_cli("--help")
    assert "rescue.cli" in version and "rescue.commands.image" in help_  # the probe works
    for loaded in (version, help_):
        assert not {name for name in loaded if name.split(".")[0] in UI_AND_LIBRARIES}
    assert not {name for name in version if name.startswith("rescue.commands")}


def test_help_loads_no_simulator_and_no_engine() -> None:
    loaded = loaded_by_cli("--help")
    assert not {name for name in loaded if name.startswith(("rescue.sim", *HEAVY))}
