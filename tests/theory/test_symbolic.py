"""theory.symbolic: the sympy derivations reproduce theory.md's closed forms (§2.4, §2.6, §3.1, §3.3–3.6, §8), and
the hand-written numpy code of theory/stationary.py, theory/inverse.py and theory/probes.py agrees with them.

The printed formulas below are typed in on purpose: they are what the *derivation* is checked against.
"""

import subprocess
import sys

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings, strategies as st

from theory import symbolic as sy

RTOL = 1e-9            # stationary.py vs the derived expression evaluated at 50 digits (exact to float64)
ex = sy.derive()
S = sy.symbols()
al, mu, ga, s2, k, n = S["alpha"], S["mu"], S["gamma"], S["sigma2"], S["k"], S["n"]
a, be = 1 - al, 1 - ga


def zero(expr) -> bool:
    """sympy proves expr ≡ 0 (powers like (1−α)(1−α)^n are split first so that they can cancel)."""
    return sp.simplify(expr) == 0 or sp.simplify(sp.powsimp(sp.expand_power_exp(sp.expand(expr)))) == 0


def test_sympy_not_imported_by_theory_core():
    code = ("import sys, theory.symbolic as s, theory.stationary, theory.moments, theory.inverse, theory.probes, "
            "theory.spec; assert 'sympy' not in sys.modules, 'sympy imported'; "
            "assert s.derive.cache_info().currsize == 0")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ derivation checks (sympy)

def test_v_inf_matches_section_2_4_and_2_6():
    assert zero(ex["v_inf"] - al * s2 / (2 - al))
    assert zero(ex["v_inf_hb"] - (1 + mu) * al * s2 / ((1 - mu) * (2 * (1 + mu) - al)))
    assert zero(ex["v_inf_hb"].subs(mu, 0) - ex["v_inf"])


def test_ema_ratio_matches_section_3_3():
    assert zero(ex["ema_ratio"] - be * (1 + a * ga) / ((1 + ga) * (1 - a * ga)))
    assert zero(ex["ema_variance_hb"].subs(mu, 0) - ex["ema_variance"])
    assert zero(ex["ema_variance_every"].subs(S["c"], 1) - ex["ema_variance"])
    r = sp.Symbol("r", positive=True)
    assert zero(ex["alpha_eq"].subs({S["V"]: r, s2: 1}) - 2 * r / (1 + r))   # α_eq = 2r/(1+r)
    assert zero(ex["alpha_eq"].subs(S["V"], ex["v_inf"]) - al)                # exact inverse of v∞
    assert zero(ex["alpha_eq_hb"].subs(S["V"], ex["v_inf_hb"]) - al)


def test_two_point_swa_n_point_match_sections_3_4_3_5():
    v = al * s2 / (2 - al)
    assert zero(ex["two_point"] - v * (1 + a ** k) / 2)
    printed_swa = (v / n) * ((1 + a) / (1 - a) - 2 * a * (1 - a ** n) / (n * (1 - a) ** 2))
    assert zero(ex["swa"] - printed_swa)
    assert zero(ex["n_point"].subs({S["N"]: 2, S["gap"]: k}) - ex["two_point"])
    # the symbolic double sum agrees with brute force at small n, and Var_SWA·n → σ² (theory.md §8)
    q = S["q"]
    for m in range(1, 6):
        brute = sum(q ** abs(i - j) for i in range(m) for j in range(m))
        assert zero(ex["pair_sum"].subs(n, m) - brute)
    t = sp.Symbol("t", positive=True)                                 # 0 < α < 1 as 1 − α = e^{−t}, t > 0
    assert zero(sp.limit((ex["swa"] * n).subs(al, 1 - sp.exp(-t)), n, sp.oo) - s2)


def test_heavy_ball_autocovariance_from_diagonalisation():
    # lag 0 and lag 1 against the Lyapunov solution itself: Cov_1 = (A P)₀₀ = (1+μ−α) v∞ − μ Cov(x_t, x_{t−1})
    c0 = ex["cov_lag_hb"].subs(k, 0)
    c1 = ex["cov_lag_hb"].subs(k, 1)
    vals = {al: sp.Rational(3, 10), mu: sp.Rational(9, 10), s2: 1}
    v = ex["v_inf_hb"].subs(vals)
    assert abs(complex(sp.N(c0.subs(vals), 30)) - float(v)) < 1e-20
    rho1 = (1 + mu - al) / (1 + mu)                                   # lag-1 Yule-Walker, independent check
    assert abs(complex(sp.N(c1.subs(vals), 30)) - float((rho1 * ex["v_inf_hb"]).subs(vals))) < 1e-20


def test_inverse_recursion_from_the_solved_kernel_system():
    w_gen = [S["W0"], S["W1"], S["W2"]]
    assert zero(ex["inverse_weight"] - (w_gen[0] - a * w_gen[1]) / al)      # c_{s+1} = (w_s − a w_{s+1})/α
    assert zero(ex["inverse_weight_hb"] - (w_gen[0] - (1 + mu - al) * w_gen[1] + mu * w_gen[2]) / al)
    for momentum in (False, True):
        T = 5
        sol = sy.inverse_solution(T, momentum)
        ws = list(sp.symbols(f"w0:{T}")) + [0, 0]
        gen = ex["inverse_weight_hb"] if momentum else ex["inverse_weight"]
        for s_, (ck, val) in enumerate(sorted(sol.items(), key=lambda kv: str(kv[0]))):
            assert zero(val - gen.subs(dict(zip(w_gen, ws[s_:s_ + 3]))))


def test_probe_polynomial_and_expected_gains_section_3_1():
    h, u2, eta, lam = S["h"], S["u2"], S["eta"], S["lam"]
    assert [ex[f"probe_{c}"] for c in "ABC"] == [h * u2 / 2, h ** 2 * u2 / 2, h ** 3 * u2 / 2]
    v = al * s2 / (2 - al)
    assert zero(ex["heldout_gain_stationary"] - h ** 2 * v.subs(al, lam * h) * eta * (1 - eta / lam))
    assert zero(ex["gain_gap"] - eta * h ** 2 * s2)                  # η·tr(H²Σ), per direction
    # momentum: the held-out gain's root moves to λ/(1−μ) for small λh
    lead = sp.series(ex["heldout_root_hb"], lam, 0, 2).removeO()
    assert zero(lead - lam / (1 - mu))


# -------------------------------------------- the hand-written numpy code vs the derived expressions (hypothesis)

MP = sy.lambdified("mpmath")
stat = pytest.importorskip("theory.stationary")


def mp_eval(key, *args):
    """Derived expression at 50 digits; float arguments are exact in mpmath, results real up to rounding."""
    with mpmath.workdps(50):
        conv = [a_ if isinstance(a_, int) else mpmath.mpf(a_) for a_ in args]
        return float(mpmath.re(MP[key](*conv)))


alphas = st.floats(1e-6, 2.0, exclude_max=True)
mus = st.one_of(st.just(0.0), st.floats(0.0, 0.95, exclude_max=True))
gammas = st.floats(0.0, 0.999)
sig2 = st.floats(0.1, 10.0)


def hb_key(key, m):
    return key + "_hb" if m > 0 else key


def simple_roots(alpha, m):
    """The heavy-ball closed forms divide by the discriminant (1+μ−α)² − 4μ of x² − (1+μ−α)x + μ: at a double root
    (e.g. α = μ = 0.25) the derived expression is 0/0 though the variance is finite; keep such points out."""
    return m == 0 or (1 + m - alpha) ** 2 != 4 * m


@settings(deadline=None, max_examples=40)
@given(alpha=alphas, m=mus, gamma=gammas, s=sig2)
def test_iterate_and_ema_variance(alpha, m, gamma, s):
    assume(2 * (1 + m) - alpha > 1e-6)     # at the edge v∞ ~ 1/(2(1+μ) − α) loses every digit to rounding
    assert float(stat.iterate_variance(alpha, s, m)) == pytest.approx(mp_eval("v_inf_hb", alpha, m, s), rel=RTOL)
    ref = mp_eval("ema_variance_hb", alpha, gamma, m, s)
    assert float(stat.ema_variance(alpha, gamma, s, m)) == pytest.approx(ref, rel=RTOL)


@settings(deadline=None, max_examples=30)
@given(alpha=alphas, gamma=gammas, c=st.integers(1, 20))
def test_ema_every_momentum_free(alpha, gamma, c):
    ref = mp_eval("ema_variance_every", alpha, gamma, c, 1.0)
    assert float(stat.ema_variance(alpha, gamma, 1.0, 0.0, c)) == pytest.approx(ref, rel=RTOL)


@settings(deadline=None, max_examples=40)
@given(alpha=alphas, m=mus, gap=st.integers(0, 400), s=sig2)
def test_two_point(alpha, m, gap, s):
    assume(simple_roots(alpha, m))
    args = (alpha, m, gap, s) if m > 0 else (alpha, gap, s)
    assert float(stat.two_point_variance(alpha, gap, s, m)) == pytest.approx(mp_eval(hb_key("two_point", m), *args),
                                                                             rel=RTOL)


@settings(deadline=None, max_examples=40)
@given(alpha=alphas, m=mus, npts=st.integers(2, 8), gap=st.integers(1, 200), s=sig2)
def test_n_point(alpha, m, npts, gap, s):
    assume(simple_roots(alpha, m))
    args = (alpha, m, npts, gap, s) if m > 0 else (alpha, npts, gap, s)
    ref = mp_eval(hb_key("n_point", m), *args)
    assert float(stat.n_point_variance(alpha, npts, gap, s, m)) == pytest.approx(ref, rel=RTOL)


@settings(deadline=None, max_examples=40)
@given(alpha=alphas, m=mus, window=st.integers(2, 2000), every=st.integers(1, 5))
def test_swa(alpha, m, window, every):
    assume(simple_roots(alpha, m))
    args = (alpha, m, window, every, 1.0) if m > 0 else (alpha, window, every, 1.0)
    ref = mp_eval(hb_key("n_point", m), *args)                       # SWA every c = N-point with gap c
    assert float(stat.swa_variance(alpha, window, 1.0, m, every)) == pytest.approx(ref, rel=RTOL)
    if every == 1 and m == 0:
        assert ref == pytest.approx(mp_eval("swa", alpha, window, 1.0), rel=1e-12)


@settings(deadline=None, max_examples=40)
@given(alpha=alphas, m=mus, s=sig2)
def test_equivalent_alpha(alpha, m, s):
    v = mp_eval("v_inf_hb", alpha, m, s)
    assert float(stat.equivalent_alpha(v, s, m)) == pytest.approx(mp_eval("alpha_eq_hb", v, m, s), rel=RTOL)
    assert mp_eval("alpha_eq_hb", v, m, s) == pytest.approx(alpha, rel=1e-12)


def test_numeric_numpy_functions_match_stationary():
    """The numpy-lambdified functions in a well-conditioned range (no q ≈ 1 cancellation, r₁ ≠ r₂)."""
    F = sy.numeric()
    alpha = np.array([0.01, 0.05, 0.3, 0.9, 1.7])
    for m in (0.0, 0.5, 0.9):
        for fn, args in (("iterate_variance", ()), ("ema_variance", (0.99,)), ("two_point_variance", (37,)),
                         ("n_point_variance", (4, 25)), ("swa_variance", (300,))):
            got = F[fn](alpha, *args, 2.0, m)
            want = getattr(stat, fn)(alpha, *args, 2.0, m)
            np.testing.assert_allclose(got, want, rtol=1e-9)
    assert F["ema_variance"](0.05, 0.995) == pytest.approx(2.283252e-3, rel=5e-7)   # theory.md §3.3 anchor
    with pytest.raises(ValueError, match="momentum 0 only"):
        F["ema_variance"](0.05, 0.99, 1.0, 0.9, 2)


def test_inverse_weights_match_theory_inverse():
    inv = pytest.importorskip("theory.inverse")
    from theory.spec import Linear
    F = sy.numeric()
    sched, h_ref, base = Linear(lr=0.1, total=60, start=30), 1.0, 0.1
    for m in (0.0, 0.9):
        alphas_t = sched.lr_at(np.arange(60)) * h_ref
        w = inv.schedule_kernel(alphas_t, m)
        got = F["inverse_weights"](w, base * h_ref, m)
        want = inv.averaging_weights(sched, base, h_ref, 60, m)[1:]      # c_1..c_T
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_probe_gains_match_theory_probes():
    pr = pytest.importorskip("theory.probes")
    from theory.spec import NQM
    F = sy.numeric()
    model, lr, eta = NQM(h=[1.0, 0.2, 3.0], sigma2=[1.0, 2.0, 0.5]), 0.1, np.array([0.01, 0.05, 0.1, 0.3])
    p = pr.stationary_probe(model, lr, eta)
    held = sum(F["heldout_gain_stationary"](h, lr, s_, eta) for h, s_ in zip(model.h, model.sigma2))
    np.testing.assert_allclose(p.heldout_gain, held, rtol=1e-12, atol=1e-15)    # η = λ: a root, exactly 0
    np.testing.assert_allclose(p.gap, sum(F["gain_gap"](h, s_, eta) for h, s_ in zip(model.h, model.sigma2)),
                               rtol=1e-12)
