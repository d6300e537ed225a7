"""theory.equivalence: averages vs their equivalent LR schedules in time (theory.md §3.3-3.5, §3.8)."""

import numpy as np
import pytest

from theory import equivalence as E, moments as M, spec, stationary as S


def test_ema_switch_one_direction():
    # theory.md §3.3: from mean 1, α = 0.05, γ = 0.995: EMA 0.406 vs switched SGD 0.402 after 200 steps
    model = spec.NQM(h=[1.0], sigma2=1.0, m0=1.0)
    e = E.equivalence(model, spec.SGD(spec.Constant(0.05)), spec.EMA(0.995), np.arange(0, 201, 10))
    m_avg = M.moments(model, spec.SGD(spec.Constant(0.05)), spec.EMA(0.995), [200]).mean_avg[0, 0]
    assert m_avg == pytest.approx(0.406, abs=5e-4)
    assert (1 - e.lr_eq_approx[0]) ** 200 == pytest.approx(0.402, abs=5e-4)   # the quoted run used the harmonic rule
    assert (1 - e.lr_eq[0]) ** 200 == pytest.approx(0.40120, abs=5e-6)        # exact rate: 0.995444^200
    assert e.lr_eq[0] == pytest.approx(4.556101e-3, rel=5e-7)
    assert isinstance(e.equivalent_schedule, spec.Constant)


def test_ema_from_stationarity_matches_at_the_end_and_transient_is_bounded():
    model = spec.NQM(h=[1.0], sigma2=1.0, m0=1.0)
    e = E.equivalence(model, spec.SGD(spec.Constant(0.05)), spec.EMA(0.995, start=2000), np.arange(0, 6001, 20))
    assert e.loss_avg[-1] == pytest.approx(e.loss_equiv[-1], rel=1e-6)
    assert e.max_rel_err_var < 0.15          # the switch lags the EMA's transient (theory.md §3.3: ~8-10%)
    assert e.lr_eq_scalar == pytest.approx(e.lr_eq[0], rel=1e-12)
    assert e.equivalent_schedule == spec.Piecewise(lr=0.05, boundaries=(2000,), lrs=(e.lr_eq_scalar,))


def test_swa_hyperbolic_cooldown_one_direction():
    model = spec.NQM(h=[1.0], sigma2=1.0)
    e = E.equivalence(model, spec.SGD(spec.Constant(0.05)), spec.SWA(start=2000), np.arange(0, 4001, 20))
    assert isinstance(e.equivalent_schedule, spec.Hyperbolic) and e.equivalent_schedule.start == 1999
    assert e.equivalent_schedule.tau == pytest.approx(20.0)   # τ = 1/α
    assert e.loss_avg[-1] == pytest.approx(e.loss_equiv[-1], rel=0.02)   # theory.md §3.4: ~1% at n = 1000-2000
    # with α = 1 the hyperbolic schedule is exactly the running mean of the minimisers (theory.md §3.4)
    exact = E.equivalence(spec.NQM(h=[1.0]), spec.SGD(spec.Constant(1.0)), spec.SWA(start=0), np.arange(0, 50))
    np.testing.assert_allclose(exact.loss_avg, exact.loss_equiv, rtol=1e-12)
    assert exact.max_rel_err_var < 1e-12


def test_two_point_switch_far_apart_halves_the_lr():
    model = spec.NQM(h=[1.0], sigma2=1.0)
    e = E.equivalence(model, spec.SGD(spec.Constant(0.05)), spec.TwoPoint(200), np.arange(0, 3001, 50))
    assert e.lr_eq[0] == pytest.approx(2.531733e-2, rel=5e-7)
    assert e.loss_avg[-1] == pytest.approx(e.loss_equiv[-1], rel=1e-9)
    assert e.max_rel_err_var > 0.3           # the average jumps at t = k, the run relaxes: the transient breaks it


def test_multi_timescale_table():
    # theory.md §3.8: 31 log-spaced h in [1e-3, 1], offset 1, λ = 0.5, T0 = 2000, k = 400; final step 2·T0
    model = spec.NQM(h=np.logspace(-3, 0, 31), sigma2=1.0, m0=1.0)
    opt = spec.SGD(spec.Constant(0.5))
    m = M.moments(model, opt, spec.TwoPoint(400), [4000])
    halved_opt = spec.SGD(spec.Piecewise(lr=0.5, boundaries=(2000,), lrs=(0.25,)))
    halved = M.moments(model, halved_opt, spec.NoAverage(), [4000])
    assert M.excess_loss(model, m.mean_x, m.var_x)[0] == pytest.approx(0.418, abs=5e-4)
    assert M.excess_loss(model, m.mean_avg, m.var_avg)[0] == pytest.approx(0.209, abs=5e-4)
    assert M.excess_loss(model, halved.mean_x, halved.var_x)[0] == pytest.approx(0.187, abs=5e-4)


def test_spread_spectrum_breaks_the_scalar_statement():   # theory.md §3.3 caveat
    one = E.equivalence(spec.NQM(h=[0.1] * 4, sigma2=1.0), spec.SGD(spec.Constant(0.5)), spec.EMA(0.99, start=500),
                        np.arange(0, 3001, 25))
    spread = E.equivalence(spec.NQM(h=np.logspace(-3, 0, 30), sigma2=1.0), spec.SGD(spec.Constant(0.5)),
                           spec.EMA(0.99, start=500), np.arange(0, 3001, 25))
    assert one.max_rel_err_loss_scalar < 0.2
    assert spread.max_rel_err_loss_scalar > 2 * one.max_rel_err_loss_scalar
    v = S.ema_variance(0.5 * np.logspace(-3, 0, 30), 0.99)
    np.testing.assert_allclose(S.iterate_variance(spread.lr_eq * np.logspace(-3, 0, 30)), v, rtol=1e-10)


def test_relative_errors_survive_zero_means_and_divergence():
    e = E.equivalence(spec.NQM(h=[1.0, 0.01], sigma2=[1.0, 0.0]), spec.SGD(spec.Constant(0.5)), spec.EMA(0.9, start=5),
                      np.arange(0, 200, 5))
    assert np.isfinite(e.max_rel_err_mean) and np.isfinite(e.max_rel_err_var)
    bad = E.equivalence(spec.NQM(h=[1.0, 10.0]), spec.SGD(spec.Constant(0.5)), spec.EMA(0.9), np.arange(0, 50, 5))
    assert bad.diverged and bad.equivalent.startswith("diverges")


@pytest.mark.parametrize("avg", [spec.EMA(0.99, start=100), spec.SWA(start=150, length=60, every=2),
                                 spec.TwoPoint(40), spec.NPoint(3, 25)])
@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_blocks_of_directions_give_the_same_answer(monkeypatch, avg, mu):
    # 7 directions with their own curvature, noise and offset, split into blocks of 3, 3 and 1
    model = spec.NQM(h=np.logspace(-2, 0, 7), sigma2=np.linspace(0.5, 2.0, 7), m0=np.linspace(-1, 1, 7))
    opt = spec.SGD(spec.Cosine(lr=0.05, total=400), momentum=mu)
    steps = np.arange(0, 401, 20)
    whole = E.equivalence(model, opt, avg, steps)
    monkeypatch.setattr(E, "BLOCK_DIRECTIONS", 3)
    blocks = E.equivalence(model, opt, avg, steps)
    for name in ("loss_raw", "loss_avg", "loss_equiv", "loss_equiv_scalar"):
        np.testing.assert_allclose(getattr(blocks, name), getattr(whole, name), rtol=1e-12, atol=0)
    for name in ("max_rel_err_mean", "max_rel_err_var", "max_rel_err_loss_scalar"):
        assert getattr(blocks, name) == pytest.approx(getattr(whole, name), rel=1e-12, abs=1e-15)
    # and the losses are those of the moments of the whole model, computed directly
    m = M.moments(model, opt, avg, steps)
    np.testing.assert_allclose(blocks.loss_avg, M.excess_loss(model, m.mean_avg, m.var_avg), rtol=1e-12)
    np.testing.assert_allclose(blocks.loss_raw, M.excess_loss(model, m.mean_x, m.var_x), rtol=1e-12)
