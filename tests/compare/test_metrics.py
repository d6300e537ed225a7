"""compare.metrics on hand-computed arrays."""

import numpy as np
import pytest

from compare import metrics


def test_relative_error_signed_and_zero_obs_is_nan():
    r = metrics.relative_error([1.1, 0.5, 3.0], [1.0, -1.0, 0.0])
    assert r[0] == pytest.approx(0.1)
    assert r[1] == pytest.approx(1.5)        # (0.5 − (−1))/|−1|
    assert np.isnan(r[2])


def test_mean_abs_relative_error_ignores_nan():
    assert metrics.mean_abs_relative_error([2.0, 1.0, np.nan], [1.0, 2.0, 1.0]) == pytest.approx((1.0 + 0.5) / 2)


def test_rmse_by_hand():
    assert metrics.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))


def test_seed_band_and_coverage():
    obs = np.array([[1.0, 2.0], [3.0, 4.0]])
    mean, sd, n = metrics.seed_band(obs)
    assert n == 2 and mean.tolist() == [2.0, 3.0]
    assert sd == pytest.approx([np.sqrt(2), np.sqrt(2)])
    # pred 2.0 is inside 2 ± 2√2; pred 9 is outside 3 ± 2√2
    assert metrics.band_coverage([2.0, 9.0], obs) == pytest.approx(0.5)
    assert np.isnan(metrics.band_coverage([1.0, 1.0], obs[:1]))


def test_r_squared_perfect_and_mean_model():
    y = np.array([1.0, 2.0, 4.0])
    assert metrics.r_squared(y, y) == 1.0
    assert metrics.r_squared(y, np.full(3, y.mean())) == pytest.approx(0.0)


def test_polyfit_origin_recovers_exact_parabola():
    x = np.linspace(0.1, 2, 9)
    coef, cov = metrics.polyfit_origin(x, 3 * x - 0.5 * x ** 2)
    assert coef == pytest.approx([3.0, -0.5])
    assert np.all(np.abs(cov) < 1e-20)
    with pytest.raises(ValueError, match="at least 3"):
        metrics.polyfit_origin([1.0, 2.0], [1.0, 2.0])


def test_mean_se_by_hand():
    m, se, n = metrics.mean_se([1.0, 2.0, 3.0, np.nan])
    assert (m, n) == (2.0, 3) and se == pytest.approx(1 / np.sqrt(3))
