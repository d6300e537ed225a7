"""compare.branch_prediction: predictions written before a branch runs, checked against an independent derivation,
the hash contract, and the judging of branch runs by the per-seed rule."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import synthetic_runs
from common import prediction
from compare import branch_prediction as bp
from compare.calibrate import calibrate
from compare.load import group_runs, load_runs
from compare.pairs import SpectrumFit

T0, END = 2500, 4000


@pytest.fixture(scope="module")
def setup_cal(synth_runs):
    setup = group_runs(load_runs(synth_runs))[0]
    return setup, calibrate(setup, window_steps=(2000, T0))


def _torch_sgd_excess(h, s, lr_fn, lr0: float, mu: float, t0: int, steps) -> np.ndarray:
    """Expected excess ½Σh·Var(x_t) by a 2×2 Lyapunov recursion on (x_t, x_{t−1}), written here by hand in PyTorch's
    convention (velocity buffer v ← μv + g, x ← x − λ_t·v: after an LR change the carried displacement is rescaled
    by λ_t/λ_{t−1}), started at the stationary covariance at lr0 (found by iterating to convergence)."""
    out = np.zeros(len(steps))
    for hh, ss in zip(h, s):
        def step(P, a, r):
            A = np.array([[1 + mu * r - a, -mu * r], [1.0, 0.0]])
            P = A @ P @ A.T
            P[0, 0] += a * a * ss
            return P
        P = np.zeros((2, 2))
        for _ in range(20000):
            P = step(P, lr0 * hh, 1.0)
        vals, prev = {}, lr0
        for t in range(t0, int(max(steps)) + 1):
            vals[t] = P[0, 0]
            lr = lr_fn(t)
            P = step(P, lr * hh, lr / prev)
            prev = lr
        out += 0.5 * hh * np.array([vals[int(x)] for x in steps])
    return out


def test_curves_match_an_independent_lyapunov_recursion(setup_cal, synth_cfg):
    """With the true spectrum in place of the fitted one, the predicted parent and λ/2-branch excess equal a
    recursion written apart from theory.moments (above), transient included."""
    _, cal = setup_cal
    truth = dataclasses.replace(cal, h=np.array(synth_cfg.h), s=np.array(synth_cfg.s))
    steps = np.arange(T0, END + 1, 50)
    parent = bp.parent_excess(truth, T0, steps)
    branch = bp.branch_excess(truth, bp.PlannedBranch("half", "half", None), T0, steps)
    lam, mu = synth_cfg.lr, synth_cfg.momentum
    want_parent = _torch_sgd_excess(synth_cfg.h, synth_cfg.s, lambda t: lam, lam, mu, T0, steps)
    want_branch = _torch_sgd_excess(synth_cfg.h, synth_cfg.s, lambda t: lam / 2, lam, mu, T0, steps)
    np.testing.assert_allclose(parent, want_parent, rtol=1e-6)
    np.testing.assert_allclose(branch, want_branch, rtol=1e-6)
    # far past the transient λ/2 about halves the excess (exactly half as λ_eff·h → 0; here λ_eff·h = 0.2)
    assert 0.45 < branch[-1] / parent[-1] < 0.55


def test_matched_switch_reaches_the_average(setup_cal):
    """match:ema_0.99 gives a constant LR below λ whose predicted window-mean gain is, by construction, the
    average's own predicted gain where a match exists (theory.matching), or the stated share of it where not."""
    setup, cal = setup_cal
    br = bp.plan_branch("match:ema_0.99", cal, setup, T0, END)
    assert br.schedule.startswith("constant:") and br.equivalent_of == "ema_0.99"
    lr_b = float(br.schedule.split(":")[1])
    assert 0 < lr_b < cal.lr
    doc = bp.predict_branch(cal, br, T0, END)
    m = br.match
    share = 1.0 if m["exists"] else m["reached_fraction"]
    assert doc["gain_pred"] == pytest.approx(share * m["gain"], rel=0.02)


def test_labels_that_cannot_be_planned_are_refused(setup_cal):
    setup, cal = setup_cal
    with pytest.raises(ValueError, match="record no average 'ema_0.5'"):
        bp.plan_branch("match:ema_0.5", cal, setup, T0, END)
    with pytest.raises(ValueError, match="unknown kind"):
        bp.plan_branch("cosine", cal, setup, T0, END)


def test_calibration_may_not_see_past_the_branch(synth_runs, tmp_path):
    with pytest.raises(ValueError, match="B ≤ T0"):
        bp.write_predictions(synth_runs, (2000, 3000), T0, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_cli_writes_one_file_per_seed_and_branch(synth_runs, tmp_path, capsys):
    out = tmp_path / "pred"
    assert bp.main([*map(str, synth_runs), "--calibrate", f"2000:{T0}", "--until", str(END), "--branch", "half",
                    "--branch", "match:swa", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["calibrated_on"] == [2000, T0] and plan["compared_on"] == [T0, END]
    assert len(plan["branches"]) == 2 * len(synth_runs)
    for row in plan["branches"]:
        assert prediction.sha256_of(row["file"]) == row["sha256"]
        doc = prediction.read_prediction(row["file"])
        assert doc["branch_step"] == T0 and doc["steps"][0] == T0 and doc["steps"][-1] == END
    assert "half: --branch-schedule half" in capsys.readouterr().out
    # a curvature that is not one is refused in one line before anything is written
    assert bp.main([*map(str, synth_runs), "--calibrate", f"2000:{T0}", "--drift-curvature", "-2",
                    "--out", str(tmp_path / "bad")]) == 2
    assert "--drift-curvature" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # a non-empty --out is refused, nothing overwritten
    before = (out / "plan.json").read_bytes()
    assert bp.main([*map(str, synth_runs), "--calibrate", f"2000:{T0}", "--out", str(out)]) == 2
    assert (out / "plan.json").read_bytes() == before


def _branch_with_prediction(tmp_path, synth_cfg, row, lr_fn):
    branch = {"t0": T0, "lr_fn": lr_fn, "name": row["schedule"], "spec": row["schedule"], "prediction": row["file"]}
    return synthetic_runs.write_run(tmp_path / f"b-{row['label'].replace(':', '-')}", synth_cfg, seed=row["seed"],
                                    branch=branch)


def test_judge_scores_each_branch_and_refuses_an_edited_prediction(synth_runs, synth_cfg, tmp_path):
    plan = bp.write_predictions(synth_runs, (2000, T0), T0, tmp_path / "pred", ["half"], END)
    lam = synth_cfg.lr
    runs = [_branch_with_prediction(tmp_path, synth_cfg, r, lambda t: lam / 2) for r in plan["branches"][:1]]
    setup = group_runs(load_runs([*synth_runs, *runs]))[0]
    res = bp.judge(setup)
    (cell,) = res["per_branch"]
    assert {"run", "schedule", "gain_pred", "gain_pred_se", "gain_obs", "gain_obs_se"} <= set(cell)
    assert cell["gain_obs"] > 0 and cell["n_steps"] > 10
    assert res["by_label"]["half"]["n_cells"] == 1
    # the parent's two-point average with the largest gap is what λ/2 stands in for (theory.md §3.5)
    assert cell["equivalent_of"].startswith("two_point") and "average_gain_obs" in cell
    # edit the prediction after the run: the cell is not compared, and says why
    path = plan["branches"][0]["file"]
    doc = json.loads(Path(path).read_text())
    doc["gain_pred"] *= 2
    Path(path).write_text(json.dumps(doc))
    res = bp.judge(setup)
    assert not res["per_branch"] and "changed after the branch ran" in res["not_compared"][0]["not_compared"]


def test_labels_with_one_schedule_share_a_prediction_and_a_run(synth_runs, synth_cfg, tmp_path):
    """Two labels that resolve to the same schedule text: one file per parent listing both, and the one branch run
    is judged once per label, each against the average it stands in for."""
    plan = bp.write_predictions(synth_runs[:1], (2000, T0), T0, tmp_path / "pred", ["half", "half"], END)
    (row,) = plan["branches"]
    assert row["labels"] == ["half", "half"]
    lam = synth_cfg.lr
    run = _branch_with_prediction(tmp_path, synth_cfg, row, lambda t: lam / 2)
    res = bp.judge(group_runs(load_runs([synth_runs[0], run]))[0])
    assert [c["label"] for c in res["per_branch"]] == ["half", "half"]
    assert res["per_branch"][0]["gain_obs"] == res["per_branch"][1]["gain_obs"]


# ------------------------------------------------------------------------------------------------- the drift

def _with_drift(cal, c, c_se, floor=None):
    """``cal`` with a D(τ) fit of its own spectrum carrying the drift c ± c_se (loss/step²) and the floor given."""
    fit = SpectrumFit(h=cal.h, s=cal.s, cov=np.zeros((2, 2)), chi2=0.0, dof=1, drift=c, drift_se=c_se,
                      h_bounds=(1e-6, 1e6))
    return dataclasses.replace(cal, fit=fit, floor=cal.floor if floor is None else floor, floor_se=0.0)


def test_drift_curvatures_are_bounded_by_settling_the_floor_and_stability(setup_cal):
    """h_d range by hand: the lag must have settled (α_eff ≥ 3/steps at the constant LR), may not cost more than the
    floor (c_hi/(2α_eff²) ≤ floor), and α = λh stays below 2(1 + μ)."""
    _, cal = setup_cal
    lam, mu = cal.lr, cal.momentum
    wide = bp.drift_bounds(_with_drift(cal, 1e-8, 1e-9, floor=1e6), 1000)
    assert wide.c_range == pytest.approx((0.8e-8, 1.2e-8))
    assert wide.curvature_range[0] == pytest.approx(3 / 1000 * (1 - mu) / lam, rel=1e-12)
    assert wide.curvature_range[1] == pytest.approx(0.99 * 2 * (1 + mu) / lam, rel=1e-12)
    tight = bp.drift_bounds(_with_drift(cal, 2e-6, 1e-6, floor=0.01), 1000)
    assert tight.c_range == pytest.approx((0.0, 4e-6))
    assert tight.curvature_range[0] == pytest.approx(np.sqrt(4e-6 / 0.02) * (1 - mu) / lam, rel=1e-12)
    # a floor of 0 leaves the lag no loss to cost: only the stiffest h_d; an unknown floor bounds nothing
    none_left = bp.drift_bounds(_with_drift(cal, 2e-6, 1e-6, floor=0.0), 1000)
    assert none_left.curvature_range[0] == none_left.curvature_range[1] == pytest.approx(0.99 * 2 * (1 + mu) / lam)
    unknown = bp.drift_bounds(_with_drift(cal, 2e-6, 1e-6, floor=float("nan")), 1000)
    assert unknown.curvature_range[0] == pytest.approx(3 / 1000 * (1 - mu) / lam, rel=1e-12)
    # the assumed h_d: the slowest calibrated scale, clipped into the range
    assert wide.curvature == pytest.approx(np.clip(cal.h.min(), *wide.curvature_range))
    fitted = _with_drift(cal, 1e-8, 1e-9)
    assert bp.drift_bounds(fitted, 1000, "none") is None and bp.drift_bounds(cal, 1000) is None   # cal: no D(τ) fit
    assert bp.drift_bounds(fitted, 1000, 0.3).curvature == 0.3
    for bad in ("fastest", -1.0, float("nan")):
        with pytest.raises(ValueError, match="--drift-curvature"):
            bp.drift_bounds(cal, 1000, bad)          # refused whether or not the calibration has a D(τ) fit


def test_drift_share_of_a_halving_is_the_difference_of_settled_lags(setup_cal):
    """Far past the relaxation the lag's cost at λ/2 is 4× the parent's: the drift's share of the gain tends to
    c(1 − μ)²/(2h_d²)·(1/λ² − 4/λ²) (theory.md §3.12, by hand), and it is linear in c."""
    _, cal = setup_cal
    c, h_d = 4e-6, 2.0
    cal = _with_drift(cal, c, 1e-6, floor=1.0)
    bounds = bp.drift_bounds(cal, 2000, h_d)
    lam, mu = cal.lr, cal.momentum
    relax = (1 - mu) / (lam / 2 * h_d)
    steps = np.arange(T0, T0 + int(400 * relax) + 1)
    part = bp.branch_drift(cal, bp.PlannedBranch("half", "half", None), T0, steps, bounds)
    want = c * (1 - mu) ** 2 / (2 * h_d ** 2) * (1 / lam ** 2 - 4 / lam ** 2)
    assert part["gain"] == pytest.approx(want, rel=0.02)
    assert part["gain_se"] == pytest.approx(abs(part["gain"]) * 1e-6 / c, rel=1e-9)
    lo, hi = part["gain_range"]
    assert lo < part["gain"] < hi <= 0          # a lower LR only ever lags further behind
    assert part["parent"][0] == pytest.approx(c * (1 - mu) ** 2 / (2 * lam ** 2 * h_d ** 2), rel=1e-9)


def test_prediction_with_drift_is_judged_beside_the_same_prediction_without_it(synth_runs, synth_cfg, setup_cal,
                                                                                 tmp_path, monkeypatch):
    cal = _with_drift(setup_cal[1], 5e-6, 1e-6, floor=1.0)
    monkeypatch.setattr(bp, "calibrate", lambda *a, **k: cal)      # the synthetic runs carry no D(τ) fit
    plan = bp.write_predictions(synth_runs, (2000, T0), T0, tmp_path / "pred", ["half"], END)
    row = plan["branches"][0]
    doc = prediction.read_prediction(row["file"])
    d = doc["drift"]
    assert d["assumption"] == "along the slowest calibrated scale" and len(d["gain_per_step"]) == len(doc["steps"])
    assert d["gain"] < 0
    # the curves carry the drift: their mean difference minus the drift's share is the noise-only gain
    noise_only = bp.predict_branch(cal, bp.PlannedBranch("half", "half", None), T0, END)
    assert doc["gain_pred"] - d["gain"] == pytest.approx(noise_only["gain_pred"], rel=1e-9)
    assert noise_only["drift"] is None and noise_only["gain_pred_se"] == d["gain_pred_se_without"]
    lam = synth_cfg.lr
    run = _branch_with_prediction(tmp_path, synth_cfg, row, lambda t: lam / 2)
    res = bp.judge(group_runs(load_runs([*synth_runs, run]))[0])
    (cell,) = res["per_branch"]
    assert {"gain_pred_drift", "gain_pred_drift_range", "drift_sensitive"} <= set(cell)
    score = res["by_label"]["half"]
    assert "the prediction without its drift term" in score["alternatives"]
    assert "the prediction without its drift term" not in score["null"]       # a reading of the model, not a null

