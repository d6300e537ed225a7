"""theory.moments: the fast exact moments against the plain per-step loop, hand values and limits (theory.md §8)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import moments as M, spec, stationary as S
from theory.moments import MapPowers, compose_maps, heavy_ball_step_map

RTOL = 1e-10   # two exact float64 evaluations of the same recursions (binary powering vs one step at a time)
FIELDS = ("mean_x", "var_x", "mean_avg", "var_avg", "cov_x_avg")


def close(a: M.Moments, b: M.Moments, rtol=RTOL):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * (1 + np.max(np.abs(y))), err_msg=f)


averagings = st.one_of(
    st.just(spec.NoAverage()),
    st.builds(spec.EMA, decay=st.floats(0.0, 0.99), start=st.integers(0, 60), every=st.integers(1, 5)),
    st.builds(spec.SWA, start=st.integers(0, 60), length=st.one_of(st.none(), st.integers(1, 20)),
              every=st.integers(1, 6)),
    st.builds(spec.TwoPoint, gap=st.integers(0, 30)),
    st.builds(spec.NPoint, n=st.integers(1, 4), gap=st.integers(0, 12)),
)
schedules = st.one_of(
    st.builds(spec.Constant, lr=st.floats(0.0, 1.0)),
    st.builds(lambda lr, s: spec.Cosine(lr=lr, total=s + 40, start=s), st.floats(0.05, 1.0), st.integers(0, 60)),
    st.builds(lambda lr, m: spec.Step(lr=lr, milestones=(m, m + 25), factor=0.3), st.floats(0.05, 1.0),
              st.integers(1, 60)),
)


@given(h=st.lists(st.floats(1e-3, 1.5), min_size=1, max_size=3), sched=schedules, avg=averagings,
       mu=st.sampled_from([0.0, 0.5, 0.9]), m0=st.floats(-2, 2), v0=st.floats(0, 1),
       total=st.integers(1, 150), seed=st.integers(0, 2 ** 16))
@settings(deadline=None, max_examples=40)
def test_closed_form_equals_step_by_step(h, sched, avg, mu, m0, v0, total, seed):
    model = spec.NQM(h=h, sigma2=1.3, m0=m0, v0=v0)
    opt = spec.SGD(sched, momentum=mu)
    steps = np.random.default_rng(seed).choice(total + 1, size=min(total + 1, 7), replace=False)
    close(M.moments(model, opt, avg, steps), M.step_by_step(model, opt, avg, steps))


def test_every_output_step_and_unsorted_steps():
    model = spec.NQM(h=[0.7, 0.05], sigma2=[1.0, 2.0], m0=[1.0, -1.0], v0=0.2)
    opt = spec.SGD(spec.Step(lr=0.8, milestones=(13, 40), factor=0.5), momentum=0.6)
    for avg in (spec.EMA(0.8, start=5, every=3), spec.SWA(start=4, length=6, every=4), spec.NPoint(3, 7)):
        ref = M.step_by_step(model, opt, avg, np.arange(80))
        close(M.moments(model, opt, avg, np.arange(80)), ref)
        sel = np.array([79, 3, 40, 40, 0])
        got = M.moments(model, opt, avg, sel)
        np.testing.assert_array_equal(got.step, sel)
        np.testing.assert_allclose(got.var_avg, ref.var_avg[sel], rtol=RTOL)


def test_hand_values_two_steps_with_momentum():
    # μ = 0.5, α = 0.5, x0 = 1 (no noise): x1 = 1·1 − 0.5·1 = 0.5, x2 = 1·0.5 − 0.5·1 = 0; EMA γ = 0.5 from 0:
    # y0 = 1, y1 = 0.5 + 0.25 = 0.75, y2 = 0.375 + 0 = 0.375. Noise: Var x1 = α²σ² = 0.25, Var x2 = 0.25 (×1²).
    model = spec.NQM(h=[1.0], sigma2=1.0, m0=1.0)
    m = M.moments(model, spec.SGD(spec.Constant(0.5), momentum=0.5), spec.EMA(0.5), [0, 1, 2])
    np.testing.assert_allclose(m.mean_x[:, 0], [1, 0.5, 0], atol=1e-15)
    np.testing.assert_allclose(m.mean_avg[:, 0], [1, 0.75, 0.375], atol=1e-15)
    np.testing.assert_allclose(m.var_x[:, 0], [0, 0.25, 0.25 + 0.25], atol=1e-15)  # x2 = 1·x1 − 0.5 x0 + 0.5ε1


def test_semigroup():
    # (1) the cached power M^{k1+k2} is M^{k2} ∘ M^{k1}; (2) μ = 0 restarts from (m, v) after k1 steps
    alpha = np.array([0.3, 0.01, 1.7])
    pw = MapPowers(heavy_ball_step_map(alpha, 0.7, np.ones(3), 3))
    for k1, k2 in [(3, 5), (17, 64), (1, 1000)]:
        a, b = pw(k1 + k2), compose_maps(pw(k2), pw(k1))
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-14)
    model = spec.NQM(h=[1.0, 0.1], sigma2=[1.0, 3.0], m0=[1.0, 2.0], v0=[0.5, 0.0])
    opt = spec.SGD(spec.Constant(0.4))
    mid = M.moments(model, opt, spec.NoAverage(), [37])
    restart = spec.NQM(h=model.h, sigma2=model.sigma2, m0=mid.mean_x[0], v0=mid.var_x[0])
    close(M.moments(restart, opt, spec.NoAverage(), [100]), M.moments(model, opt, spec.NoAverage(), [137]))


@pytest.mark.parametrize("avg", [spec.EMA(0.0), spec.EMA(0.0, start=10, every=5), spec.NPoint(1, 9), spec.TwoPoint(0),
                                 spec.NPoint(4, 0), spec.EMA(0.9, start=500), spec.SWA(start=500),
                                 spec.TwoPoint(500), spec.SWA(length=1)])
def test_boundaries_average_equals_iterate(avg):
    model = spec.NQM(h=[1.0, 0.02], m0=1.0, v0=0.3)
    m = M.moments(model, spec.SGD(spec.Constant(0.3), momentum=0.5), avg, np.arange(0, 201, 10))  # (t−10)%5 = 0
    if isinstance(avg, spec.SWA) and avg.length == 1:      # a one-iterate window is frozen at x_0
        np.testing.assert_allclose(m.mean_avg, 1.0, rtol=1e-15)
        return
    np.testing.assert_allclose(m.mean_avg, m.mean_x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(m.var_avg, m.var_x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(m.cov_x_avg, m.var_x, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_zero_lr_leaves_moments_unchanged(mu):
    model = spec.NQM(h=[1.0, 0.1], m0=[1.0, -3.0], v0=[0.2, 0.0])
    m = M.moments(model, spec.SGD(spec.Constant(0.0), momentum=mu), spec.EMA(0.9), [0, 1, 50, 5000])
    np.testing.assert_allclose(m.mean_x, np.broadcast_to(model.m0, m.mean_x.shape), rtol=1e-10)  # 1.9x − 0.9x: rounding
    np.testing.assert_allclose(m.var_x, np.broadcast_to(model.v0, m.var_x.shape), rtol=1e-10)  # of a marginal root
    np.testing.assert_allclose(m.mean_avg, m.mean_x, rtol=1e-13)


def test_stationary_start_stays_and_long_runs_converge():
    alpha = np.array([0.05, 0.5, 1.2])
    v = S.iterate_variance(alpha)
    model = spec.NQM(h=alpha, sigma2=1.0, v0=v)
    m = M.moments(model, spec.SGD(spec.Constant(1.0)), spec.NoAverage(), [1, 10, 1000])
    np.testing.assert_allclose(m.var_x, np.broadcast_to(v, m.var_x.shape), rtol=1e-13)
    # a long run from far away converges to stationary.py for every averaging (momentum included)
    for mu in (0.0, 0.9):
        model = spec.NQM(h=[1.0, 0.2], sigma2=[1.0, 2.0], m0=5.0, v0=3.0)
        a = 0.3 * model.h
        cases = [(spec.EMA(0.99, every=3), S.ema_variance(a, 0.99, model.sigma2, mu, every=3)),
                 (spec.SWA(start=30000, length=50, every=2), S.swa_variance(a, 50, model.sigma2, mu, every=2)),
                 (spec.TwoPoint(25), S.two_point_variance(a, 25, model.sigma2, mu)),
                 (spec.NPoint(5, 7), S.n_point_variance(a, 5, 7, model.sigma2, mu))]
        for avg, want in cases:
            m = M.moments(model, spec.SGD(spec.Constant(0.3), momentum=mu), avg, [40000])
            np.testing.assert_allclose(m.var_avg[0], want, rtol=1e-11)
            np.testing.assert_allclose(m.mean_avg[0], 0.0, atol=1e-12)


@given(avg=averagings, mu=st.sampled_from([0.0, 0.5, 0.9]), lr=st.floats(0.01, 1.5))
@settings(deadline=None, max_examples=30)
def test_joint_covariance_is_psd(avg, mu, lr):
    model = spec.NQM(h=[1.0, 0.1, 0.003], sigma2=1.0, m0=1.0, v0=0.5)
    m = M.moments(model, spec.SGD(spec.Constant(lr), momentum=mu), avg, np.arange(0, 120, 7))
    assert np.all(m.var_x >= 0) and np.all(m.var_avg >= 0)
    tol = 1e-12 * (m.var_x * m.var_avg + 1e-300)
    assert np.all(m.cov_x_avg ** 2 <= m.var_x * m.var_avg + tol)
    assert np.all(M.excess_loss(model, m.mean_avg, m.var_avg) >= 0)


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_stability_threshold(mu):
    edge = 2 * (1 + mu)
    model = spec.NQM(h=[edge * 0.999, edge * 1.001], sigma2=1.0, m0=1.0)
    opt = spec.SGD(spec.Constant(1.0), momentum=mu)
    np.testing.assert_array_equal(M.diverges(model, opt), [False, True])
    m = M.moments(model, opt, spec.EMA(0.9), [200, 400, 10 ** 6])
    assert np.all(np.isfinite(m.var_x[:, 0])) and m.var_x[2, 0] <= 1.0001 * S.iterate_variance(edge * 0.999, 1.0, mu)
    assert m.var_x[1, 1] > m.var_x[0, 1] and np.isinf(m.var_x[2, 1]) and not np.any(np.isnan(m.var_avg))


def test_noise_free_limit():
    alpha, t = np.array([0.05, 0.5, 1.5]), np.arange(0, 60, 3)
    model = spec.NQM(h=alpha, sigma2=0.0, m0=[1.0, -2.0, 0.5], v0=0.3)
    m = M.moments(model, spec.SGD(spec.Constant(1.0)), spec.NoAverage(), t)
    np.testing.assert_allclose(m.mean_x, model.m0 * (1 - alpha) ** t[:, None], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(m.var_x, 0.3 * (1 - alpha) ** (2 * t[:, None]), rtol=1e-12, atol=1e-300)


def test_excess_loss_by_hand():
    model = spec.NQM(h=[2.0, 0.5])
    np.testing.assert_allclose(M.excess_loss(model, [1.0, 2.0], [0.5, 0.0]), 0.5 * (2 * 1.5 + 0.5 * 4))


def test_bad_input_raises():
    model = spec.NQM(h=[1.0])
    with pytest.raises(ValueError, match="steps"):
        M.moments(model, spec.SGD(spec.Constant(0.1)), spec.NoAverage(), [-1])
    with pytest.raises(ValueError, match="cover"):
        M.moments_from_alpha(model, 0.0, spec.NoAverage(), [(0, 5, np.array([0.1]))], [10])
