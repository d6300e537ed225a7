"""theory.drift: the lag behind a moving optimum, against hand-derived values and against torch.optim.SGD driven
on a one-parameter quadratic whose minimum moves."""
import numpy as np
import pytest

from theory import drift


def test_settled_lag_costs_c_over_two_alpha_squared():
    # by hand: μ = 0, c = 1e-4, h = 2, λ = 0.1: r = √(c/h) = 0.0070711, lag r/(λh) = 0.035355, cost ½·2·0.035355² =
    # 0.00125; with μ = 0.9 the lag is (1 − μ) = 0.1 times as long, the cost 100 times smaller
    assert drift.stationary_lag_excess(0.1, 2.0, 1e-4) == pytest.approx(0.00125, rel=1e-12)
    assert drift.stationary_lag_excess(0.1, 2.0, 1e-4, momentum=0.9) == pytest.approx(1.25e-5, rel=1e-12)
    # at a constant LR the recursion stays where it starts
    np.testing.assert_allclose(drift.lag_excess(0.1, np.full(50, 0.1), 2.0, 1e-4, 0.9), 1.25e-5, rtol=1e-9)


def test_switch_without_momentum_relaxes_geometrically():
    # μ = 0: m_{t+1} = (1 − λ_b h) m_t − r, so m_t = m_b + (m_p − m_b)(1 − λ_b h)^t with m = −r/(λh)
    h, c, lam, lam_b = 0.5, 2e-6, 0.2, 0.05
    r = np.sqrt(c / h)
    m_p, m_b = -r / (lam * h), -r / (lam_b * h)
    t = np.arange(201)
    want = 0.5 * h * (m_b + (m_p - m_b) * (1 - lam_b * h) ** t) ** 2
    np.testing.assert_allclose(drift.lag_excess(lam, np.full(200, lam_b), h, c), want, rtol=1e-10)


def test_matches_torch_sgd_on_a_moving_quadratic():
    """torch.optim.SGD (momentum 0.9, float64) on ½h(θ − r·t)², settled at λ for 3,000 steps, then a 1/t-like
    decay: ½h(θ_t − r·t)² at every step equals lag_excess (the optimum's speed is exact, no noise)."""
    torch = pytest.importorskip("torch")
    h, c, mu, lam = 0.8, 3e-6, 0.9, 0.05
    r = float(np.sqrt(c / h))
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=lam, momentum=mu)

    def step(t, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        (0.5 * h * (theta - r * t) ** 2).sum().backward()
        opt.step()

    settle = 3000
    for t in range(settle):
        step(t, lam)
    lrs = lam / (1 + 0.02 * np.arange(400))
    seen = [0.5 * h * (theta.item() - r * settle) ** 2]
    for i, lr in enumerate(lrs):
        step(settle + i, float(lr))
        seen.append(0.5 * h * (theta.item() - r * (settle + i + 1)) ** 2)
    np.testing.assert_allclose(drift.lag_excess(lam, lrs, h, c, mu), seen, rtol=1e-7)
    # the decayed LR lags much further behind than the settled one
    assert seen[-1] > 50 * seen[0]


def test_vectorised_over_curvatures_and_linear_in_c():
    hs = np.array([0.1, 1.0, 5.0])
    lrs = np.full(30, 0.01)
    one = drift.lag_excess(0.05, lrs, hs, 1.0, 0.5)
    assert one.shape == (31, 3)
    np.testing.assert_allclose(drift.lag_excess(0.05, lrs, hs, 7e-7, 0.5), 7e-7 * one, rtol=1e-12)
    for j, hj in enumerate(hs):
        np.testing.assert_allclose(one[:, j], drift.lag_excess(0.05, lrs, hj, 1.0, 0.5), rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"h": 0.0}, "curvature"), ({"drift": -1e-6}, "drift c"), ({"momentum": 1.0}, "momentum"),
    ({"lr_start": 0.0}, "lr_start"), ({"lrs": [0.1, np.nan]}, "lrs"),
])
def test_bad_input_is_refused(kwargs, match):
    args = {"lr_start": 0.1, "lrs": [0.1, 0.1], "h": 1.0, "drift": 1e-6, "momentum": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        drift.lag_excess(**args)


@pytest.mark.parametrize("k", [0.25, 1.0, 4.0])
def test_a_one_over_t_cooldown_falls_ever_further_behind(k):
    """λ_t = λ/(1 + λHt) without momentum: α(t) → (h_d/H)/t, and m' = −(h_d/H)m/t − r (an ODE solved by hand) gives
    m_t ≈ −r t/(1 + h_d/H), a cost c t²/(2(1 + h_d/H)²) (theory.md §3.12); within 2 % after 4,000 steps."""
    lam, H, c, T = 0.05, 2.0, 1e-6, 4000
    lrs = lam / (1 + lam * H * np.arange(T))
    cost = drift.lag_excess(lam, lrs, k * H, c)[-1]
    assert cost == pytest.approx(c * T ** 2 / (2 * (1 + k) ** 2), rel=0.02)
