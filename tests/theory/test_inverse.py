"""theory.inverse: schedule → averaging weights (theory.md §3.6), checked path by path with simulated noise."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import inverse as I, spec

KERNEL_TOL = 1e-12   # the brief's bar: weights reproduce the scheduled kernel to 1e-12


def simulate(alphas, mu, eps, x0):
    """torch.optim.SGD path per direction, buffer c = b/h: c ← μc + (x − ε), x ← x − α_t c, c_{−1} = 0: all iterates."""
    xs, c, x = [x0], 0.0, x0
    for a, e in zip(alphas, eps):
        c = mu * c + (x - e)
        x = x - a * c
        xs.append(x)
    return np.array(xs)


def test_kernels_by_hand():
    np.testing.assert_allclose(I.schedule_kernel([0.5, 0.5]), [0.25, 0.5])          # α_s Π_{r>s}(1−α_r)
    np.testing.assert_allclose(I.constant_kernel(0.5, 3), [0.5, 0.25, 0.125])
    # μ = 0.5, α = 0.5: u = 1, c = 1, c·1 − μ·1 = 0.5 → k = α u
    np.testing.assert_allclose(I.constant_kernel(0.5, 3, 0.5), [0.5, 0.5, 0.25])
    # μ = 0: c_{s+1} = (w_s − a w_{s+1})/α with w = (0.25, 0.5), α = 0.5: c_2 = 1, c_1 = (0.25 − 0.25)/0.5 = 0
    c = I.averaging_weights(spec.Constant(0.5), 0.5, 1.0, 2)
    np.testing.assert_allclose(c, [0, 0, 1], atol=1e-15)


@given(lr=st.floats(0.05, 1.0), frac=st.floats(0.0, 0.9), total=st.integers(2, 120),
       mu=st.sampled_from([0.0, 0.5, 0.9]), base=st.floats(0.2, 1.0), kind=st.sampled_from(["linear", "cosine", "step"]), seed=st.integers(0, 1000))
@settings(deadline=None, max_examples=40)
def test_weights_reproduce_the_kernel_and_the_path(lr, frac, total, mu, base, kind, seed):
    start = int(frac * (total - 1))
    sched = {"linear": spec.Linear(lr=lr, total=total, start=start),
             "cosine": spec.Cosine(lr=lr, total=total, start=start),
             "step": spec.Step(lr=lr, milestones=(start + 1,), factor=0.3)}[kind]
    h, b = 0.7, base * lr
    c = I.averaging_weights(sched, b, h, total, mu)
    w = I.schedule_kernel(sched.lr_at(np.arange(total)) * h, mu)
    k = I.constant_kernel(b * h, total, mu)
    recon = np.array([np.dot(c[s + 1:], k[: total - s]) for s in range(total)])   # Σ_{t>s} c_t k_{t−1−s}
    assert np.max(np.abs(recon - w)) <= KERNEL_TOL * max(1.0, np.abs(c).max())
    assert np.sum(c) == pytest.approx(1.0, abs=1e-9 * max(1.0, np.abs(c).max()))   # Σc = Σw + bias coefficient
    rng = np.random.default_rng(seed)
    eps, x0 = rng.normal(size=total), rng.normal()
    sched_path = simulate(sched.lr_at(np.arange(total)) * h, mu, eps, x0)
    const_path = simulate(np.full(total, b * h), mu, eps, x0)
    assert np.dot(c, const_path) == pytest.approx(sched_path[-1], abs=1e-9 * max(1.0, np.abs(c).max()))


def test_constant_then_linear_cooldown_has_nonnegative_weights():   # theory.md §3.6
    for total, start in [(300, 150), (1000, 800), (50, 0)]:
        c = I.averaging_weights(spec.Linear(lr=0.1, total=total, start=start), 0.1, 0.5, total)
        assert np.all(c >= -1e-12 * c.max()) and np.sum(c) == pytest.approx(1.0, abs=1e-12)


def test_constant_schedule_is_the_last_iterate():
    c = I.averaging_weights(spec.Constant(0.2), 0.2, 1.0, 50, momentum=0.9)
    np.testing.assert_allclose(c, np.eye(51)[-1], atol=1e-12)


def test_inverse_single_direction_losses_agree():
    model = spec.NQM(h=[0.5], sigma2=2.0, m0=1.0, v0=0.3)
    for mu in (0.0, 0.9):
        r = I.inverse(model, spec.SGD(spec.Linear(lr=0.1, total=300, start=150), momentum=mu), 0.1, 300)
        assert r.kernel_error <= KERNEL_TOL and r.h_ref == 0.5
        assert r.loss_average == pytest.approx(r.loss_schedule, rel=1e-9)
        assert r.sum_weights == pytest.approx(1.0, abs=1e-9)


def test_inverse_spread_spectrum_flags_mismatch():
    model = spec.NQM(h=np.logspace(-2, 0, 9), m0=1.0)
    r = I.inverse(model, spec.SGD(spec.Linear(lr=0.5, total=400, start=200)), 0.5, 400)
    assert r.kernel_error <= KERNEL_TOL and not r.negative
    assert r.loss_average != pytest.approx(r.loss_schedule, rel=1e-6)   # one weight vector cannot fit all h


def test_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        I.constant_kernel(0.0, 5)
    with pytest.raises(ValueError, match="total"):
        I.averaging_weights(spec.Constant(0.1), 0.1, 1.0, 0)
