"""theory.advice, the answers as library calls, against values derived here: the stationary laws of theory.md §2.4,
§2.6, §3.3-3.5 written out by hand, a heavy-ball Monte Carlo written out step by step, and the running-mean identity
of the SWA cooldown (§3.4). The docstring examples run as tests too."""

import doctest
import math

import numpy as np
import pytest

import theory
from theory import advice, moments, spec


def v_inf(alpha, s2=1.0, mu=0.0):
    """Stationary iterate variance (theory.md §2.4, §2.6): (1 + μ)ασ² / ((1 − μ)(2(1 + μ) − α))."""
    return (1 + mu) * alpha * s2 / ((1 - mu) * (2 * (1 + mu) - alpha))


def ema_var(alpha, gamma, s2=1.0):
    """Stationary EMA variance, μ = 0 (theory.md §3.3): v∞ β(1 + aγ) / ((1 + γ)(1 − aγ))."""
    a, beta = 1 - alpha, 1 - gamma
    return v_inf(alpha, s2) * beta * (1 + a * gamma) / ((1 + gamma) * (1 - a * gamma))


def swa_var(alpha, n, s2=1.0):
    """Var of the mean of n consecutive stationary iterates, μ = 0 (theory.md §3.4)."""
    a = 1 - alpha
    return v_inf(alpha, s2) / n * ((1 + a) / (1 - a) - 2 * a * (1 - a ** n) / (n * (1 - a) ** 2))


def test_docstring_examples_run():
    res = doctest.testmod(advice, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 8 and res.failed == 0


def test_public_api():
    for name in ("rank_ema_decays", "rank_swa_starts", "equivalent_schedule", "RankedAverage", "EquivalentSchedule"):
        assert name in theory.__all__ and getattr(theory, name) is getattr(advice, name)


# ------------------------------------------------------------------------------------------ ranking EMA decays

def test_ema_gain_long_after_the_start_is_the_stationary_one():
    """One direction, μ = 0, h = 2, λ = 0.025 (α = 0.05), σ² = 0.5: long after the start (γ^5000 ≈ 1e-22) the gain
    is ½h(v∞ − Var(EMA)) of theory.md §3.3. γ = 0.995 is the anchor row: Var(EMA)/σ² = 2.283252e-3."""
    h, lr, s2 = 2.0, 0.025, 0.5
    rows = advice.rank_ema_decays([0.9, 0.995, 0.99], lr, 0.0, h, s2, window=(5000, 5100))
    assert [r.average.decay for r in rows] == [0.995, 0.99, 0.9]          # best first
    for r in rows:
        g = r.average.decay
        assert r.raw_excess == pytest.approx(0.5 * h * v_inf(0.05, s2), rel=1e-10)
        assert r.average_excess == pytest.approx(0.5 * h * ema_var(0.05, g, s2), rel=1e-8)
        assert r.gain == pytest.approx(r.raw_excess - r.average_excess, rel=1e-12)
        assert r.gain_min == r.gain == r.gain_max                          # no alternatives: no spread
    assert rows[0].average_excess == pytest.approx(0.5 * h * s2 * 2.283252e-3, rel=1e-6)


def test_ema_gain_right_after_the_start_by_hand():
    """At the start y = θ: gain 0. One step later y = γθ_s + βθ_{s+1}, Var = v(γ² + β² + 2γβa) (lag-1 correlation
    a = 1 − α), so the gain is ½hv(1 − γ² − β² − 2γβa) = h v γ β α. Window steps before the start gain 0."""
    h, lr, s2, g, s = 1.5, 0.1, 2.0, 0.9, 40
    alpha = lr * h
    one = h * v_inf(alpha, s2) * g * (1 - g) * alpha

    def gain(window):
        return advice.rank_ema_decays([g], lr, 0.0, h, s2, start=s, window=window)[0].gain

    assert gain((s, s)) == pytest.approx(0.0, abs=1e-15)
    assert gain((0, s - 1)) == pytest.approx(0.0, abs=1e-15)
    assert gain((s + 1, s + 1)) == pytest.approx(one, rel=1e-10)
    assert gain((s, s + 1)) == pytest.approx(one / 2, rel=1e-10)          # the window mean over two steps


def test_ema_gain_with_momentum_against_a_monte_carlo():
    """μ = 0.9: heavy ball written out as torch.optim.SGD does it (b ← μb + g, θ ← θ − λb, g = h(x − ε)), burnt in
    to stationarity, EMA from step 0; the window-mean gain ½h(x² − y²) per chain, averaged over 20,000 chains,
    agrees within 4 standard errors."""
    h, lr, mu, s2, g, window = 0.2, 0.05, 0.9, 1.0, 0.98, (100, 150)
    rng = np.random.default_rng(0)
    n = 20000
    x, b = np.zeros(n), np.zeros(n)

    def step(x, b):
        b = mu * b + h * (x - rng.normal(0.0, math.sqrt(s2), n))
        return x - lr * b, b

    for _ in range(600):                                               # |root| = √0.9: 20 relaxation times ≈ 400
        x, b = step(x, b)
    y, acc = x.copy(), np.zeros(n)
    for t in range(1, window[1] + 1):
        x, b = step(x, b)
        y = g * y + (1 - g) * x
        if t >= window[0]:
            acc += 0.5 * h * (x * x - y * y)
    per_chain = acc / (window[1] - window[0] + 1)
    mc, se = per_chain.mean(), per_chain.std(ddof=1) / math.sqrt(n)
    got = advice.rank_ema_decays([g], lr, mu, h, s2, window=window)[0]
    assert abs(got.gain - mc) < 4 * se, (got.gain, mc, se)
    assert got.raw_excess == pytest.approx(0.5 * h * v_inf(lr * h, s2, mu), rel=1e-9)   # §2.6 closed form


def test_alternatives_give_the_range_and_accept_a_drift_entry():
    lr, win = 0.05, (300, 400)
    main, alt1, alt2 = ([1.0, 0.1], [1.0, 2.0]), ([0.5, 0.05], [1.0, 3.0]), ([2.0, 0.2], [0.5, 2.0])
    rows = advice.rank_ema_decays([0.99, 0.999], lr, 0.0, *main, window=win,
                                  alternatives=[alt1, (*alt2, 1e-6)])
    for r in rows:
        each = [advice.rank_ema_decays([r.average.decay], lr, 0.0, hh, ss, window=win)[0].gain
                for hh, ss in (main, alt1, alt2)]
        assert r.gain == pytest.approx(each[0], rel=1e-12)
        assert r.gain_min == pytest.approx(min(each), rel=1e-12) and r.gain_max == pytest.approx(max(each), rel=1e-12)
        assert r.gain_min < r.gain_max


# ------------------------------------------------------------------------------------------ ranking SWA starts

@pytest.mark.parametrize("n, var", [(50, 1.280490e-2), (400, 2.378205e-3)])
def test_swa_gain_is_the_mean_of_n_iterates(n, var):
    """SWA from s evaluated at b averages n = b − s + 1 stationary iterates: theory.md §3.4 anchors (α = 0.05)."""
    b = 1000
    r = advice.rank_swa_starts([b - n + 1], 0.05, 0.0, 1.0, 1.0, window=(b, b))[0]
    assert r.average_excess == pytest.approx(0.5 * var, rel=1e-6)
    assert r.average_excess == pytest.approx(0.5 * swa_var(0.05, n), rel=1e-10)
    assert r.gain == pytest.approx(0.5 * (v_inf(0.05) - swa_var(0.05, n)), rel=1e-10)


def test_swa_starts_ranked_and_late_starts_gain_nothing_before_they_start():
    rows = advice.rank_swa_starts([900, 0, 500, 2000], 0.1, 0.0, [1.0, 0.3], [1.0, 1.0], window=(1000, 1500))
    assert [r.average.start for r in rows] == [0, 500, 900, 2000]
    assert rows[-1].gain == pytest.approx(0.0, abs=1e-15)                 # starts after the window ends
    h, s = np.array([1.0, 0.3]), np.ones(2)
    w = np.arange(1000, 1501)                                              # the window mean, step by step
    n = w - 900 + 1
    alpha = 0.1 * h
    want = np.mean([0.5 * np.sum(h * (v_inf(alpha, s) - swa_var(alpha, k, s))) for k in n])
    assert rows[2].gain == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("call, match", [
    (lambda: advice.rank_ema_decays([0.99], 3.0, 0.0, 1.0, 1.0, window=(0, 10)), "diverges"),
    (lambda: advice.rank_ema_decays([0.99], 0.1, 0.0, 1.0, 1.0, window=(10, 5)), "window"),
    (lambda: advice.rank_ema_decays([], 0.1, 0.0, 1.0, 1.0, window=(0, 5)), "at least one"),
    (lambda: advice.rank_ema_decays([1.0], 0.1, 0.0, 1.0, 1.0, window=(0, 5)), "decay"),
    (lambda: advice.rank_ema_decays([0.9], 0.1, 1.0, 1.0, 1.0, window=(0, 5)), "momentum"),
    (lambda: advice.rank_ema_decays([0.9], 0.1, 0.0, 1.0, 1.0, window=(0, 5), alternatives=[(1.0,)]), "alternatives"),
    (lambda: advice.rank_swa_starts([-1], 0.1, 0.0, 1.0, 1.0, window=(0, 5)), "starts"),
    (lambda: advice.rank_swa_starts([0], 0.1, 0.0, [1.0, 2.0], [1.0, 1.0, 1.0], window=(0, 5)), "sigma2"),
])
def test_bad_input_is_one_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------ equivalent schedules

def test_ema_switches_to_the_exact_equivalent_lr():
    """theory.md §3.3: α_eq = 2r/(1 + r), r = Var(EMA)/σ²; λ_eq = α_eq/h. Anchor α = 0.05, γ = 0.995: 4.556101e-3."""
    h, lr = 2.0, 0.025
    f = advice.equivalent_schedule(spec.EMA(0.995, start=300), lr, 0.0, h, 0.7)
    r = ema_var(0.05, 0.995)
    assert f(0) == f(299) == lr and f.switch_step == 300
    assert f(300) == pytest.approx(2 * r / (1 + r) / h, rel=1e-9) == f(10 ** 6)
    assert f(300) * h == pytest.approx(4.556101e-3, rel=1e-6)
    assert np.array_equal(f(np.array([299, 300])), [lr, f(300)])


def test_ema_equivalent_lr_with_momentum_has_the_ema_variance():
    """μ = 0.9: the raw stationary variance at λ_eq (§2.6 closed form) equals the EMA's long-run variance, computed
    here by the step-by-step moment engine over 20,000 steps (theory.moments, another code path than the Lyapunov
    solve behind the schedule)."""
    h, lr, mu, g = 1.0, 0.02, 0.9, 0.99
    f = advice.equivalent_schedule(spec.EMA(g), lr, mu, h, 1.0)
    assert f.switch_step == 0 and f(0) == f.lr_eq
    m = moments.moments(spec.NQM(h=[h]), spec.SGD(spec.Constant(lr), mu), spec.EMA(g), [20000])
    assert v_inf(f.lr_eq * h, 1.0, mu) == pytest.approx(float(m.var_avg[0, 0]), rel=1e-8)


def test_two_points_switch_when_the_average_exists():
    """theory.md §3.5 anchor α = 0.05, k = 200: α_eq = 2.531733e-2; far apart, 2α/(4 − α) (≈ α/2)."""
    f = advice.equivalent_schedule(spec.TwoPoint(200), 0.05, 0.0, 1.0, 1.0)
    assert f(199) == 0.05 and f(200) == pytest.approx(2.531733e-2, rel=1e-6)
    far = advice.equivalent_schedule(spec.TwoPoint(5000), 0.05, 0.0, 1.0, 1.0)
    assert far(5000) == pytest.approx(2 * 0.05 / (4 - 0.05), rel=1e-9)
    assert advice.equivalent_schedule(spec.NPoint(3, 100), 0.05, 0.0, 1.0, 1.0).switch_step == 200


def test_swa_cooldown_by_hand_and_the_running_mean_identity():
    """theory.md §3.4: τ = (1 − μ)/(λh); update T0 + n − 1 runs at λτ/(τ + n), n = 1, 2, … With μ = 0 the iterate
    after n cooldown updates is (τ x_T0 + ε_1 + … + ε_n)/(τ + n) for any noise sequence (α = 1/(τ + n) per update)."""
    lr, h, t0 = 0.04, 1.25, 30                                          # α = 0.05, τ = 20
    f = advice.equivalent_schedule(spec.SWA(start=t0), lr, 0.0, h, 1.0)
    assert f.tau == pytest.approx(20.0, rel=1e-12) and f(t0 - 1) == lr
    for n in (1, 2, 10, 500):
        assert f(t0 + n - 1) == pytest.approx(lr * 20 / (20 + n), rel=1e-12)
    rng = np.random.default_rng(1)
    eps = rng.normal(size=200)
    x0 = x = 0.7
    for n in range(1, 201):
        a = f(t0 + n - 1) * h
        x = (1 - a) * x + a * eps[n - 1]
        assert x == pytest.approx((20 * x0 + eps[:n].sum()) / (20 + n), rel=1e-9, abs=1e-12)
    f0 = advice.equivalent_schedule(spec.SWA(start=0), lr, 0.0, h, 1.0)       # from the first update
    assert f0(0) == pytest.approx(lr * 20 / 21, rel=1e-12) and f0(9) == pytest.approx(lr * 20 / 30, rel=1e-12)
    fm = advice.equivalent_schedule(spec.SWA(start=t0), lr, 0.9, h, 1.0)      # momentum: τ = (1 − μ)/(λh) = 2
    assert fm.tau == pytest.approx(2.0, rel=1e-12)


def test_swa_cooldown_of_a_spectrum_and_of_a_finite_window():
    """Two scales: τ is the mean of τ_k = 1/(λh_k) with weights h_k v∞,k (each scale's share of the raw excess);
    a window of n iterates ends the cooldown with LR 0 from update T0 + n − 1."""
    lr, h, s = 0.05, np.array([2.0, 0.2]), np.array([1.0, 4.0])
    w = h * v_inf(lr * h, s)
    tau = float(np.sum(w / (lr * h)) / np.sum(w))
    f = advice.equivalent_schedule(spec.SWA(start=10, length=5), lr, 0.0, h, s)
    assert f.tau == pytest.approx(tau, rel=1e-12)
    assert f(13) == pytest.approx(lr * tau / (tau + 4), rel=1e-12) and f(14) == 0.0 == f(100)


def test_no_average_and_bad_averages():
    assert advice.equivalent_schedule(spec.NoAverage(), 0.1, 0.0, 1.0, 1.0)(123) == 0.1
    with pytest.raises(ValueError, match="every=1"):
        advice.equivalent_schedule(spec.SWA(start=0, every=5), 0.1, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="average must be"):
        advice.equivalent_schedule("ema", 0.1, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="no equivalent LR"):
        advice.equivalent_schedule(spec.EMA(0.9), 0.1, 0.0, 1.0, 0.0)
