"""Monte Carlo (theory/montecarlo.py) vs the exact moments (theory/moments.py), the stationary anchors printed in
theory.md §3.3–3.5 and the one-step probe expectations of §3.1.

Tolerance: every MC estimate is a mean over independent chains, so by the CLT (estimate − truth)/SE ≈ N(0, 1);
the variance SE uses the sample fourth moment. A case compares m such z-scores at once, so it passes when every
|z| < max(3, z_m), z_m the Bonferroni bound for a family-wise false-alarm rate of 1% (z_m ≈ 3.7 for m = 50). Seeds
are fixed, so the outcome is deterministic; the bound says how unlikely a failure is for a correct code. A real
discrepancy of a few % in a variance shows up as |z| ≫ 4 at 30k–50k chains (relative SE of a variance √(2/n) ≈ 0.7%).
"""

import numpy as np
import pytest
from scipy.stats import norm

from theory.montecarlo import mean_se, probe_gains, simulate, var_se
from theory.spec import EMA, NQM, SGD, SWA, Constant, Cosine, NoAverage, NPoint, Step, TwoPoint

moments_mod = pytest.importorskip("theory.moments")


def z_crit(m: int) -> float:
    return max(3.0, float(norm.ppf(1 - 0.01 / (2 * m))))


def assert_z(est, se, truth, label=""):
    est, se, truth = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (est, se, truth)))
    ok = se > 0
    z = np.abs(est[ok] - truth[ok]) / se[ok]
    assert np.all(np.abs(est[~ok] - truth[~ok]) <= 1e-12 * np.maximum(1.0, np.abs(truth[~ok]))), label
    assert z.size == 0 or z.max() < z_crit(z.size), f"{label}: max |z| = {z.max():.2f} over {z.size}"


def check_against_moments(model, opt, avg, steps, n_chains, seed):
    mc = simulate(model, opt, avg, steps, n_chains, np.random.default_rng(seed))
    ex = moments_mod.moments(model, opt, avg, np.asarray(steps))
    pairs = [(mc.mean_x, mc.se_mean_x, ex.mean_x), (mc.var_x, mc.se_var_x, ex.var_x),
             (mc.mean_avg, mc.se_mean_avg, ex.mean_avg), (mc.var_avg, mc.se_var_avg, ex.var_avg)]
    est = np.concatenate([p[0].ravel() for p in pairs])
    se = np.concatenate([p[1].ravel() for p in pairs])
    truth = np.concatenate([p[2].ravel() for p in pairs])
    assert_z(est, se, truth, f"{type(avg).__name__} {opt}")
    return mc, ex


ONE = NQM(h=[1.0], m0=1.0, v0=0.1)                 # α = λ: bias and noise both visible
SPECTRUM = NQM(h=[1.0, 0.1, 3.0], sigma2=[1.0, 2.0, 0.5], m0=[1.0, -1.0, 0.5], v0=[0.0, 0.3, 0.1])

CASES = {
    "plain": (ONE, SGD(Constant(0.1)), NoAverage(), [0, 5, 50, 300]),
    "momentum": (ONE, SGD(Constant(0.05), momentum=0.9), NoAverage(), [1, 5, 50, 300]),
    "ema_start_every": (ONE, SGD(Constant(0.05)), EMA(0.98, start=100, every=3), [50, 100, 103, 150, 300]),
    "swa_window": (ONE, SGD(Constant(0.05)), SWA(start=100, length=60, every=2), [50, 100, 150, 300]),
    "two_point": (ONE, SGD(Constant(0.05)), TwoPoint(40), [10, 40, 100, 300]),
    "n_point_momentum": (ONE, SGD(Constant(0.02), momentum=0.5), NPoint(4, 25), [10, 75, 100, 300]),
    "step_schedule": (ONE, SGD(Step(0.1, milestones=(100, 200), factor=0.3), momentum=0.9), NPoint(3, 20),
                      [50, 150, 300]),
    "cosine_spectrum": (SPECTRUM, SGD(Cosine(0.2, total=300, start=100), momentum=0.5), EMA(0.97, start=150),
                        [100, 200, 300]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mc_matches_exact_moments(case):
    model, opt, avg, steps = CASES[case]
    check_against_moments(model, opt, avg, steps, 30_000, seed=sorted(CASES).index(case))


@pytest.mark.parametrize("case", list(CASES))
def test_noise_free_paths_equal_exact_means(case):
    """σ² = v0 = 0: every chain follows the mean path, so the sampled averaging (start, every, length, gap, the
    ring buffer) must reproduce the exact means at every step to rounding. This pins the event timing exactly,
    which the noisy comparison above only resolves to a few SE."""
    model, opt, avg, steps = CASES[case]
    quiet = NQM(h=model.h, sigma2=0.0, m0=model.m0, v0=0.0)
    every = np.arange(max(steps) + 1)
    mc = simulate(quiet, opt, avg, every, 2, np.random.default_rng(0))
    ex = moments_mod.moments(quiet, opt, avg, every)
    np.testing.assert_allclose(mc.mean_x, ex.mean_x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mc.mean_avg, ex.mean_avg, rtol=1e-9, atol=1e-12)
    assert np.all(mc.var_avg == 0)


# ---------------------------------------------------------------- stationary anchors of theory.md (σ² = 1, α = 0.05)

def stationary_one(alpha: float) -> NQM:
    """x_0 drawn from the stationary law N(0, v∞), v∞ = α/(2 − α) (theory.md §2.4), so no burn-in is needed."""
    return NQM(h=[1.0], sigma2=1.0, m0=0.0, v0=alpha / (2 - alpha))


@pytest.mark.parametrize("avg, step, anchor", [
    (EMA(0.995), 1500, 2.283252e-3),      # §3.3; the start transient is ∝ γ^{2t}·… < 1e-3 of Var by t = 1500
    (TwoPoint(200), 200, 1.282096e-2),    # §3.5; both points are stationary from t = 200 on
    (SWA(length=400), 399, 2.378205e-3),  # §3.4; θ_0..θ_399 = 400 consecutive stationary iterates
])
def test_mc_matches_theory_anchors(avg, step, anchor):
    mc = simulate(stationary_one(0.05), SGD(Constant(0.05)), avg, [step], 50_000, np.random.default_rng(7))
    assert_z(mc.var_avg[0, 0], mc.se_var_avg[0, 0], anchor, type(avg).__name__)
    assert_z(mc.var_x[0, 0], mc.se_var_x[0, 0], 0.05 / 1.95, "iterate v∞")


def test_probe_gains_match_section_3_1():
    """One GD step of probe LR η at stationarity: held-out gain (Σh²v∞)η(1 − η/λ), gap η Σh²σ² (theory.md §3.1)."""
    lr = 0.1
    model = NQM(h=[1.0, 0.2, 3.0], sigma2=[1.0, 2.0, 0.5], m0=0.0)
    v_inf = lr * model.h * model.sigma2 / (2 - lr * model.h)
    model = NQM(h=model.h, sigma2=model.sigma2, m0=0.0, v0=v_inf)
    mc = simulate(model, SGD(Constant(lr)), NoAverage(), [20], 50_000, np.random.default_rng(3))
    eta = np.array([0.05, 0.1, 0.3, 1.0])                         # λ/2 (held-out optimum), λ (root), 3λ, 1/h₁
    pr = probe_gains(model, mc.x_last, eta, np.random.default_rng(4))
    held = np.sum(model.h ** 2 * v_inf) * eta * (1 - eta / lr)
    batch = np.array([np.sum(0.5 * model.h * (v_inf + model.sigma2) * (2 * e * model.h - (e * model.h) ** 2))
                      for e in eta])
    assert_z(np.r_[pr.heldout_gain, pr.batch_gain], np.r_[pr.se_heldout_gain, pr.se_batch_gain], np.r_[held, batch],
             "probe gains")
    probes = pytest.importorskip("theory.probes")
    p = probes.stationary_probe(model, lr, eta)
    assert_z(np.r_[pr.heldout_gain, pr.batch_gain], np.r_[pr.se_heldout_gain, pr.se_batch_gain],
             np.r_[p.heldout_gain, p.batch_gain], "theory.probes")


def test_standard_errors_are_calibrated():
    """For N(0, v) samples the SEs are √(v/n) and v√(2/n) (the fourth moment is 3v²)."""
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(200_000, 1))
    m, sm = mean_se(x)
    v, sv = var_se(x)
    assert sm[0] == pytest.approx(2.0 / np.sqrt(2e5), rel=0.01)
    assert sv[0] == pytest.approx(4.0 * np.sqrt(2 / 2e5), rel=0.02)
    assert abs(v[0] - 4.0) < 4 * sv[0] and abs(m[0]) < 4 * sm[0]


def test_bad_input():
    with pytest.raises(ValueError, match="n_chains"):
        simulate(ONE, SGD(Constant(0.1)), NoAverage(), [3], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="steps"):
        simulate(ONE, SGD(Constant(0.1)), NoAverage(), [-1], 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="avg"):
        simulate(ONE, SGD(Constant(0.1)), "ema", [3], 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="samples"):
        probe_gains(ONE, np.zeros((10, 2)), [0.1], np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------- larger cases

@pytest.mark.slow
def test_mc_momentum_ema_spectrum_large():
    """2×10⁵ chains (theory.md §8: ≥ 1e5), momentum 0.9, EMA with start and every, 3 directions, warm-up schedule."""
    from theory.spec import WSD
    opt = SGD(WSD(0.03, warmup=50, decay_start=400, decay=200, final_lr=0.003), momentum=0.9)
    check_against_moments(SPECTRUM, opt, EMA(0.99, start=200, every=2), [100, 300, 500, 700], 200_000, seed=11)


@pytest.mark.slow
def test_mc_momentum_stationary_ema_large():
    """Heavy ball at stationarity vs theory/stationary.py: v∞(HB) of §2.6 and the EMA on top of it."""
    stat = pytest.importorskip("theory.stationary")
    alpha, mu, gamma = 0.01, 0.9, 0.99
    v_hb = (1 + mu) * alpha / ((1 - mu) * (2 * (1 + mu) - alpha))
    model = NQM(h=[1.0], m0=0.0, v0=v_hb)      # x_{−1} = x_0 is not the stationary lag-1 law: burn in 3000 steps
    mc = simulate(model, SGD(Constant(alpha), momentum=mu), EMA(0.99, start=1000), [3000], 100_000,
                  np.random.default_rng(5))
    assert_z(mc.var_x[0, 0], mc.se_var_x[0, 0], v_hb, "v_inf HB")
    assert_z(mc.var_avg[0, 0], mc.se_var_avg[0, 0], stat.ema_variance(alpha, gamma, 1.0, mu), "EMA HB")
