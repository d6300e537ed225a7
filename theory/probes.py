"""Predictions for the probe experiments: one GD step on a fixed batch, the loss of a fixed batch along the
trajectory, and gradient alignment (theory.md §3.1, §3.2, §3.7).

Per direction x = u_kᵀ(θ − θ*), a batch B has minimiser offset ε_B (variance σ²) and loss
ℓ_B − c_B = ½ Σ h (x − ε_B)² (theory.md §2.1). A *fresh* batch is independent of θ; then E(x − ε_B)² = m² + v + σ².
A probe step θ − η g_B (no momentum) maps x → (1 − ηh) x + ηh ε_B. Unstable training rates (α ≥ 2(1+μ)) give a
result flagged ``diverged`` with ``None`` fields instead of inf/NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .moments import alpha_phases, build_phases, diverges, moments, transition_matrix
from .spec import NQM, SGD, NoAverage
from . import stationary as st

__all__ = ["OneStep", "one_step", "ProbePrediction", "probe_at", "stationary_probe", "FixedBatchLoss",
           "fixed_batch_loss", "gradient_alignment"]


@dataclass(frozen=True)
class OneStep:
    """ℓ_B(θ − ηg_B) − c_B = A − 2Bη + Cη² (theory.md §3.1): exactly quadratic in η."""

    A: float      # ½ uᵀHu (loss units)
    B: float      # ½ uᵀH²u
    C: float      # ½ uᵀH³u
    eta_star: float   # B/C, the minimising probe LR (LR units)
    rho: float        # B²/(AC) ∈ (0, 1]; the minimum is A(1 − ρ)
    min_loss: float   # A(1 − ρ) = A − B²/C

    def loss(self, eta) -> np.ndarray:
        eta = np.asarray(eta, dtype=float)
        return self.A - 2 * self.B * eta + self.C * eta * eta


def one_step(h, u2) -> OneStep:
    """Coefficients from curvatures h and the squared offsets u² = (x − ε_B)² per direction (or their means).

    Example: ``one_step([1., 2.], [1., 1.]).eta_star`` → 5/9.
    """
    h, u2 = np.broadcast_arrays(np.asarray(h, dtype=float), np.asarray(u2, dtype=float))
    a, b, c = (0.5 * float(np.sum(h ** j * u2)) for j in (1, 2, 3))
    if c <= 0:
        return OneStep(a, b, c, float("nan"), float("nan"), a)
    return OneStep(a, b, c, b / c, b * b / (a * c), a - b * b / c)


@dataclass(frozen=True)
class ProbePrediction:
    """Expected one-step probe curves over a grid of probe LRs η, at a state (m, v) (theory.md §3.1, §3.7)."""

    diverged: bool
    eta: np.ndarray                       # probe LRs, LR units
    batch: OneStep | None                 # expected quadratic for a fresh batch B: E(x−ε)² = m² + v + σ²
    batch_gain: np.ndarray | None         # E[ℓ_B(θ) − ℓ_B(θ − ηg_B)] = Σ ½h(m²+v+σ²)(2ηh − η²h²)
    heldout_gain: np.ndarray | None       # E[L(θ) − L(θ − ηg_B)] = Σ ½h[(2ηh − η²h²)(m²+v) − η²h²σ²]
    gap: np.ndarray | None                # batch_gain − heldout_gain = η tr(H²Σ)
    batch_gain_per_direction: np.ndarray | None   # [len(eta), D]
    alignment: float | None               # cos(g_B, g) ≈ √(E‖Hx‖² / (E‖Hx‖² + tr(H²Σ)))


def gradient_alignment(model: NQM, mean, var) -> float:
    """cos(g_B, g) ≈ √(E‖Hx‖²/(E‖Hx‖² + tr(H²Σ))) at a state with moments (mean, var) (theory.md §3.7)."""
    hx = float(np.sum(model.h ** 2 * (np.asarray(mean) ** 2 + np.asarray(var))))
    noise = float(np.sum(model.h ** 2 * model.sigma2))
    return float(np.sqrt(hx / (hx + noise))) if hx + noise > 0 else float("nan")


def probe_at(model: NQM, mean, var, eta) -> ProbePrediction:
    """Probe predictions at a state with per-direction moments (mean, var), e.g. a row of ``moments(...)``."""
    eta = np.atleast_1d(np.asarray(eta, dtype=float))
    mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
        return ProbePrediction(True, eta, None, None, None, None, None, None)
    h, s2 = model.h, model.sigma2
    e2 = mean ** 2 + var
    q = 2 * eta[:, None] * h - (eta[:, None] * h) ** 2              # 2ηh − η²h², [len(eta), D]
    per_dir = 0.5 * h * (e2 + s2) * q
    held = np.sum(0.5 * h * (q * e2 - (eta[:, None] * h) ** 2 * s2), axis=1)
    batch = per_dir.sum(axis=1)
    return ProbePrediction(False, eta, one_step(h, e2 + s2), batch, held, batch - held, per_dir,
                           gradient_alignment(model, mean, var))


def stationary_probe(model: NQM, lr: float, eta, momentum: float = 0.0) -> ProbePrediction:
    """Probe predictions at the stationary state of training LR ``lr`` (zero mean, v = v∞ of theory.md §2.4/§2.6).

    For μ = 0 the held-out gain is (Σ h² v∞) η (1 − η/λ) (theory.md §3.1): roots at 0 and λ, maximum at λ/2.
    Example: ``stationary_probe(NQM(h=[1.]), 0.1, [0.05]).heldout_gain`` → Σh²v∞·0.05·0.5.
    """
    alpha = lr * model.h
    if np.any(alpha >= st.max_stable_alpha(momentum)):
        return ProbePrediction(True, np.atleast_1d(np.asarray(eta, dtype=float)), None, None, None, None, None, None)
    v = st.iterate_variance(alpha, model.sigma2, momentum)
    return probe_at(model, np.zeros(model.dim), v, eta)


@dataclass(frozen=True)
class FixedBatchLoss:
    """E ℓ_B(θ_t) − c_B for a batch B used at step ``used_at`` vs a never-seen batch (theory.md §3.2)."""

    diverged: bool
    steps: np.ndarray
    used_at: int
    loss_seen: np.ndarray | None      # ½Σh(m² + v + σ²/f − 2Cov(x_t, ε_B)) [T], f the recorded fraction
    loss_unseen: np.ndarray | None    # ½Σh(m² + v + σ²/f) [T]
    dip: float | None                 # loss_unseen − loss_seen right after the step: Σ h α_s σ²


def fixed_batch_loss(model: NQM, opt: SGD, used_at: int, steps, fraction: float = 1.0) -> FixedBatchLoss:
    """Fixed-batch loss along the trajectory, any schedule and momentum (theory.md §3.2).

    Cov(x_t, ε_B) = α_s [Φ(t, s+1)]₀₀ σ² for t > s (μ = 0: α_s Π_{r=s+1}^{t−1}(1 − α_r) σ²), else 0.
    Example: ``fixed_batch_loss(NQM(h=[1.]), SGD(Constant(.1)), 10, np.arange(30)).dip`` → 0.1.

    ``fraction`` f: the loss is recorded on a fixed subset S of f·B of the batch's examples (what
    ``empirical.run --bank-fraction`` records), and a batch's minimiser offset is the mean of i.i.d. per-example
    offsets, so σ² = σ₁²/B. Then Var ε_S = σ²/f, while Cov(ε_S, ε_B) = σ₁²/B = σ² for S ⊂ B: the subset's curve is
    ½Σh(m² + v + σ²/f − 2Cov(x_t, ε_B)) — its level rises by ½Σhσ²(1/f − 1), its dip and recovery are those of the
    whole batch (the unseen curve is that of an unseen subset of the same size).
    """
    s = int(used_at)
    if s < 0:
        raise ValueError(f"used_at must be a step >= 0, got {used_at}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1] (the share of the batch whose loss is recorded), got {fraction}")
    steps = np.atleast_1d(np.asarray(steps)).astype(np.int64)
    total = max(int(steps.max()), s + 1)
    m = moments(model, opt, NoAverage(), steps)
    bad = bool(np.any(diverges(model, opt, total)))
    if bad or not (np.all(np.isfinite(m.var_x)) and np.all(np.isfinite(m.mean_x))):
        return FixedBatchLoss(True, steps, s, None, None, None)
    phases = build_phases(alpha_phases(model, opt, total), model.dim, opt.momentum, model.sigma2)
    alpha_s = float(opt.schedule.lr_at(np.array([s]))[0]) * model.h
    unseen = 0.5 * np.sum(model.h * (m.mean_x ** 2 + m.var_x + model.sigma2 / fraction), axis=1)
    cov = np.zeros_like(m.var_x)
    for i, t in enumerate(steps):
        if t > s:
            cov[i] = alpha_s * transition_matrix(phases, s + 1, int(t))[0, 0] * model.sigma2
    seen = unseen - np.sum(model.h * cov, axis=1)
    return FixedBatchLoss(False, steps, s, seen, unseen, float(np.sum(model.h * alpha_s * model.sigma2)))
