"""Concepts with one home in theory/, each checked against values derived by hand here: the
heavy-ball stability bound 2(1+μ) (theory.md §2.6), the harmonic EMA rule and its inverse (§3.3), and the
heavy-ball impulse response (§2.6, §3.6)."""

import numpy as np
import pytest

from theory import inverse, moments, spec, stationary

# ----------------------------------------------------------------------------------------- stability, §2.6


def test_stability_bound_by_hand():
    """μ = 0.5: the edge is α = 3. There r² − (1 + μ − α) r + μ = r² + 1.5 r + 0.5 = (r + 1)(r + 0.5) has the root
    −1 on the unit circle; just below it both roots are inside."""
    assert stationary.max_stable_alpha(0.5) == 3.0
    assert spec.SGD(spec.Constant(0.1), momentum=0.5).max_stable_alpha() == 3.0
    assert np.max(np.abs(np.roots([1.0, -(1.5 - 3.0), 0.5]))) == pytest.approx(1.0, abs=1e-12)
    assert np.max(np.abs(np.roots([1.0, -(1.5 - 2.99), 0.5]))) < 1.0


def test_every_user_of_the_bound_switches_at_the_edge():
    # v∞ = (1+μ)ασ²/((1−μ)(2(1+μ)−α)) = 1.5·2.999/(0.5·0.001) = 8997 just below the edge; no stationary law at it
    v = stationary.iterate_variance([2.999, 3.0], 1.0, 0.5)
    assert v[0] == pytest.approx(8997.0, rel=1e-9) and np.isinf(v[1])
    assert stationary.equivalent_alpha(np.inf, 1.0, 0.5) == pytest.approx(3.0)      # infinite variance ↔ the edge
    # λ = 0.3 with h = 1 and h = 10: α = 0.3 and α = 3 (at the edge: diverges)
    opt = spec.SGD(spec.Constant(0.3), momentum=0.5)
    assert moments.diverges(spec.NQM(h=[1.0, 10.0]), opt).tolist() == [False, True]


@pytest.mark.parametrize("mu", [1.0, -0.1, float("nan")])
def test_stability_bound_rejects_momentum_outside_0_1(mu):
    with pytest.raises(ValueError, match="momentum"):
        stationary.max_stable_alpha(mu)


# ----------------------------------------------------------------------------------------- harmonic rule, §3.3


def test_harmonic_rule_by_hand():
    """λ = 0.1, γ = 0.99 (β = 0.01), h = 2, μ = 0.9: λ_eff·h = 0.1·2/0.1 = 2,
    λ_eq = 0.1·0.01/(0.01 + 2) = 0.001/2.01."""
    lr_eq = 0.001 / 2.01
    assert stationary.harmonic_equivalent_lr(0.1, 0.99, 2.0, 0.9) == pytest.approx(lr_eq, rel=1e-12)
    # the same rule in rates (α = λh = 0.2): α_eq = λ_eq·h
    assert stationary.equivalent_alpha_approx(0.2, spec.EMA(0.99), 0.9) == pytest.approx(2 * lr_eq, rel=1e-12)
    # theory.md §3.3 anchor, μ = 0, h = 1: α = 0.05, γ = 0.995 → 0.05·0.005/0.055
    assert stationary.harmonic_equivalent_lr(0.05, 0.995) == pytest.approx(0.05 * 0.005 / 0.055, rel=1e-12)
    # and solved for h: β(λ/λ_eq − 1)(1 − μ)/λ = 0.01·(201 − 1)·0.1/0.1 = 2
    assert stationary.harmonic_curvature(0.1, 0.99, lr_eq, 0.9) == pytest.approx(2.0, rel=1e-12)


def test_harmonic_rule_checks_the_decay():
    with pytest.raises(ValueError, match="decay"):
        stationary.harmonic_equivalent_lr(0.1, 1.0)


# ----------------------------------------------------------------------------------------- impulse response


def test_impulse_response_by_hand():
    """k_0 = α, k_1 = cα, k_j = c k_{j−1} − μ k_{j−2}, c = 1 + μ − α. α = 0.2, μ = 0.9: c = 1.7,
    k = 0.2, 0.34, 1.7·0.34 − 0.9·0.2 = 0.398, 1.7·0.398 − 0.9·0.34 = 0.3706. μ = 0: α(1 − α)^j."""
    np.testing.assert_allclose(inverse.constant_kernel(0.2, 4, 0.9), [0.2, 0.34, 0.398, 0.3706], rtol=1e-12)
    np.testing.assert_allclose(inverse.constant_kernel(0.2, 3), [0.2, 0.16, 0.128], rtol=1e-12)
    assert inverse.constant_kernel(0.2, 0, 0.9).size == 0

