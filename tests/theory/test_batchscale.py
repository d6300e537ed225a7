"""theory.batchscale: batch ×κ at LR ×κ and EMA decay γ^κ follows the baseline per sample seen (theory.md §2.4,
§2.6, §3.3), and the exact NQM values next to the rules."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import batchscale as B, spec, stationary as S


@given(alpha=st.floats(1e-5, 1e-3), beta=st.floats(1e-4, 1e-2), kappa=st.integers(2, 8),
       s2=st.floats(0.1, 10.0))
@settings(deadline=None, max_examples=20)
def test_small_rate_rules_keep_the_trajectory_per_sample(alpha, beta, kappa, s2):
    # Stated error (μ = 0): the stationary iterate variance is off by (κ−1)α/(2−κα) ≈ (κ−1)α/2 (exact, module
    # docstring), the EMA's by the same order in α and β = 1 − γ; along the whole trajectory (from the baseline's
    # stationary state, EMA from mid-run) the relative error of both excess losses stays below κ(α + β).
    model = spec.NQM(h=[1.0], sigma2=s2, v0=S.iterate_variance(alpha, s2))
    total = int(min(2e5, 10 / min(alpha, beta))) // kappa * kappa
    avg = spec.EMA(1 - beta, start=(total // 2) // kappa * kappa)
    err = B.trajectory_error(model, spec.SGD(spec.Constant(alpha)), avg, kappa, total, points=40)
    bound = kappa * (alpha + beta)
    assert err["loss_raw"] <= bound and err["loss_avg"] <= bound


def test_rule_variance_error_is_the_exact_stationary_ratio():
    # v∞(κα; σ²/κ)/v∞(α; σ²) − 1 computed from the heavy-ball v∞ of theory.md §2.6 directly
    for mu in (0.0, 0.9):
        alpha, kappa = np.array([0.01, 0.3, 1.0]), 3.0
        ratio = S.iterate_variance(kappa * alpha, 1.0 / kappa, mu) / S.iterate_variance(alpha, 1.0, mu) - 1
        np.testing.assert_allclose(B.rule_variance_error(alpha, kappa, mu), ratio, rtol=1e-12)
    assert np.isinf(B.rule_variance_error(np.array([0.7]), 3.0, 0.0))[0]    # κα = 2.1 ≥ 2: diverges


def test_exact_lr_and_decay_keep_the_stationary_variances():
    model = spec.NQM(h=[1.0, 0.1], sigma2=[1.0, 2.0])
    lr, mu, kappa, gamma = 0.2, 0.5, 4.0, 0.99
    lr2 = B.exact_lr(model, lr, mu, kappa)
    np.testing.assert_allclose(S.iterate_variance(lr2 * model.h, model.sigma2 / kappa, mu),
                               S.iterate_variance(lr * model.h, model.sigma2, mu), rtol=1e-10)
    g2 = B.exact_decay(lr * model.h, lr2 * model.h, gamma, model.sigma2, mu, kappa)
    for i in range(2):
        assert float(S.ema_variance(lr2[i] * model.h[i], g2[i], model.sigma2[i] / kappa, mu)) == pytest.approx(
            float(S.ema_variance(lr * model.h[i], gamma, model.sigma2[i], mu)), rel=1e-8)
    assert np.all(g2 < gamma)                       # a larger step forgets faster per step


def test_max_kappa_is_the_stability_edge():
    model = spec.NQM(h=[0.5, 2.0])
    k = B.max_kappa(model, 0.1, 0.9)
    assert k == pytest.approx(2 * 1.9 / (0.1 * 2.0))
