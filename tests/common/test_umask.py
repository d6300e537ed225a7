"""Run files respect the umask like any other tool's files: 0666 & ~umask, not mkstemp's 0600."""
from __future__ import annotations

import builtins
import os
import stat

import pytest

from common import rundir


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(mask, mode, umask, tmp_path):
    umask(mask)
    assert rundir.current_umask() == mask
    assert _mode(rundir.atomic_write_bytes(tmp_path / "a.bin", b"x")) == mode
    assert _mode(rundir.atomic_write_json(tmp_path / "b.json", {"k": 1})) == mode
    rundir.atomic_write_bytes(tmp_path / "a.bin", b"again")       # replacing a file: same rule
    assert _mode(tmp_path / "a.bin") == mode
    run = rundir.new_run_dir("theory", "t", out=tmp_path / "run")
    rundir.write_summary(run, "ok", 1)
    assert _mode(run / "summary.json") == mode


def test_umask_without_proc(umask, tmp_path, monkeypatch):
    """Where /proc/self/status is missing (macOS), the umask is read with os.umask and left as it was."""
    real_open = builtins.open

    def no_proc(path, *a, **k):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)

    umask(0o027)
    monkeypatch.setattr(builtins, "open", no_proc)
    assert rundir.current_umask() == 0o027
    assert rundir.current_umask() == 0o027           # unchanged by the first read
    assert _mode(rundir.atomic_write_bytes(tmp_path / "c", b"x")) == 0o640


def test_checkpoints_respect_the_umask(umask, tmp_path):
    torch = pytest.importorskip("torch")
    from empirical import checkpoint
    umask(0o027)
    path = checkpoint.save(tmp_path, 5, {"w": torch.zeros(2)})
    assert _mode(path) == 0o640 and _mode(path.with_name(path.name + ".sha256")) == 0o640
