"""Bad input to ``python -m empirical.run``: exit status 2, one line on stderr, no traceback, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from empirical import run

REPO = Path(__file__).resolve().parents[2]

BAD = [
    (["nope"], "unknown preset"),
    ([], "missing PRESET"),
    (["smoke", "--lr", "-0.1"], "--lr"),
    (["smoke", "--lr", "nan"], "--lr"),
    (["smoke", "--lr", "abc"], "not a number"),
    (["smoke", "--ema-decays", "0.99,1.5"], "outside [0, 1)"),
    (["smoke", "--two-point-gaps", "500"], "gap 500"),
    (["smoke", "--arch", "resnet99"], "--arch"),
    (["smoke", "--schedule", "exponential"], "--schedule"),
    (["smoke", "--bn-mode", "magic"], "--bn-mode"),
    (["smoke", "--unknown-flag", "3"], "unrecognized"),
    (["smoke", "--batch-size", "0"], "--batch-size"),
    (["smoke", "--batch-size", "100000"], "batch size"),          # larger than the training set
    (["smoke", "--device", "tpu"], "--device"),
    (["smoke", "--branch-from", "missing.pt", "--branch-schedule", "half"], "--branch-from"),
    (["smoke", "--branch-from", "x.pt", "--branch-schedule", "quarter"], "--branch-schedule"),
    (["smoke", "--branch-from", "x.pt", "--branch-schedule", "half", "--resume", "--out", "b"], "without --resume"),
    (["cifar10"], "cifar10"),                                       # DataError: no --data-dir
    (["smoke", "--resume", "--out", "nowhere"], "not a run directory"),
    (["--resume"], "--resume needs --out"),                         # was a KeyError traceback
    (["digits", "--eval-dense-until", "99999"], "--eval-dense-until"),
]


def test_command_line_is_validated_without_importing_torch():
    """Bad input is refused before torch is imported (it used to take 5-30 s to say so)."""
    code = ("import sys; from empirical import run; rc = run.cli(['digits', '--lr', '-1']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["2", "False"] and "--lr" in out.stderr


@pytest.mark.parametrize("argv, words", BAD)
def test_bad_input_exit_2_one_line_nothing_written(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no --out folder


def test_out_nonempty_without_resume_refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("x")
    assert run.cli(["smoke", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--resume" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["keep.txt"]


def test_real_process_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "empirical.run", "smoke", "--ema-decays", "2"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_closed_stdout_does_not_kill_the_run(tmp_path):
    """`python -m empirical.run ... | head -1`: the reader goes away after the first line; training must finish."""
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "empirical.run", "smoke", "--steps", "60", "--eval-every", "10",
                          "--out", str(out)], cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"
