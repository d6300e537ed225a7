"""`python -m theory.predict` run as a command: schedules with one milestone, the LR where an average starts, refused
--out folders, bad values, and the questions beyond one average (curvature in the answer, --from-report, several
decays, --target-lr, --batch-scale). Expected values come from the closed forms of theory.md (§2.4, §2.6,
§3.3-§3.5), worked out here, never from the code under test."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from theory import predict


def run(*args, out=None):
    cmd = [sys.executable, "-m", "theory.predict", *args]
    if out is not None:
        cmd += ["--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def run_json(tmp_path, *args):
    r = run(*args, "--json", out=tmp_path / "run")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def v_inf(alpha, mu=0.0, s2=1.0):
    """Heavy-ball stationary variance (1+μ)ασ²/((1−μ)(2(1+μ)−α)), theory.md §2.6 (§2.4 at μ = 0)."""
    return (1 + mu) * alpha * s2 / ((1 - mu) * (2 * (1 + mu) - alpha))


def alpha_eq(var, s2=1.0):
    """Inverse of v∞ = ασ²/(2−α): α = 2r/(1+r), r = var/σ² (theory.md §3.3)."""
    r = var / s2
    return 2 * r / (1 + r)


def ema_var(alpha, gamma):
    """Var(EMA)/v∞ = β(1+aγ)/((1+γ)(1−aγ)) times v∞ (theory.md §3.3, σ² = 1)."""
    a, b = 1 - alpha, 1 - gamma
    return v_inf(alpha) * b * (1 + a * gamma) / ((1 + gamma) * (1 - a * gamma))


# ------------------------------------------------------------------------------------------ crashes, wrong values

def test_step_schedule_with_one_milestone_runs(tmp_path):
    # used to be TypeError: 'int' object is not iterable. EMA starts at 2000, after the milestone: λ = 0.05·0.1
    res = run_json(tmp_path, "--schedule", "step:milestones=100", "--lr", "0.05")
    assert res["lr"] == pytest.approx(0.005, rel=1e-12)
    assert res["iterate_variance"] == pytest.approx(v_inf(0.005), rel=1e-12)


def test_piecewise_with_one_boundary_runs(tmp_path):
    res = run_json(tmp_path, "--schedule", "piecewise:boundaries=100,lrs=0.01", "--lr", "0.05")
    assert res["lr"] == pytest.approx(0.01, rel=1e-12)


@pytest.mark.parametrize("avg, t0", [(["--avg", "two-point", "--gap", "100"], 100),
                                     (["--avg", "points", "--points", "3", "--gap", "60"], 120)])
def test_two_point_and_points_use_the_lr_where_the_average_starts(tmp_path, avg, t0):
    # step:milestones=50+1000,factor=0.5: λ = 0.025 on [50, 1000), where the average starts (t0 = 100 / 120)
    res = run_json(tmp_path, "--schedule", "step:milestones=50+1000,factor=0.5", *avg, "--steps", "400")
    assert res["lr"] == pytest.approx(0.025, rel=1e-12)
    assert res["iterate_variance"] == pytest.approx(v_inf(0.025), rel=1e-12)
    assert res["equivalent_lr"] == pytest.approx(res["equivalent_lr_scalar"], rel=1e-9)   # one direction: equal
    if avg[1] == "two-point":   # Var z = v∞(1 + a^k)/2 (§3.5), a = 1 − α, k = 100
        var = v_inf(0.025) * (1 + 0.975 ** 100) / 2
        assert res["averaged_variance"] == pytest.approx(var, rel=1e-10)
        assert res["equivalent_lr"] == pytest.approx(alpha_eq(var), rel=1e-9)


def test_out_under_a_file_one_line_exit_1(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = run("--steps", "50", "--json", out=f / "run")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and "--out" in r.stderr and r.stdout == ""


def test_non_empty_out_is_refused_before_any_work(tmp_path, monkeypatch):
    # an existing non-empty --out used to be refused only after the whole computation (7 s at 10^4 directions)
    out = tmp_path / "used"
    out.mkdir()
    (out / "summary.json").write_text("{}")

    def must_not_run(*a, **k):
        raise AssertionError("computed before refusing --out")

    monkeypatch.setattr(predict, "forward", must_not_run)
    with pytest.raises(predict.rundir.RunDirError, match="not an empty directory"):
        predict.main(["--steps", "50", "--json", "--out", str(out)])
    assert (out / "summary.json").read_text() == "{}"


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs /sys")
def test_out_in_sys_one_line_exit_1(tmp_path):
    r = run("--steps", "50", "--json", out="/sys/avglr-test-run")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_read_only_folder_one_line_exit_1(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run("--steps", "50", "--json", out=ro / "run")
    finally:
        ro.chmod(0o755)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--steps", "1000000000000"], ["--steps", "1,000,000,000"]),
    (["--spectrum", "logspace:1e-4:1:100000000000"], ["--spectrum", "1,000,000"]),
    (["--curvature", "-2"], ["--curvature", "> 0"]),
    (["--schedule", "cosine:start=abc"], ["--schedule", "start", "integer"]),
    (["--schedule", "step:milestones=x"], ["--schedule", "milestones", "integer"]),
    (["--schedule", "cosine:bogus=1"], ["--schedule", "bogus", "start"]),
    (["--decay", "0.99,1.5"], ["--decay", "[0, 1)"]),
    (["--target-lr", "0.01", "--avg", "two-point"], ["--target-lr", "ema"]),
])
def test_bad_values_name_the_flag_and_the_limit(tmp_path, args, words):
    out = tmp_path / "never"
    r = run(*args, out=out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr
    assert not out.exists()


def test_help_says_json_still_writes_a_run_directory():
    text = predict.build_parser().format_help()
    assert "still written" in text and "runs/theory" in text


# ------------------------------------------------------------------------------------------------ the questions

def test_curvature_is_in_the_answer_and_scales_the_equivalent_lr(tmp_path):
    # only α = λh matters: h = 9.7 at λ = 0.01 is α = 0.097, so λ_eq(h) = α_eq(0.097, γ)/9.7
    res = run_json(tmp_path, "--curvature", "9.7", "--lr", "0.01", "--decay", "0.999")
    assert res["curvature"] == 9.7
    assert res["equivalent_lr"] == pytest.approx(alpha_eq(ema_var(0.097, 0.999)) / 9.7, rel=1e-9)
    r = run("--curvature", "9.7", "--lr", "0.01", "--steps", "100", out=tmp_path / "human")
    assert "h=9.7" in r.stdout.splitlines()[0]


def test_spectrum_summary_in_json(tmp_path):
    res = run_json(tmp_path, "--spectrum", "logspace:1e-2:1:5", "--steps", "200")
    assert res["curvature"] == {"directions": 5, "min": pytest.approx(0.01), "median": pytest.approx(0.1),
                                "max": pytest.approx(1.0)}


def test_from_report_takes_curvatures_noise_lr_and_momentum(tmp_path):
    rep = tmp_path / "report"
    rep.mkdir()
    cal = {"lr": 0.05, "momentum": 0.9, "h": [2.0, 0.1], "noise_mass": [0.3, 4.0], "lam_eff": 0.5,
           "window": [10, 20], "extra": {"ignored": True}}
    (rep / "metrics.json").write_text(json.dumps({"setups": [{"calibration": cal, "name": "x"}], "other": 1}))
    res = run_json(tmp_path, "--from-report", str(rep), "--avg", "ema", "--decay", "0.99", "--steps", "300")
    assert res["lr"] == 0.05 and res["momentum"] == 0.9
    assert res["curvature"]["directions"] == 2 and res["curvature"]["max"] == 2.0
    np.testing.assert_allclose(res["iterate_variance"], v_inf(0.05 * np.array([2.0, 0.1]), 0.9, np.array([0.3, 4.0])),
                               rtol=1e-9)
    res2 = run_json(tmp_path / "b", "--from-report", str(rep / "metrics.json"), "--lr", "0.02", "--steps", "300")
    assert res2["lr"] == 0.02                                            # an explicit --lr wins


def test_from_report_bad_file_one_line(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"setups": []}))
    r = run("--from-report", str(tmp_path), out=tmp_path / "never")
    assert r.returncode == 2 and "--from-report" in r.stderr and "Traceback" not in r.stderr


def test_several_decays_one_row_each(tmp_path):
    res = run_json(tmp_path, "--avg", "ema", "--lr", "0.05", "--decay", "0.99,0.995,0.999", "--steps", "3000")
    rows = res["decays"]
    assert [r["decay"] for r in rows] == [0.99, 0.995, 0.999]
    # theory.md §3.3 anchor (α = 0.05, γ = 0.995): α_eq = 4.556101e-3; the others from the closed form
    assert rows[1]["equivalent_lr"] == pytest.approx(4.556101e-3, rel=5e-7)
    for r in rows:
        assert r["equivalent_lr"] == pytest.approx(alpha_eq(ema_var(0.05, r["decay"])), rel=1e-9)
        assert r["averaged_variance"] == pytest.approx(ema_var(0.05, r["decay"]), rel=1e-9)
        assert 0 <= r["max_rel_err"]["variance"] < 0.2


def test_target_lr_gives_the_decay_that_acts_like_it(tmp_path):
    res = run_json(tmp_path, "--avg", "ema", "--lr", "0.05", "--target-lr", "0.002", "--steps", "1000")
    g = res["target"]["decay"]
    assert alpha_eq(ema_var(0.05, g)) == pytest.approx(0.002, rel=1e-6)          # round trip through §3.3
    assert res["target"]["decay_rule"] == pytest.approx(1 - 1 / (1 / 0.002 - 1 / 0.05), rel=1e-12)


def test_target_lr_gives_the_swa_window(tmp_path):
    res = run_json(tmp_path, "--avg", "swa", "--lr", "0.05", "--target-lr", "0.005", "--steps", "1000")
    n = res["target"]["window"]

    def swa_var(n):   # theory.md §3.4 closed form, α = 0.05
        a = 0.95
        return v_inf(0.05) / n * ((1 + a) / (1 - a) - 2 * a * (1 - a ** n) / (n * (1 - a) ** 2))
    assert swa_var(n) <= v_inf(0.005) < swa_var(n - 1)                        # the smallest window that reaches it


def test_target_above_training_lr_says_so(tmp_path):
    res = run_json(tmp_path, "--avg", "ema", "--lr", "0.05", "--target-lr", "0.1", "--steps", "500")
    assert "below" in res["target"]["note"]


def test_batch_scale_rules_and_exact_values(tmp_path):
    res = run_json(tmp_path, "--avg", "ema", "--lr", "0.05", "--decay", "0.999", "--batch-scale", "4",
                   "--steps", "4000")
    b = res["batch_scale"]
    assert b["lr_rule"] == pytest.approx(0.2) and b["decay_rule"] == pytest.approx(0.999 ** 4)
    # same stationary variance with σ²/4: α'/(2−α') = 4·α/(2−α) → α' = 2r/(1+r)
    r = 4 * 0.05 / 1.95
    assert b["lr_exact_same_variance"] == pytest.approx(2 * r / (1 + r), rel=1e-9)
    assert b["rule_stationary_variance_error"] == pytest.approx(3 * 0.05 / (2 - 4 * 0.05), rel=1e-12)
    assert b["max_kappa_stable"] == pytest.approx(2 / 0.05)
    assert b["rule_diverges"] is False and 0 < b["rule_error_along_trajectory"]["loss_raw"] < 0.2


def test_batch_scale_past_the_stability_edge_says_diverges(tmp_path):
    res = run_json(tmp_path, "--lr", "0.5", "--batch-scale", "5", "--steps", "500")    # κα = 2.5 ≥ 2
    assert res["batch_scale"]["rule_diverges"] is True
    assert res["batch_scale"]["rule_stationary_variance_error"] is None      # inf → null in strict JSON
