"""theory.probes: one-step probe, fixed-batch loss along the trajectory, gradient alignment
(theory.md §3.1, §3.2, §3.7)."""

import numpy as np
import pytest

from theory import probes as P, spec, stationary as S

MC_SIGMAS = 5   # Monte Carlo agreement within 5 standard errors (fixed seed)


def test_one_step_is_exactly_quadratic():
    rng = np.random.default_rng(0)
    h, u = rng.uniform(0.01, 2, 20), rng.normal(size=20)
    q = P.one_step(h, u ** 2)
    for eta in (0.0, 0.3, 1.7, 5.0):
        direct = 0.5 * np.sum(h * ((1 - eta * h) * u) ** 2)      # ℓ_B(θ − η H u) − c_B
        assert q.loss(eta) == pytest.approx(direct, rel=1e-12)
    assert 0 < q.rho <= 1 and q.min_loss == pytest.approx(q.loss(q.eta_star), rel=1e-12)
    single = P.one_step([0.4, 0.4], [1.0, 3.0])                   # M3: one curvature → ρ = 1, η* = 1/h
    assert single.rho == pytest.approx(1.0) and single.eta_star == pytest.approx(2.5)
    assert single.min_loss == pytest.approx(0.0, abs=1e-15)


def test_stationary_heldout_parabola_and_gap():
    model = spec.NQM(h=[1.0, 0.1, 0.01], sigma2=[1.0, 2.0, 0.5])
    lr = 0.1
    eta = np.array([0.0, lr / 4, lr / 2, lr, 3 * lr])
    p = P.stationary_probe(model, lr, eta)
    v = S.iterate_variance(lr * model.h, model.sigma2)
    np.testing.assert_allclose(p.heldout_gain, np.sum(model.h ** 2 * v) * eta * (1 - eta / lr), atol=1e-15)
    np.testing.assert_allclose(p.gap, eta * np.sum(model.h ** 2 * model.sigma2), rtol=1e-12)
    np.testing.assert_allclose(p.batch_gain_per_direction.sum(axis=1), p.batch_gain)
    assert np.argmax(P.stationary_probe(model, lr, np.linspace(0, lr, 101)).heldout_gain) == 50   # max at λ/2


def test_heldout_gain_monte_carlo():
    model = spec.NQM(h=[1.0, 0.3], sigma2=[1.0, 2.0])
    lr, eta, n = 0.2, 0.15, 400_000
    v = S.iterate_variance(lr * model.h, model.sigma2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2)) * np.sqrt(v)
    e = rng.normal(size=(n, 2)) * np.sqrt(model.sigma2)
    xn = x - eta * model.h * (x - e)
    gain = 0.5 * np.sum(model.h * (x ** 2 - xn ** 2), axis=1)
    want = P.stationary_probe(model, lr, [eta]).heldout_gain[0]
    assert abs(gain.mean() - want) < MC_SIGMAS * gain.std() / np.sqrt(n)


def test_alignment_is_sqrt_alpha_over_two_in_m3():   # theory.md §3.7: exact for μ = 0 at stationarity
    for alpha in (0.01, 0.2, 1.0):
        p = P.stationary_probe(spec.NQM(h=[2.0] * 3, sigma2=0.7), alpha / 2.0, [0.1])
        assert p.alignment == pytest.approx(np.sqrt(alpha / 2), rel=1e-12)


def test_fixed_batch_dip_and_recovery():
    model = spec.NQM(h=[1.0, 0.05], sigma2=[1.0, 3.0])
    lr, s = 0.2, 20
    f = P.fixed_batch_loss(model, spec.SGD(spec.Constant(lr)), s, np.arange(60))
    a = lr * model.h
    assert f.dip == pytest.approx(np.sum(model.h * a * model.sigma2))
    diff = f.loss_unseen - f.loss_seen
    np.testing.assert_allclose(diff[: s + 1], 0.0, atol=0)
    j = np.arange(60 - s - 1)
    np.testing.assert_allclose(diff[s + 1:], (model.h * a * model.sigma2 * (1 - a) ** j[:, None]).sum(1), rtol=1e-12)


def test_fixed_batch_with_momentum_and_schedule_matches_simulation_covariance():
    # Cov(x_t, ε_s) is the impulse response: simulate the deterministic response to a unit ε_s
    model, mu, s = spec.NQM(h=[0.8]), 0.6, 5
    sched = spec.Step(lr=0.3, milestones=(9,), factor=0.5)
    f = P.fixed_batch_loss(model, spec.SGD(sched, momentum=mu), s, np.arange(25))
    lrs = sched.lr_at(np.arange(25)) * 0.8
    c = x = 0.0                      # torch.optim.SGD buffer per direction, c = b/h
    resp = []
    for t in range(24):
        c = mu * c + x - (1.0 if t == s else 0.0)
        x = x - lrs[t] * c
        resp.append(x)
    np.testing.assert_allclose((f.loss_unseen - f.loss_seen)[1:], 0.8 * np.array(resp), rtol=1e-12, atol=1e-15)


def test_diverged_is_flagged_not_inf():
    model = spec.NQM(h=[1.0, 10.0])
    p = P.stationary_probe(model, 0.5, [0.1], momentum=0.0)
    assert p.diverged and p.heldout_gain is None
    f = P.fixed_batch_loss(model, spec.SGD(spec.Constant(0.5)), 3, np.arange(10))
    assert f.diverged and f.loss_seen is None


@pytest.mark.parametrize("fraction, mu", [(1.0, 0.0), (0.25, 0.0), (0.25, 0.6), (0.125, 0.0)])
def test_fixed_subset_of_the_trained_batch_matches_per_example_monte_carlo(fraction, mu):
    # Monte Carlo with per-example noise: a batch's offset is the mean of B i.i.d. per-example offsets (variance
    # σ₁² = B·σ²), SGD in torch's buffer form. The loss is recorded on the first f·B examples of the batch trained
    # at step s, and on a fresh subset of the same size. Closed form: level +½Σhσ²(1/f − 1), dip unchanged.
    B, s, T, n = 8, 6, 30, 40_000
    h, sigma2, lr = np.array([1.0, 0.25]), np.array([1.0, 2.0]), 0.3
    k = int(fraction * B)
    rng = np.random.default_rng(12)
    x, buf = np.zeros((n, 2)), np.zeros((n, 2))
    seen, unseen = np.empty((T, n)), np.empty((T, n))
    xi_s = fresh = None
    for t in range(T):
        if xi_s is not None:
            seen[t] = 0.5 * np.sum(h * (x - xi_s[:, :k].mean(1)) ** 2, axis=1)
        else:   # before the batch is drawn the subset is as unseen as a fresh one; draw it now, independent of x
            pre = rng.normal(0, np.sqrt(B * sigma2), (n, k, 2)).mean(1)
            seen[t] = 0.5 * np.sum(h * (x - pre) ** 2, axis=1)
        fresh = rng.normal(0, np.sqrt(B * sigma2), (n, k, 2)).mean(1)
        unseen[t] = 0.5 * np.sum(h * (x - fresh) ** 2, axis=1)
        xi = rng.normal(0, np.sqrt(B * sigma2), (n, B, 2))
        if t == s:
            xi_s = xi
        buf = mu * buf + h * (x - xi.mean(1))
        x = x - lr * buf
    want = P.fixed_batch_loss(spec.NQM(h=h, sigma2=sigma2), spec.SGD(spec.Constant(lr), momentum=mu), s,
                              np.arange(T), fraction=fraction)
    se = lambda a: a.std(axis=1, ddof=1) / np.sqrt(n)  # noqa: E731
    z_seen = (seen.mean(1) - want.loss_seen) / se(seen)
    z_dip = ((unseen - seen).mean(1) - (want.loss_unseen - want.loss_seen)) / se(unseen - seen)
    assert np.max(np.abs(z_seen)) < 4.5 and np.max(np.abs(z_dip)) < 4.5, (z_seen, z_dip)
    # and the closed form itself: the level moves by ½Σhσ²(1/f − 1), the dip does not depend on f
    whole = P.fixed_batch_loss(spec.NQM(h=h, sigma2=sigma2), spec.SGD(spec.Constant(lr), momentum=mu), s, np.arange(T))
    np.testing.assert_allclose(want.loss_unseen - whole.loss_unseen, 0.5 * np.sum(h * sigma2) * (1 / fraction - 1))
    np.testing.assert_allclose(want.loss_unseen - want.loss_seen, whole.loss_unseen - whole.loss_seen, atol=1e-15)


def test_fixed_batch_fraction_out_of_range_is_refused():
    for f in (0.0, 1.5, -0.25, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            P.fixed_batch_loss(spec.NQM(h=[1.0]), spec.SGD(spec.Constant(0.1)), 3, np.arange(10), fraction=f)
