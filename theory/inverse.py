"""Inverse map: an LR schedule → the weights of an average of constant-LR iterates (theory.md §3.6).

In one direction every schedule and every linear average give x_T = (bias term) + Σ_s κ_s ε_s. The constant-rate
run θ_t (rate α, momentum μ) has noise impulse response k_j = α u_j with u_0 = 1, u_1 = c, u_j = c u_{j−1} − μ u_{j−2},
c = 1 + μ − α (μ = 0: k_j = α a^j). A weighted average Σ_t c_t θ_t reproduces the scheduled kernel w exactly iff the
reversed weights solve the lower-triangular Toeplitz system k ⊛ c = w, whose inverse filter is the FIR
(1, −c, μ)/α: c_{s+1} = (w_s − c w_{s+1} + μ w_{s+2})/α (μ = 0: (w_s − a w_{s+1})/α, theory.md §3.6). The weight c_0
on θ_0 (which carries no noise) is set so that the initial-condition coefficient matches too; then Σ c = 1, i.e.
Σ c = Σ w + (bias coefficient of the schedule), and the average equals the scheduled final iterate path by path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from .moments import excess_loss, moments
from .spec import NQM, SGD, NoAverage, Schedule

__all__ = ["schedule_kernel", "constant_kernel", "InverseResult", "averaging_weights", "rate_table_weights",
           "average_kernel", "inverse"]


def _check_mu(mu: float) -> None:
    if not (np.isfinite(mu) and 0 <= mu < 1):
        raise ValueError(f"momentum must be in [0, 1), got {mu}")


def schedule_kernel(alphas: np.ndarray, momentum: float = 0.0) -> np.ndarray:
    """Noise kernel κ_s (s < T) of x_T for the per-step rates α_0..α_{T−1} in one direction (theory.md §3.6).

    κ_s = α_s [Φ(T, s+1)]₀₀; μ = 0: κ_s = α_s Π_{r>s}(1 − α_r). Example: ``schedule_kernel([0.5, 0.5])`` → [0.25, 0.5].
    With momentum the step s map is torch.optim.SGD's: momentum term μ ρ_s (x_s − x_{s−1}), ρ_s = α_s/α_{s−1}
    (theory/spec.py docstring).
    """
    _check_mu(momentum)
    al = np.asarray(alphas, dtype=float)
    if al.ndim != 1 or np.any(~np.isfinite(al)) or np.any(al < 0):
        raise ValueError("alphas must be a 1-D array of finite rates >= 0")
    t = al.size
    if momentum and np.any((al[:-1] == 0) & (al[1:] != 0)):
        raise ValueError("with momentum, a rate of exactly 0 followed by a non-zero rate is not supported")
    rho = np.ones(t)
    rho[1:] = np.divide(al[1:], al[:-1], out=np.ones(t - 1), where=al[:-1] != 0) if t > 1 else rho[1:]
    out = np.empty(t)
    r0, r1 = 1.0, 0.0                       # row e₀ᵀ Φ(T, s+1) = (∂x_T/∂x_{s+1}, ∂x_T/∂x_s), built backwards
    for s in range(t - 1, -1, -1):
        out[s] = al[s] * r0
        c = 1.0 + momentum * rho[s] - al[s]
        r0, r1 = r0 * c + r1, -momentum * rho[s] * r0
    return out


def _heavy_ball_filter(alpha: float, mu: float, x: np.ndarray) -> np.ndarray:
    """x filtered by the constant-rate heavy-ball recursion y_j = (1 + μ − α) y_{j−1} − μ y_{j−2} + α x_j
    (theory.md §2.6): its impulse response is :func:`constant_kernel`."""
    return lfilter([alpha], [1.0, -(1.0 + mu - alpha), mu], x)


def constant_kernel(alpha: float, T: int, momentum: float = 0.0) -> np.ndarray:
    """Heavy-ball impulse response k_j, j < T, of constant-rate iterates: the weight of ε_s in θ_{s+1+j}
    (theory.md §2.6, §3.6); k_0 = α, k_1 = α(1 + μ − α), k_j = (1 + μ − α) k_{j−1} − μ k_{j−2}; μ = 0: α a^j.

    The one definition of this response (tests/synthetic_runs.py draws its fixed-batch dips from it).
    Example: ``constant_kernel(0.5, 3)`` → [0.5, 0.25, 0.125].
    """
    _check_mu(momentum)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite rate > 0, got {alpha}")
    if int(T) != T or T < 0:
        raise ValueError(f"T must be an integer number of steps >= 0, got {T}")
    unit = np.zeros(int(T))
    unit[:1] = 1.0
    return _heavy_ball_filter(float(alpha), momentum, unit)


def _weights(w: np.ndarray, alpha: float, mu: float, d_sched: float) -> np.ndarray:
    t = w.size
    c = 1.0 + mu - alpha
    wp = np.concatenate([w, [0.0, 0.0]])
    cw = np.zeros(t + 1)
    cw[1:] = (wp[:t] - c * wp[1:t + 1] + mu * wp[2:t + 2]) / alpha
    d = 1.0 - np.concatenate([[0.0], np.cumsum(constant_kernel(alpha, t, mu))])   # θ=1 for ε≡1, x₀=1: d_t = 1 − Σ k
    cw[0] = d_sched - np.dot(cw[1:], d[1:])                       # match the x₀ (bias) coefficient exactly
    return cw


def averaging_weights(schedule: Schedule, base_lr: float, h_ref: float, total: int,
                      momentum: float = 0.0) -> np.ndarray:
    """Weights c_0..c_T over the iterates of a constant-``base_lr`` run whose average equals the final iterate of
    ``schedule`` after ``total`` steps, in a direction of curvature ``h_ref`` (theory.md §3.6).

    Example: ``averaging_weights(Linear(lr=.1, total=100, start=50), .1, 1., 100)`` sums to 1 and is >= 0.
    """
    _check_mu(momentum)
    if not (np.isfinite(base_lr) and base_lr > 0 and np.isfinite(h_ref) and h_ref > 0):
        raise ValueError(f"base_lr and h_ref must be finite and > 0, got {base_lr}, {h_ref}")
    if int(total) != total or total < 1:
        raise ValueError(f"total must be an integer number of steps >= 1, got {total}")
    return rate_table_weights(schedule.lr_at(np.arange(int(total))) * h_ref, base_lr * h_ref, momentum)


def rate_table_weights(alphas: np.ndarray, alpha: float, momentum: float = 0.0) -> np.ndarray:
    """:func:`averaging_weights` for a schedule given as a table of per-step rates α_0..α_{T−1} (α_t = λ_t h):
    weights c_0..c_T over θ_0..θ_T of the constant-rate-``alpha`` run from the same start (theory.md §3.6).

    For a target that departs from the constant rate at some step, slice both runs from that step on (the
    shared history enters through θ_0; with momentum the inherited velocity is matched only approximately).
    Example: ``rate_table_weights([0.1] * 5, 0.1)`` → [0, 0, 0, 0, 0, 1] (the run itself: its last iterate).
    """
    _check_mu(momentum)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite rate > 0, got {alpha}")
    w = schedule_kernel(np.asarray(alphas, dtype=float), momentum)
    d_sched = 1.0 - np.sum(w)                                     # same identity as for d_t: ε≡1, x₀=1 ⇒ x_T=1
    return _weights(w, float(alpha), momentum, d_sched)


def average_kernel(weights: np.ndarray, alpha: float, momentum: float = 0.0) -> np.ndarray:
    """Noise kernel κ_s (s < T) of Σ_t c_t θ_t over θ_0..θ_T of a constant-rate run (theory.md §3.6): the weight
    of ε_s in the average, Σ_{t>s} c_t k_{t−1−s} with k the run's impulse response (:func:`constant_kernel`).
    Compare with :func:`schedule_kernel` of a target to see how far an average is from the schedule."""
    c = np.asarray(weights, dtype=float)
    total = c.size - 1
    if total < 1:
        return np.zeros(0)
    rev = c[:0:-1]                                                # c_T, …, c_1
    return np.convolve(rev, constant_kernel(alpha, total, momentum))[:total][::-1]


@dataclass(frozen=True)
class InverseResult:
    """Outcome of :func:`inverse`. Losses are excess losses ½Σh(m²+v) over the model's spectrum (theory.md §2.3)."""

    weights: np.ndarray      # c_t over θ_0..θ_T of the constant-LR run
    negative: bool           # some weight < 0 (beyond rounding, 1e-12 of the largest)
    sum_weights: float       # Σ c (= 1: noise kernel plus bias coefficient)
    kernel_error: float      # max |reconstructed κ − scheduled κ| at h_ref
    loss_average: float      # the weighted average of the constant-LR run, every direction with the same weights
    loss_schedule: float     # the scheduled run's final iterate
    h_ref: float             # curvature the weights were solved for, 1/(LR units)


def inverse(model: NQM, opt: SGD, base_lr: float, total: int, h_ref: float | None = None) -> InverseResult:
    """Schedule → weights over constant-LR iterates, and how well one weight vector serves the whole spectrum.

    ``h_ref`` defaults to the curvature that dominates the stationary excess loss, Σh²σ²/Σhσ² (theory.md §2.4:
    loss floor ∝ Σ h² σ²). The weights are exact at h_ref; other curvatures show up in ``loss_average``.
    """
    mu = opt.momentum
    if h_ref is None:
        hs2 = model.h * model.sigma2
        h_ref = float(np.sum(model.h * hs2) / np.sum(hs2)) if np.sum(hs2) > 0 else float(np.median(model.h))
    cw = averaging_weights(opt.schedule, base_lr, h_ref, total, mu)
    al = opt.schedule.lr_at(np.arange(int(total))) * h_ref
    w = schedule_kernel(al, mu)
    rev = cw[:0:-1]                                               # c_T, …, c_1
    kern = average_kernel(cw, base_lr * h_ref, mu)
    m_avg, v_avg = np.empty(model.dim), np.empty(model.dim)
    for k in range(model.dim):
        a = base_lr * model.h[k]
        kr = _heavy_ball_filter(a, mu, rev)                     # the average's noise kernel, reversed
        d = 1.0 - np.concatenate([[0.0], np.cumsum(constant_kernel(a, int(total), mu))])
        x0 = float(np.dot(cw, d))
        m_avg[k] = model.m0[k] * x0
        v_avg[k] = model.sigma2[k] * float(np.dot(kr, kr)) + model.v0[k] * x0 * x0
    sch = moments(model, opt, NoAverage(), [int(total)])
    big = np.max(np.abs(cw)) if cw.size else 0.0
    return InverseResult(weights=cw, negative=bool(np.any(cw < -1e-12 * big)), sum_weights=float(np.sum(cw)),
                         kernel_error=float(np.max(np.abs(kern - w))), h_ref=float(h_ref),
                         loss_average=float(excess_loss(model, m_avg, v_avg)),
                         loss_schedule=float(excess_loss(model, sch.mean_x[0], sch.var_x[0])))
