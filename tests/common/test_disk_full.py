"""A full disk (or any write error the OS reports without a file name: ENOSPC, EIO, EDQUOT) gives one line that
names the file being written: common.rundir's writers attach their path, and the command lines print it."""
from __future__ import annotations

import errno
import os
import re

import pytest

from common import rundir


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # as the kernel reports it: no file name


def test_atomic_write_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.os, "fsync", _disk_full)
    target = tmp_path / "run" / "summary.json"
    with pytest.raises(OSError) as info:
        rundir.atomic_write_json(target, {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert rundir.os_error_text(info.value) == f"cannot read or write {target}: No space left on device"
    assert list(target.parent.iterdir()) == []                  # the temp file is gone, nothing half written


def test_naming_keeps_a_file_name_the_os_gave():
    with pytest.raises(FileNotFoundError) as info, rundir.naming("other"):
        open("/nonexistent/dir/x")
    assert info.value.filename == "/nonexistent/dir/x"
    assert rundir.os_error_text(OSError(errno.EIO, "Input/output error")) == \
        "cannot read or write a file: Input/output error"


def test_empirical_run_says_which_file(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from empirical import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.os, "fsync", _disk_full)
    out = tmp_path / "r"
    assert run.cli(["smoke", "--steps", "4", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    m = re.search(r"empirical\.run: error: cannot read or write (\S+): No space left on device", err)
    assert m, err
    assert m.group(1).startswith(str(out) + os.sep) and m.group(1).endswith(".json"), err


def test_figures_build_says_which_file(tmp_path, monkeypatch, capsys):
    """The file that could not be written, not only the output folder (compare.report prints the same line)."""
    from figures import build

    monkeypatch.setattr(rundir.os, "fsync", _disk_full)
    out = tmp_path / "o"
    assert build.main(["--out", str(out)]) == 1            # theory-only figures: no run directory needed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {out / 'nqm_equivalence_grid.png'}: No space left" in err, err
