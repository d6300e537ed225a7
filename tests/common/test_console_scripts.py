"""Every ``python -m`` entry point is also an installed command (pyproject.toml [project.scripts]): each target
resolves to a callable that returns an exit status, ``--help`` exits 0 and names the command, and the module's
``__main__`` runs the same function. Where the package is installed (``make setup``), the commands themselves run."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:          # Python 3.10: pytest's own dependency
    import tomli as tomllib

from common.cli import CONSOLE_SCRIPTS

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
def test_every_entry_point_is_a_command():
    assert SCRIPTS == {script: f"{module}:cli" for module, script in CONSOLE_SCRIPTS.items()}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_target_is_the_modules_cli(script):
    module, func = SCRIPTS[script].split(":")
    target = getattr(importlib.import_module(module), func)
    assert callable(target)
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    main_block = source[source.index('if __name__ == "__main__":'):]
    assert f"{func}()" in main_block          # python -m MODULE and the command run the same function


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_exits_0_and_names_the_command(script, capsys):
    module, func = SCRIPTS[script].split(":")
    target = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as info:
        target(["--help"])
    assert info.value.code in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    assert f"python -m {module}" in text
    assert script in text


def _installed(script: str) -> str | None:
    """The command next to this interpreter (a venv's bin/), else none: the test then has nothing to run."""
    path = Path(sys.executable).parent / script
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_command_runs(script):
    exe = _installed(script)
    if exe is None:
        pytest.skip(f"{script} is not installed next to {sys.executable} (pip install -e . installs it)")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
    bad = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr

