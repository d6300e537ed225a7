"""The cost of lagging behind a moving optimum, for any LR sequence (theory.md §3.12).

A direction of curvature h_d whose minimum moves at a constant speed r per step adds c τ² to the structure function
D(τ), c = h_d r² (loss/step², §3.8a). The noise does not enter the mean of a linear model, so the expected excess is
the noise part (theory.moments) plus ½ h_d m_t², m_t = E[x_t] − x*_t the mean lag, which follows the deterministic
heavy-ball recursion in torch.optim.SGD's convention (b ← μb + g, θ ← θ − λ_t b):

    b_{t+1} = μ b_t + h_d m_t,     m_{t+1} = m_t − λ_t b_{t+1} − r.

At a constant LR λ the lag settles at m∞ = −(1 − μ) r/(λ h_d), costing ½ h_d m∞² = c/(2 α_eff²), α_eff = λh_d/(1 − μ):
a lower LR lags further behind and pays more. Only the combination c is seen in D(τ); h_d is the caller's choice
(compare/branch_prediction.py gives the range the data allow). numpy only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["stationary_lag_excess", "lag_excess"]


def _check(h, drift, momentum):
    h = np.asarray(h, dtype=float)
    if np.any(~np.isfinite(h)) or np.any(h <= 0):
        raise ValueError(f"the drift's curvature h_d must be finite and > 0, got {h}")
    if not (np.isfinite(drift) and drift >= 0):
        raise ValueError(f"the drift c = h_d r² must be finite and >= 0 (loss/step²), got {drift}")
    if not (np.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return h


def stationary_lag_excess(lr: float, h, drift: float, momentum: float = 0.0) -> np.ndarray:
    """½ h_d m∞² = c (1 − μ)²/(2 λ² h_d²): the steady cost of the lag at a constant LR λ (loss units, per h_d)."""
    h = _check(h, drift, momentum)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    return drift * (1.0 - momentum) ** 2 / (2.0 * lr ** 2 * h ** 2)


def lag_excess(lr_start: float, lrs, h, drift: float, momentum: float = 0.0) -> np.ndarray:
    """½ h_d m_t² at t = 0, 1, …, len(lrs): the lag settled at ``lr_start`` before the first update, then the
    updates run with ``lrs[0]``, ``lrs[1]``, … (loss units; shape (len(lrs) + 1,) + shape of ``h``).

    Exact in the model (the recursion of the module docstring, stepped once per update): a branch from a parent at
    λ that switches to λ_b starts from the parent's settled lag and relaxes to the new one at rate ≈ α_eff(λ_b).
    """
    h = _check(h, drift, momentum)
    lrs = np.asarray(lrs, dtype=float)
    if lrs.ndim != 1 or np.any(~np.isfinite(lrs)) or np.any(lrs < 0):
        raise ValueError("lrs must be a 1-D sequence of finite LRs >= 0")
    if not (np.isfinite(lr_start) and lr_start > 0):
        raise ValueError(f"lr_start must be finite and > 0, got {lr_start}")
    r = np.sqrt(drift / h)                              # speed of the optimum (parameter units per step)
    m = -(1.0 - momentum) * r / (lr_start * h)          # settled lag at lr_start
    b = -r / lr_start                                   # its settled momentum buffer (λ b = −r)
    out = np.empty((lrs.size + 1,) + h.shape)
    out[0] = 0.5 * h * m ** 2
    for i, lr in enumerate(lrs):
        b = momentum * b + h * m
        m = m - lr * b - r
        out[i + 1] = 0.5 * h * m ** 2
    return out
