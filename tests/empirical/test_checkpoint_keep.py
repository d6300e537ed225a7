"""Checkpoints for the branch workflow: a run keeps the checkpoints --branch-from and the post-hoc
averages start from (EMA start, SWA start, decay start); a missing --branch-from file lists what the run has and
how to keep more; ema:GAMMA / swa without H say where H comes from, or take it from --from-report."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from empirical import flags as F, presets, schedules
from empirical import run

REPO = Path(__file__).resolve().parents[2]


def test_branch_points_of_the_digits_preset():
    # the digits preset: EMAs from step 200, SWA from 1,050, constant LR to 2,100 (then the cosine)
    assert presets.PRESETS["digits"].branch_points() == (200, 1050, 2100)
    assert F.from_cli(["digits", "--schedule", "constant"]).branch_points() == (200, 1050)   # no decay start
    assert F.from_cli(["digits", "--swa-start", "none", "--ema-decays", ""]).branch_points() == (2100,)
    assert F.from_cli(["digits", "--no-checkpoint-branch-points"]).branch_points() == ()
    assert F.from_cli(["digits", "--max-steps", "500"]).branch_points() == (200,)    # only steps this call reaches


def test_save_never_deletes_kept_steps(tmp_path):
    torch = pytest.importorskip("torch")
    from empirical import checkpoint
    for step in (10, 20, 30, 40, 50, 60):
        checkpoint.save(tmp_path, step, {"w": torch.zeros(1)}, keep_steps=(20, 30))
    # newest two (60, 50) plus the kept steps (30, 20); 10 and 40 pruned
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(tmp_path)] == [60, 50, 30, 20]


# Parent: 12 smoke steps, EMAs from 3, SWA from 6, cosine from 9, no periodic checkpoints, measurements off (cheap).
PARENT = ["smoke", "--steps", "12", "--ema-start", "3", "--swa-start", "6", "--schedule", "cosine", "--decay-start",
          "9", "--checkpoint-every", "0", "--eval-every", "12", "--probe-every", "0", "--align-every", "0",
          "--curv-every", "0", "--bank-every", "0", "--two-point-gaps", "", "--sketch-dim", "0"]


@pytest.mark.slow
def test_default_run_keeps_its_branch_points_and_branches_from_one(tmp_path, capsys):
    from empirical import checkpoint
    parent = tmp_path / "parent"
    assert run.main([*PARENT, "--out", str(parent)]) == parent
    # before: only the end (--checkpoint-every 0); now also steps 3 (EMA), 6 (SWA), 9 (decay start)
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(parent)] == [12, 9, 6, 3]
    branch = tmp_path / "branch"
    assert run.main(["--out", str(branch), "--branch-from", str(checkpoint.path_for(parent, 6)),
                     "--branch-schedule", "half"]) == branch
    assert json.loads((branch / "summary.json").read_text())["status"] == "ok"
    capsys.readouterr()
    # a step the parent never checkpointed: one line naming the ones it has and how to keep more
    assert run.cli(["--out", str(tmp_path / "b2"), "--branch-from", str(checkpoint.path_for(parent, 4)),
                    "--branch-schedule", "half"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has steps 3, 6, 9, 12" in err and "--checkpoint-keep-every" in err, err
    assert not (tmp_path / "b2").exists()


def test_missing_checkpoint_lists_the_run_s_checkpoints_without_torch(tmp_path):
    ck = tmp_path / "parent" / "checkpoints"
    ck.mkdir(parents=True)
    for step in (200, 600, 1500):
        (ck / f"step_{step:09d}.pt").write_bytes(b"x")
        (ck / f"step_{step:09d}.pt.sha256").write_text("x")
    (ck / "step_000001000.pt").write_bytes(b"x")          # cut short (no digest): not offered
    code = ("import sys; from empirical import run; "
            f"rc = run.cli(['--out', {str(tmp_path / 'b')!r}, '--branch-from', "
            f"{str(ck / 'step_000000500.pt')!r}, '--branch-schedule', 'half']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr.count("\n") == 1 and "no such checkpoint" in out.stderr
    assert "has steps 200, 600, 1500." in out.stderr and "--checkpoint-every N --checkpoint-keep-every N" in out.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("spec", ["ema:0.99", "swa"])
def test_branch_schedule_without_h_says_where_h_comes_from(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.cli(["--out", "b", "--branch-from", "x.pt", "--branch-schedule", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs H" in err and "--from-report" in err and "metrics.json" in err, err
    assert list(tmp_path.iterdir()) == []


def _report(folder: Path, lr: float, momentum: float, h: float, noise: float) -> Path:
    """A compare.report folder holding only what --from-report reads: setups[0].calibration of metrics.json."""
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"schema_version": 1, "setups": [{"calibration": {
        "lr": lr, "momentum": momentum, "h": [h], "noise_mass": [noise]}}]}))
    return folder


def _h_of(spec: str) -> float:
    return float(spec.rsplit(":", 1)[1])


def test_from_report_swa_h_is_the_calibrated_curvature(tmp_path):
    # one curvature scale h: the cooldown constant is τ = 1/(λ_eff h) (theory.md §3.4), and swa:H uses
    # τ = 1/(λ_eff H), so H = h exactly
    rep = _report(tmp_path / "rep", lr=0.05, momentum=0.9, h=3.7, noise=1.0)
    given, notes = F.expand(F.parse(["--branch-from", "x.pt", "--branch-schedule", "swa", "--from-report", str(rep)]))
    assert given["branch_schedule"].startswith("swa:") and _h_of(given["branch_schedule"]) == pytest.approx(3.7,
                                                                                                         rel=1e-5)
    assert str(rep) in notes[0]


def test_from_report_ema_h_gives_the_exact_equivalent_lr(tmp_path):
    # μ = 0, one scale h = 1, λ = 0.05 (α = 0.05), σ² = 1, γ = 0.99 (β = 0.01). By hand, for the AR(1) iterate
    # x' = a x + α ε (a = 1 − α): Var x = v = α σ²/(2 − α); the EMA y = β Σ γ^i x_{t−i} has
    # Var y = β² v (1 + aγ) / ((1 − γ²)(1 − aγ)); the constant LR with that stationary variance has
    # α_eq σ²/(2 − α_eq) = Var y, i.e. α_eq = 2 Var y / (σ² + Var y); H = β(λ/λ_eq − 1)/λ_eff (λ_eff = λ).
    lr, gamma = 0.05, 0.99
    alpha, a, beta = lr, 1 - lr, 1 - gamma
    v = alpha / (2 - alpha)
    var_y = beta ** 2 * v * (1 + a * gamma) / ((1 - gamma ** 2) * (1 - a * gamma))
    lr_eq = 2 * var_y / (1 + var_y)
    want = beta * (lr / lr_eq - 1) / lr
    rep = _report(tmp_path / "rep", lr=lr, momentum=0.0, h=1.0, noise=1.0)
    given, notes = F.expand(F.parse(["--branch-from", "x.pt", "--branch-schedule", "ema:0.99",
                                     "--from-report", str(rep)]))
    spec = given["branch_schedule"]
    assert spec.startswith("ema:0.99:") and _h_of(spec) == pytest.approx(want, rel=1e-5)
    # the harmonic rule is only approximate: H is not h (= 1) but what makes the rule return the exact λ_eq
    assert not math.isclose(want, 1.0, rel_tol=1e-3)
    assert schedules.branch_lr(spec, lr, 0.0, 0).lr_at([0])[0] == pytest.approx(lr_eq, rel=1e-5)


@pytest.mark.parametrize("argv, words", [
    (["--branch-from", "x.pt", "--branch-schedule", "half", "--from-report", "REP"], "needs none"),
    (["--branch-from", "x.pt", "--branch-schedule", "ema:0.99", "--from-report", "nowhere"], "cannot read"),
    (["--out", "b", "--from-report", "REP"], "--from-report DIR fills in the H"),
])
def test_from_report_bad_input(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "REP", lr=0.05, momentum=0.9, h=1.0, noise=1.0)
    assert run.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REP"]
