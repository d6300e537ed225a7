"""The two-point calibration (compare/pairs.py, theory.md §3.8a): weights by hand, the pair identity on an exact
quadratic, D(τ) against the closed form for μ = 0, the spectrum fit, and the gain prediction on a simulated NQM."""
from types import SimpleNamespace

import numpy as np
import pytest

from compare import pairs
from theory import spec

LAGS = (10, 20, 50, 100, 200, 300, 500)


def test_block_mean_se_by_hand():
    x = np.array([1.0, 3.0, 2.0, 4.0, 6.0, 8.0])          # 3 blocks: means 2, 3, 7 -> s.d. √7, s.e. √(7/3)
    m, se = pairs.block_mean_se(x, blocks=3)
    assert m == pytest.approx(4.0) and se == pytest.approx(np.sqrt(7 / 3))
    assert np.isnan(pairs.block_mean_se([5.0])[1])


def test_pair_identity_on_an_exact_quadratic():
    """L(Σwθ) = Σ w L(θ) − ¼ΣΣ w w D_jk with D_jk = 8[½(L_j + L_k) − L(midpoint)] for any quadratic (by hand)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    H, c = A @ A.T, 0.7
    L = lambda th: 0.5 * th @ H @ th + c  # noqa: E731
    th = rng.standard_normal((5, 6))
    w = rng.random(5)
    w /= w.sum()
    D = np.array([[8 * (0.5 * (L(a) + L(b)) - L(0.5 * (a + b))) for b in th] for a in th])
    assert L(w @ th) == pytest.approx(w @ np.array([L(t) for t in th]) - 0.25 * w @ D @ w, rel=1e-12)


def test_fluctuation_term_equals_the_double_sum():
    rng = np.random.default_rng(1)
    j = np.arange(3, 3 + 4 * 40, 4)
    w = rng.random(j.size)
    w /= w.sum()
    fn = lambda tau: np.sqrt(np.asarray(tau, float))  # noqa: E731   any D with D(0) = 0
    direct = 0.25 * sum(w[a] * w[b] * fn(abs(j[a] - j[b])) for a in range(j.size) for b in range(j.size))
    assert pairs.fluctuation_term(w, j, fn) == pytest.approx(direct, rel=1e-12)


def test_nqm_structure_matches_the_closed_form_without_momentum():
    # μ = 0: v = ασ²/(2−α), ρ(τ) = (1−α)^τ, D(τ) = Σ 2 h v (1 − ρ(τ))  (theory.md §3.5, §3.8a)
    h, s, lr = np.array([0.02, 3.0]), np.array([2.0, 0.01]), 0.1
    a = lr * h
    v = a * s / (2 - a)
    taus = np.array([1, 7, 50, 400])
    want = [np.sum(2 * h * v * (1 - (1 - a) ** t)) for t in taus]
    assert pairs.nqm_structure(h, s, lr, 0.0, taus) == pytest.approx(want, rel=1e-10)


def test_fit_spectrum_recovers_two_scales():
    h, s, lr, mu = np.array([0.05, 6.0]), np.array([4.0, 0.02]), 0.05, 0.9
    D = pairs.nqm_structure(h, s, lr, mu, LAGS)
    fit = pairs.fit_spectrum(pairs.LagStructure(np.array(LAGS), D, 0.01 * D, np.full(7, 50)), lr, mu, 2)
    assert fit.h == pytest.approx(h, rel=0.05) and fit.s == pytest.approx(s, rel=0.1)
    with pytest.raises(ValueError, match="needs at least 5 lags"):
        pairs.fit_spectrum(pairs.LagStructure(np.array(LAGS[:3]), D[:3], D[:3] / 10, np.full(3, 5)), lr, mu, 2)


class _Traj(dict):
    @property
    def series(self):
        return self


def _simulated_run(seed: int, steps: int = 6000, every: int = 10, offset: float = 0.0, ema_start: int = 1000,
                   fast: bool = True):
    """A run of SGD on a 2-scale quadratic (μ = 0): θ_{t+1} = θ_t − λH(θ_t − ε_t), L = ½Σh x², started at ``offset``
    in every direction (a mean path decaying towards 0). Losses are exact."""
    rng = np.random.default_rng(seed)
    h = np.concatenate([np.full(150, 0.1), np.full(50 if fast else 0, 8.0)])   # α = 0.005 (slow) and 0.4 (fast)
    lr = 0.05
    x = np.zeros((steps + 1, h.size))
    x[0] = offset
    for t in range(steps):
        x[t + 1] = x[t] - lr * h * (x[t] - rng.standard_normal(h.size) * 0.3)
    L = lambda th: 0.5 * np.sum(h * th ** 2, axis=-1)  # noqa: E731
    ev = np.arange(0, steps + 1, every)
    tr = _Traj({"eval/step": ev, "eval/test_loss_raw": L(x[ev])})
    for k in LAGS:
        ok = ev >= k
        tr[f"eval/test_loss_two_point_k{k}"] = np.where(ok, L(0.5 * (x[ev] + x[np.maximum(ev - k, 0)])), np.nan)
    ema, y = np.empty_like(x), x[ema_start].copy()
    ema[:ema_start] = np.nan
    for t in range(ema_start, steps + 1):
        y = y if t == ema_start else 0.995 * y + 0.005 * x[t]
        ema[t] = y
    tr["eval/test_loss_ema_0.995"] = np.where(ev >= ema_start, L(np.nan_to_num(ema[ev])), np.nan)
    return SimpleNamespace(trajectory=tr, path=f"sim{seed}")


def test_identity_predicts_the_ema_gain_on_a_simulated_nqm():
    """Observed EMA gain (exact losses of the simulated average) vs the pair identity fed only raw and two-point
    losses. Tolerance: 10 % of the gain or 3 block s.e. (the stationarity of D and its interpolation are the only
    approximations; the slow scale's relaxation time 200 steps is well inside the 500-step grid)."""
    run = _simulated_run(0)
    window = (3000, 6000)
    ls = pairs.structure(run, window)
    assert ls.lags.tolist() == list(LAGS)
    fit = pairs.fit_spectrum(ls, 0.05, 0.0, 2)
    g = pairs.gain_series(run, spec.EMA(0.995, start=1000), pairs.StructureFunction(ls, fit, 0.05, 0.0), window)
    obs, se = pairs.block_mean_se(g.obs)
    assert obs > 0 and abs(np.mean(g.pred) - obs) <= max(0.1 * obs, 3 * se)


def test_transient_term_accounts_for_an_ema_that_remembers_the_decay_before_the_window():
    """The mean path decays from an offset (slow directions: time constant 200 steps) while the EMA (memory 200
    steps) starts at step 300 and the window opens at 700: at the window's start the EMA still holds e^-2 of its
    start. The identity with a stationary D for every pair charges the EMA for its early iterates' loss without
    crediting their distance from the later ones; the transient term (coherent mean path) credits it. With D(τ)
    measured from in-window pairs only, the stationary D no longer carries the decay either, and both forms land
    within the tolerance; the transient term is positive (it credits the distance) and small against the gain."""
    run = _simulated_run(1, steps=2500, offset=1.5, ema_start=300)
    window = (700, 2500)
    ls = pairs.structure(run, window)
    D = pairs.StructureFunction(ls, pairs.fit_spectrum(ls, 0.05, 0.0, 2), 0.05, 0.0)
    g = pairs.gain_series(run, spec.EMA(0.995, start=300), D, window)
    obs, se = pairs.block_mean_se(g.obs)
    pred, plain = np.mean(g.pred), np.mean(g.plain)
    assert 0 < np.mean(g.transient) < 0.01 * abs(obs)
    assert abs(pred - obs) <= max(0.15 * abs(obs), 3 * se)
    assert abs(plain - obs) <= max(0.15 * abs(obs), 3 * se)


def test_smoothed_by_hand():
    assert pairs.smoothed(np.array([0.0, 3.0, 6.0, 0.0, 3.0]), 1) == pytest.approx([1.5, 3.0, 3.0, 3.0, 1.5])
