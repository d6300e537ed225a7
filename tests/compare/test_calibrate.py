"""Calibration recovers the parameters the synthetic NQM runs were generated with (tests/compare/conftest.py).

Tolerances: the probe moments are averages over ~120 sampled probe rows of a 400-direction NQM per seed (relative
s.e. of the held-out gain ≈ 10-15%), so curvature (dominated by η*, s.e. ≈ 2%) is asked within 5% and the noise
mass within 25%; the loss floor within 5 × the eval noise."""

import numpy as np
import pytest

from compare import calibrate, load
from common.rundir import load_run

H_RTOL, S_RTOL = 0.05, 0.25


@pytest.fixture(scope="module")
def CFG(synth_cfg):
    return synth_cfg


@pytest.fixture(scope="module")
def cal(synth_runs):
    setup = load.group_runs([load_run(p) for p in synth_runs])[0]
    return calibrate.calibrate(setup)


def test_effective_lr_from_config(cal):
    assert cal.lam_eff == pytest.approx(0.01 / (1 - 0.9))


def test_recovers_curvature_and_noise(cal, CFG):
    assert cal.h[0] == pytest.approx(CFG.h[0], rel=H_RTOL)
    assert cal.s[0] == pytest.approx(CFG.s[0], rel=S_RTOL)
    assert cal.seed_h.shape == (3, 1) and np.all(np.isfinite(np.diag(cal.cov)))


def test_eta_star_is_inverse_curvature(cal, CFG):
    # M3 (theory.md §3.1): η* = 1/h₀ exactly for one scale
    assert cal.probes.eta_star[0] == pytest.approx(1 / CFG.h[0], rel=H_RTOL)
    assert cal.probes.taylor_curv[0] == pytest.approx(CFG.h[0], rel=0.01)


def test_heldout_root_near_lambda_eff(cal):
    assert cal.probes.root[0] / cal.lam_eff == pytest.approx(1.0, abs=0.5)


def test_floor_recovered(cal, CFG):
    assert cal.floor == pytest.approx(CFG.floor, abs=5 * CFG.eval_noise)
    assert cal.window == (2000, 4000)


def test_two_scale_fit_runs(synth_runs):
    setup = load.group_runs([load_run(p) for p in synth_runs])[0]
    c2 = calibrate.calibrate(setup, scales=2)
    assert c2.h.size == 2 and np.all(c2.h > 0)


def test_quadratic_range_keeps_a_parabola_and_drops_an_overshoot():
    """An exact parabola g = η(2 − η) (max 1 at η = 1) on a log grid stays in range until g < −4, i.e. η > 1 + √5
    (by hand: η² − 2η − 4 = 0); an overshooting row (mnist-like: +0.01 then −2.7, −600) is cut at the explosion."""
    from compare.calibrate import _quadratic_range
    eta = np.array([0.1, 0.3, 1.0, 2.0, 3.0, 3.3, 10.0])
    keep = _quadratic_range(eta * (2 - eta))
    assert keep.tolist() == [True, True, True, True, True, False, False]      # 1 + √5 ≈ 3.236
    row = np.array([6.8e-4, 2.0e-3, 5.4e-3, 1.03e-2, 2.7e-3, -2.68, -29.2, -575.0, np.nan])
    assert _quadratic_range(row).tolist() == [True] * 5 + [False] * 4
    assert not _quadratic_range(np.array([-1.0, -2.0])).any()                 # no positive gain: nothing to fit
