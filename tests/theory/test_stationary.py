"""theory.stationary: the test-anchor tables of theory.md §3.3-3.5 (computed outside this code), limits and the
momentum mapping table of §2.6."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import spec, stationary as S

ANCHOR = 5e-7   # the tables print 7 significant digits: half a unit in the last place, relative


@pytest.mark.parametrize("alpha, gamma, v_inf, var, a_eq, harmonic", [
    (0.05, 0.995, 0.025641, 2.283252e-3, 4.556101e-3, 4.545455e-3),
    (0.1, 0.999, 0.052632, 4.955532e-4, 9.906155e-4, 9.900990e-4),
    (0.01, 0.99, 0.005025, 2.512626e-3, 5.012658e-3, 5.000000e-3),
    (0.5, 0.9, 0.333333, 4.625199e-2, 8.841463e-2, 8.333333e-2),
])
def test_ema_anchor_table(alpha, gamma, v_inf, var, a_eq, harmonic):   # theory.md §3.3
    assert S.iterate_variance(alpha) == pytest.approx(v_inf, abs=5e-7)   # printed with 6 decimals
    v = S.ema_variance(alpha, gamma)
    assert v == pytest.approx(var, rel=ANCHOR)
    assert S.equivalent_alpha(v) == pytest.approx(a_eq, rel=ANCHOR)
    assert S.equivalent_alpha_approx(alpha, spec.EMA(gamma)) == pytest.approx(harmonic, rel=ANCHOR)


@pytest.mark.parametrize("n, var, a_eq", [(50, 1.280490e-2, 2.528602e-2), (400, 2.378205e-3, 4.745125e-3)])
def test_swa_anchor_table(n, var, a_eq):   # theory.md §3.4, α = 0.05
    v = S.swa_variance(0.05, n)
    assert v == pytest.approx(var, rel=ANCHOR)
    assert S.equivalent_alpha(v) == pytest.approx(a_eq, rel=ANCHOR)


@pytest.mark.parametrize("alpha, k, var, a_eq", [(0.05, 200, 1.282096e-2, 2.531733e-2),
                                                 (0.05, 20, 1.741649e-2, 3.423669e-2),
                                                 (0.1, 10, 3.549154e-2, 6.855013e-2)])
def test_two_point_anchor_table(alpha, k, var, a_eq):   # theory.md §3.5
    v = S.two_point_variance(alpha, k)
    assert v == pytest.approx(var, rel=ANCHOR)
    assert S.equivalent_alpha(v) == pytest.approx(a_eq, rel=ANCHOR)
    assert S.n_point_variance(alpha, 2, k) == pytest.approx(v, rel=1e-13)
    assert 2 * 0.05 / (4 - 0.05) == pytest.approx(2.531646e-2, rel=ANCHOR)   # the a^k → 0 column


@pytest.mark.parametrize("alpha, gamma, table", [(0.001, 0.9999, 0.001), (0.005, 0.999, 0.009), (0.01, 0.99, 0.08)])
def test_momentum_maps_to_alpha_eff_within_the_table(alpha, gamma, table):   # theory.md §2.6
    rel = S.ema_variance(alpha, gamma, momentum=0.9) / S.ema_variance(alpha / 0.1, gamma) - 1
    assert abs(rel) == pytest.approx(table, rel=0.13)   # the table rounds to one significant digit


def test_hand_values():
    assert S.max_stable_alpha(0.9) == pytest.approx(3.8)
    assert S.iterate_variance(1.0, 2.0) == pytest.approx(2.0)            # α = 1: x = ε, Var = σ²
    assert S.iterate_variance(1.0, 1.0, 0.5) == pytest.approx(1.5 / (0.5 * 2.0))
    assert S.ema_variance(1.0, 0.5) == pytest.approx(0.5 ** 2 / (1 - 0.25))   # iid input: β²/(1−γ²)
    assert S.swa_variance(1.0, 7) == pytest.approx(1 / 7)                   # iid: σ²/n
    np.testing.assert_array_equal(S.iterate_variance([2.0, 3.0]), [np.inf, np.inf])
    np.testing.assert_array_equal(S.ema_variance([0.0, 0.3], 0.9)[0], 0.0)


@given(alpha=st.floats(1e-6, 1.9), mu=st.sampled_from([0.0, 0.3, 0.9]), s2=st.floats(0.1, 10))
@settings(deadline=None, max_examples=50)
def test_equivalent_alpha_inverts_iterate_variance(alpha, mu, s2):
    alpha = alpha * (1 + mu)
    assert S.equivalent_alpha(S.iterate_variance(alpha, s2, mu), s2, mu) == pytest.approx(alpha, rel=1e-12)


AVGS = st.one_of(st.builds(spec.EMA, decay=st.floats(0.01, 0.999), every=st.integers(1, 4)),
                 st.builds(spec.SWA, length=st.integers(2, 500), every=st.integers(1, 4)),
                 st.builds(spec.TwoPoint, gap=st.integers(1, 300)),
                 st.builds(spec.NPoint, n=st.integers(2, 6), gap=st.integers(1, 50)))


@given(alpha=st.floats(1e-4, 1.0), avg=AVGS, mu=st.sampled_from([0.0, 0.5, 0.9]))
@settings(deadline=None, max_examples=50)
def test_alpha_eq_below_alpha_for_every_average(alpha, avg, mu):
    v = S.averaged_variance(alpha, avg, 1.0, mu)
    assert 0 < S.equivalent_alpha(v, 1.0, mu) < alpha


def test_limits():
    a = np.array([1e-3, 0.05, 0.5])
    for g in (1e-3, 1e-6):   # γ → 0: the EMA is the iterate
        np.testing.assert_allclose(S.equivalent_alpha(S.ema_variance(a, g)), a, rtol=3 * g / a.min())
    for n in (10 ** 4, 10 ** 6):   # n Var_SWA → σ²
        np.testing.assert_allclose(n * S.swa_variance(a, n), 1.0, rtol=2 / (n * a.min()))
    for k in (2000, 20000):   # two-point far apart: α_eq → 2α/(4−α)
        exact = S.equivalent_alpha(S.two_point_variance(a, k))
        assert np.all(np.abs(exact / (2 * a / (4 - a)) - 1) <= 2 * (1 - a.min()) ** k + 1e-15)
    # N points far apart ≈ α/N; approx rules reduce to α/2 and α/N
    np.testing.assert_allclose(S.equivalent_alpha_approx(a, spec.NPoint(5, 10 ** 6)), a / 5, rtol=1e-12)
    np.testing.assert_allclose(S.equivalent_alpha_approx(a, spec.TwoPoint(10 ** 6)), a / 2, rtol=1e-12)
    np.testing.assert_allclose(S.equivalent_alpha(S.n_point_variance(a, 4, 10 ** 5)), a / 4, rtol=a.max())


def test_approx_rules_are_small_rate_limits():
    a = 1e-3
    for avg in (spec.EMA(0.99), spec.SWA(length=300), spec.TwoPoint(500), spec.NPoint(3, 200)):
        exact = S.equivalent_alpha(S.averaged_variance(a, avg))
        assert S.equivalent_alpha_approx(a, avg) == pytest.approx(exact, rel=2e-2)


@pytest.mark.parametrize("alpha", [1e-7, 1e-4, 0.05, 0.5, 1.0, 1.5, 1.9])
def test_numeric_momentum_paths_equal_closed_forms_at_mu_zero(alpha):
    a = np.array([alpha])
    for n, c in [(2, 1), (37, 3), (500, 1)]:
        np.testing.assert_allclose(S._mean_points_numeric(a, n, c, 0.0), S._f_mean(n, (1 - a) ** c) / n ** 2,
                                   rtol=1e-9)
    for g, c in [(0.0, 1), (0.9, 1), (0.999, 4)]:
        np.testing.assert_allclose(S._ema_lyapunov(a, g, 0.0, c, np.ones(1)), S.ema_variance(a, g, every=c),
                                   rtol=1e-6 if alpha < 1e-5 else 1e-9)   # (I − B⊗B) has condition ~1/α


def test_f_mean_series_branch_is_continuous():
    n = 1000
    for s in (4.9e-6, 5.1e-6):   # straddles n·s = 5e-3; compare with exact rational sums in float128-free form
        q = np.exp(-s)
        d = np.arange(1, n)
        brute = n + 2 * np.sum((n - d) * q ** d)
        assert S._f_mean(n, np.array([q]))[0] == pytest.approx(brute, rel=1e-11)


def test_bad_input():
    with pytest.raises(ValueError, match="window"):
        S.averaged_variance(0.1, spec.SWA())
    with pytest.raises(ValueError, match="momentum"):
        S.iterate_variance(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="alpha"):
        S.iterate_variance(-0.1)
