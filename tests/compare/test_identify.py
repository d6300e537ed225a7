"""What the D(τ) fit identifies (compare/pairs.py, compare/checks.py) and the verdict rule with its nulls
(compare/verdicts.py). Expected values come from the model's closed form fed with chosen parameters, or by hand."""
from types import SimpleNamespace

import numpy as np
import pytest

from compare import checks, pairs, verdicts

LR, MU = 0.05, 0.9
LAGS = np.array([10, 20, 50, 100, 200, 300, 500, 1000])


def _exact(h, s, c=0.0, rel_se=0.01) -> pairs.LagStructure:
    D = pairs.nqm_structure(h, s, LR, MU, LAGS, c)
    return pairs.LagStructure(LAGS, D, rel_se * D, np.full(LAGS.size, 50))


def test_drift_column_is_c_tau_squared():
    base = pairs.nqm_structure([0.2], [1.0], LR, MU, LAGS)
    assert pairs.nqm_structure([0.2], [1.0], LR, MU, LAGS, 3e-8) - base == pytest.approx(3e-8 * LAGS ** 2.0)


def test_two_resolved_scales_are_recovered_and_identified():
    """Fast scale relaxing in 10 steps, slow in 1,000 (inside the 1,000-step lag grid), no drift."""
    fit = pairs.select_fit(_exact([0.2, 0.002], [1.0, 1e4]), LR, MU, 2)
    assert fit.h == pytest.approx([0.002, 0.2], rel=0.02) and fit.s == pytest.approx([1e4, 1.0], rel=0.05)
    assert fit.identified().all()
    assert fit.h_range[0, 0] < 0.002 < fit.h_range[0, 1]
    assert not fit.drift_identified()


def test_pure_drift_comes_out_as_drift_not_as_a_flat_noisy_scale():
    """One fast noise scale plus c·τ²: the fit keeps one scale and puts the rest in c."""
    fit = pairs.select_fit(_exact([0.2], [1.0], c=1e-8), LR, MU, 2)
    assert fit.h.size == 1 and fit.h[0] == pytest.approx(0.2, rel=0.02)
    assert fit.drift == pytest.approx(1e-8, rel=0.05) and fit.drift_identified()
    assert fit.identified().all()


def test_a_scale_on_the_fits_limit_is_not_identified():
    """A slow scale relaxing over 20,000 steps (20× the longest lag) only adds D ∝ τ: the fit puts its h on the
    fit's lower limit, the range the data allow reaches the bottom of the scan, and it is reported as not identified
    (drift term off, so the straight line cannot be read as drift instead)."""
    D = pairs.nqm_structure([0.2, 1e-4], [1.0, 1e7], LR, MU, LAGS)
    fit = pairs.fit_spectrum(pairs.LagStructure(LAGS, D, 0.01 * D, np.full(LAGS.size, 50)), LR, MU, 2, drift=False)
    assert fit.at_bound().tolist() == [True, False] and fit.identified().tolist() == [False, True]
    assert fit.h_range[0, 0] < fit.h_bounds[0] and fit.h[1] == pytest.approx(0.2, rel=0.01)


def _traj(series):
    class T(dict):
        series = property(lambda self: self)
    return T(series)


def test_structure_uses_only_pairs_inside_the_window_and_lags_up_to_a_third_of_it():
    """Raw loss 5 before the window and 1 inside; two-point losses set so that D = 0.8 for in-window pairs and 40
    for pairs reaching back before the window (the descent). Only 0.8 may come out; the lag longer than a third of
    the window is dropped and said so."""
    ev = np.arange(0, 1001, 10)
    window = (400, 1000)                                    # 600 steps: lags up to 200 usable
    raw = np.where(ev < 400, 5.0, 1.0)
    tr = {"eval/step": ev, "eval/test_loss_raw": raw}
    for k in (10, 50, 200, 300):
        back = np.interp(ev - k, ev, raw, left=np.nan)
        d_true = np.where(ev - k >= 400, 0.8, 40.0)
        tr[f"eval/test_loss_two_point_k{k}"] = 0.5 * (raw + back) - d_true / 8
    run = SimpleNamespace(trajectory=_traj(tr))
    ls = pairs.structure(run, window)
    assert ls.lags.tolist() == [10, 50, 200]
    assert ls.D == pytest.approx([0.8, 0.8, 0.8])
    assert ls.pairs.tolist() == [(1000 - 400 - k) // 10 + 1 for k in (10, 50, 200)]
    assert [k for k, _ in ls.dropped] == [300]


def test_lag_covariance_from_blocks_by_hand():
    blocks = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 3.0], [2.0, 3.0]])
    ls = pairs.LagStructure(np.array([1, 2]), blocks.mean(0), blocks.std(0, ddof=1) / 2, np.array([4, 4]), blocks)
    C = ls.cov()
    # cov of the two columns (ddof 1) = 1/3, over 4 blocks
    assert C[0, 1] == pytest.approx((1 / 3) / 4)
    assert C[0, 0] == pytest.approx(blocks[:, 0].var(ddof=1) / 4)


def test_cell_rule_by_hand():
    # tolerance max(0.15·1, 2·√(0.03² + 0.04²) = 0.1) = 0.15
    assert verdicts.cell_agrees(1.14, 0.03, 1.0, 0.04)
    assert not verdicts.cell_agrees(1.16, 0.03, 1.0, 0.04)
    # tolerance max(0.15, 2·√(0.3² + 0.4²) = 1.0) = 1.0: a wrong sign passes when the noise is that large
    assert verdicts.cell_agrees(-0.01, 0.3, 0.98, 0.4)


def test_score_names_the_null_a_model_cannot_beat():
    """Three seeds with the same gain 1.0 ± 0.01: the other seeds' mean predicts every cell as well as the model."""
    cells = [{"variant": "ema", "gain_pred": 1.0, "gain_pred_se": 0.01, "gain_obs": g, "gain_obs_se": 0.01,
              "drift": 0.0} for g in (0.99, 1.0, 1.01)]
    sc = verdicts.score(cells)
    assert sc["share"] == 1.0 and sc["null"]["zero gain"] == 0.0 and sc["null"]["mean of the other seeds"] == 1.0
    assert sc["verdict"] == "not distinguishable from mean of the other seeds"
    # seeds whose gains differ (0.5, 1.0, 1.5) and a model that tracks them: the nulls fail, the model is reproduced
    cells = [{"variant": "ema", "gain_pred": g, "gain_pred_se": 0.01, "gain_obs": g, "gain_obs_se": 0.01,
              "drift": g} for g in (0.5, 1.0, 1.5)]
    sc = verdicts.score(cells)
    assert sc["verdict"] == "reproduced" and max(sc["null"].values()) <= 1 / 3
    assert sc["median_2se_rel"] == pytest.approx(2 * np.hypot(0.01, 0.01) / 1.0)


def test_a_negative_floor_fails_the_physical_check():
    cal = SimpleNamespace(floor=-0.03, floor_se=0.01, raw_excess=0.06, s=np.array([1.0]), fit=None)
    rows = checks.physical_checks(cal)
    assert rows[0]["passed"] is False
    cal.floor = -0.01
    assert checks.physical_checks(cal)[0]["passed"] is True        # within 2 s.e. of 0


def _nqm_run(seed: int, steps: int = 6000, every: int = 10):
    """SGD (μ = 0, λ = 0.05) on a 2-scale quadratic, stationary start; exact losses of raw, two-point and EMA."""
    rng = np.random.default_rng(seed)
    h = np.concatenate([np.full(100, 0.2), np.full(100, 4.0)])          # α = 0.01 (relax 100 steps) and 0.2
    sig = np.concatenate([np.full(100, 2.0), np.full(100, 0.2)])
    a = 0.05 * h
    x = np.zeros((steps + 1, h.size))
    x[0] = rng.standard_normal(h.size) * sig * np.sqrt(a / (2 - a))
    for t in range(steps):
        x[t + 1] = x[t] - a * (x[t] - rng.standard_normal(h.size) * sig)
    L = lambda th: 0.5 * np.sum(h * th ** 2, axis=-1)  # noqa: E731
    ev = np.arange(0, steps + 1, every)
    tr = {"eval/step": ev, "eval/test_loss_raw": L(x[ev])}
    for k in (10, 20, 50, 100, 200, 400):
        tr[f"eval/test_loss_two_point_k{k}"] = np.where(ev >= k, L(0.5 * (x[ev] + x[np.maximum(ev - k, 0)])), np.nan)
    y, ema = x[0].copy(), np.empty_like(x)
    for t in range(steps + 1):
        y = y if t == 0 else 0.99 * y + 0.01 * x[t]
        ema[t] = y
    tr["eval/test_loss_ema_0.99"] = L(ema[ev])
    return SimpleNamespace(trajectory=_traj(tr), path=f"nqm{seed}")


@pytest.mark.slow
def test_gain_prediction_se_covers_the_observed_gain_at_its_nominal_rate():
    """On 12 simulated seeds the predicted EMA-0.99 gain ± 2 combined s.e. must hold the observed one in at least 9
    (nominal 95 %: 9 or fewer of 12 has probability < 2 %), and the s.e. must not be vacuous (median 2·s.e. below
    half the gain)."""
    from theory import spec

    window, hits, rel = (1200, 6000), 0, []
    for seed in range(12):
        run = _nqm_run(seed)
        ls = pairs.structure(run, window)
        fit = pairs.select_fit(ls, 0.05, 0.0, 2)
        gp = pairs.predict_gain(run, spec.EMA(0.99, start=0), ls, fit, 0.05, 0.0, window)
        se = np.hypot(gp.pred_se, gp.obs_se)
        hits += abs(gp.pred - gp.obs) <= 2 * se
        rel.append(2 * se / abs(gp.obs))
    assert hits >= 9
    assert np.median(rel) < 0.5
