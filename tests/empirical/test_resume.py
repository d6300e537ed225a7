"""Crash safety: a run killed with SIGKILL (or stopped with SIGINT) and resumed equals, bit for bit on CPU, the
same run done in one go; corrupt checkpoints are detected and skipped; finished runs are not re-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from empirical import checkpoint, run
from common import rundir

REPO = Path(__file__).resolve().parents[2]
# 160 steps = 10 epochs of smoke; checkpoints every 10 steps (mid-epoch: 16 steps per epoch).
ARGS = ["smoke", "--steps", "160", "--eval-every", "20", "--checkpoint-every", "10", "--swa-start", "30",
        "--two-point-gaps", "7,25", "--curv-every", "0", "--bank-every", "3", "--probe-every", "40"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _signals_at_default() -> None:
    """The child's SIGINT and SIGHUP at their defaults, whatever the test session inherited: a suite started in the
    background (`cmd &` ignores SIGINT) or under nohup (ignores SIGHUP) would otherwise hand the run ignored
    signals, which it rightly keeps ignoring."""
    for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if s is not None:
            signal.signal(s, signal.SIG_DFL)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "empirical.run", *ARGS, "--out", str(out), *extra], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_signals_at_default)


def _wait_for_checkpoint(p: subprocess.Popen, out: Path) -> None:
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("*.sha256")) if (out / "checkpoints").exists() else True:
        assert p.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.002)


def _assert_same_run(a: Path, b: Path) -> None:
    ta, tb = (rundir.Trajectory.load(d / "trajectory.npz") for d in (a, b))
    assert sorted(ta.series) == sorted(tb.series)
    for k in ta.series:
        assert np.array_equal(ta[k], tb[k], equal_nan=True), k
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["status"] == sb["status"] == "ok" and sa["steps"] == sb["steps"] and sa["eval"] == sb["eval"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _start(out)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference, tmp_path):
    out = tmp_path / "killed"
    p = _start(out)
    _wait_for_checkpoint(p, out)
    p.kill()  # SIGKILL: no handler runs
    p.wait()
    steps = [int(x.name[5:14]) for x in checkpoint.list_checkpoints(out)]
    assert steps and max(steps) < 160, f"killed too late to test anything: {steps}"
    # a newer checkpoint that is garbage (e.g. a torn copy) must be detected and skipped
    bogus = checkpoint.path_for(out, 999)
    bogus.write_bytes(b"not a checkpoint")
    bogus.with_name(bogus.name + ".sha256").write_text("0" * 64 + "\n")
    r = subprocess.run([sys.executable, "-m", "empirical.run", "--out", str(out), "--resume"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "checksum mismatch" in r.stderr and r.stdout.strip().splitlines()[-1] == str(out)
    _assert_same_run(reference, out)
    again = subprocess.run([sys.executable, "-m", "empirical.run", "--out", str(out), "--resume"], cwd=REPO,
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout


@pytest.mark.slow
def test_sigint_writes_interrupted_and_resumes_identically(reference, tmp_path):
    out = tmp_path / "stopped"
    p = _start(out)
    _wait_for_checkpoint(p, out)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and (s["steps"] == 160 or checkpoint.path_for(out, s["steps"]).exists())
    rundir.load_run(out)  # valid run directory while interrupted
    r = subprocess.run([sys.executable, "-m", "empirical.run", "smoke", *ARGS[1:], "--out", str(out), "--resume"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_run(reference, out)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_ends_as_interrupted_with_a_resumable_checkpoint(tmp_path):
    # a closed ssh session sends SIGHUP: the run must end like Ctrl-C (exit 130, status "interrupted", a checkpoint
    # at the step it stopped), not die with summary.json at "running"
    out = tmp_path / "hup"
    p = _start(out)
    _wait_for_checkpoint(p, out)
    p.send_signal(signal.SIGHUP)
    assert p.wait() == 130, p.stderr.read()
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and (s["steps"] == 160 or checkpoint.path_for(out, s["steps"]).exists())
    assert p.stdout.read().strip().splitlines()[-1] == str(out)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_is_ignored_under_nohup(tmp_path):
    # `nohup python -m empirical.run ...` starts the run with SIGHUP ignored: it must stay ignored and the run finish
    out = tmp_path / "nohup"
    p = subprocess.Popen([sys.executable, "-m", "empirical.run", *ARGS, "--out", str(out)], cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _wait_for_checkpoint(p, out)
    p.send_signal(signal.SIGHUP)
    assert p.wait() == 0, p.stderr.read()
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"


def test_resume_with_different_flags_refuses(tmp_path, capsys):
    out = tmp_path / "r"
    run.main(["smoke", "--steps", "10", "--eval-every", "5", "--swa-start", "2", "--two-point-gaps", "3", "--out",
              str(out)])
    capsys.readouterr()
    assert run.cli(["--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "lr" in capsys.readouterr().err
    assert run.cli(["--out", str(out), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_corrupt_checkpoints_fall_back(tmp_path):
    import torch

    for step in (10, 20):
        checkpoint.save(tmp_path, step, {"w": torch.full((3,), float(step))})
    newest = checkpoint.path_for(tmp_path, 20)
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated
    warnings = []
    state, path = checkpoint.load_latest(tmp_path, warn=warnings.append)
    assert path == checkpoint.path_for(tmp_path, 10) and state["w"].tolist() == [10.0] * 3
    assert len(warnings) == 1 and "checksum mismatch" in warnings[0]
    checkpoint.save(tmp_path, 30, {"w": torch.zeros(1)})
    checkpoint.save(tmp_path, 40, {"w": torch.zeros(1)})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_000000040.pt", "step_000000030.pt"]


# The step-40 checkpoint write fails the way a full disk fails (ENOSPC at the final rename of the atomic writer),
# in a real process: every earlier file must stay valid, no temp file may be left, and --resume must finish the run
# bit for bit. Without the temp-file + os.replace writer, a torn step_40.pt would be left under its final name.
_FULL_DISK_AT_40 = """
import errno, os, sys
real_replace = os.replace
def replace(src, dst):
    if os.path.basename(dst).startswith("step_000000040.pt"):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))
    return real_replace(src, dst)
os.replace = replace
from empirical import run
sys.exit(run.cli(sys.argv[1:]))
"""


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_keeps_earlier_files_and_resumes(reference, tmp_path):
    out = tmp_path / "full"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_AT_40, *ARGS, "--out", str(out)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "intact" in err[0], r.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temp file was left behind"
    state, path = checkpoint.load_latest(out, warn=pytest.fail)
    assert path == checkpoint.path_for(out, 30) and state["step"] == 30
    loaded = rundir.load_run(out)          # config, env, trajectory and summary all still parse
    assert loaded.summary["status"] == "running" and loaded.summary["steps"] == 40
    res = subprocess.run([sys.executable, "-m", "empirical.run", "--out", str(out), "--resume"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    _assert_same_run(reference, out)


@pytest.mark.slow
def test_interrupted_branch_resumes_with_its_own_schedule(tmp_path):
    """A branch stopped with SIGINT and resumed with --resume alone (what scripts/reproduce.py does after a crash)
    equals the branch run in one go, and keeps the branch schedule (λ/2 from the branch step) after the resume."""
    parent = tmp_path / "parent"
    assert run.main([*ARGS, "--checkpoint-keep-every", "40", "--out", str(parent)]) == parent
    branch = ["--branch-from", str(checkpoint.path_for(parent, 40)), "--branch-schedule", "half"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert run.main(["--out", str(full), *branch]) == full
    p = subprocess.Popen([sys.executable, "-m", "empirical.run", "--out", str(part), *branch], cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_signals_at_default)
    deadline = time.time() + 120
    while not [c for c in checkpoint.list_checkpoints(part) if int(c.name[5:14]) > 40] if part.exists() else True:
        assert p.poll() is None and time.time() < deadline, "branch ended before its first checkpoint"
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130, p.stderr.read()
    assert json.loads((part / "summary.json").read_text())["status"] == "interrupted"
    r = subprocess.run([sys.executable, "-m", "empirical.run", "--out", str(part), "--resume"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_run(full, part)
    t, tp = rundir.Trajectory.load(part / "trajectory.npz"), rundir.Trajectory.load(parent / "trajectory.npz")
    s = t["train/step"]
    np.testing.assert_array_equal(t["train/lr"][s >= 40], tp["train/lr"][tp["train/step"] >= 40] / 2)
    np.testing.assert_array_equal(t["train/lr"][s < 40], tp["train/lr"][tp["train/step"] < 40])
