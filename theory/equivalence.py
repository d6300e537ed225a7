"""Forward map in time: an average of SGD iterates vs the SGD run with the equivalent LR schedule, and how far
the equivalence breaks (theory.md §3.3-3.5, §3.8, §3.9).

* EMA started at T0 ≈ an abrupt LR switch at T0 to λ_eq (§3.3).
* SWA from T0 ≈ the hyperbolic cooldown λ_t = λ/(1 + (n+1)/τ), n = t − T0, with τ = 1/α_eff = (1−μ)/(λh) per
  direction (spec.Hyperbolic with start T0 − 1, §3.4; exact for α = 1); with sampling every c steps
  τ = c/(1 − (1 − α_eff)^c) (→ 1/α_eff at c = 1, → c for independent samples; α_eff capped at 1), and the LR
  is 0 once the window is complete. The scalar version uses one curvature h_ref = Σh²σ²/Σhσ² (loss-dominant).
* Two-point (gap k) / N-point: LR switch to the stationary-equivalent rate once the average exists, t ≥ (N−1)k (§3.5).

The per-direction equivalent rates λ_eq,k = α_eq(α_k)/h_k are exact at stationarity (stationary.py); the scalar
equivalent LR is the one LR whose stationary excess loss equals the average's (§3.3 multi-timescale caveat: with a
spread spectrum no scalar LR reproduces every direction, which shows up in ``max_rel_err_loss_scalar``).

Relative errors (after the average starts acting, t ≥ T0): mean |Δm| / max(|m_avg|, √v_stat); variance
|Δv| / max(v_avg, v_stat); loss |ΔL| / max(L_avg, L_stat), where v_stat and L_stat are the average's stationary
variance and excess loss at the reference LR. The floors keep zero means and un-equilibrated starts from blowing up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import stationary as st
from .moments import _steps, alpha_phases, diverges, excess_loss, moments, moments_from_alpha
from .spec import EMA, NQM, SGD, SWA, Averaging, Constant, Hyperbolic, NoAverage, NPoint, Piecewise, Schedule, TwoPoint

__all__ = ["Equivalence", "equivalence", "scalar_equivalent_lr"]


@dataclass(frozen=True)
class Equivalence:
    """The average vs its equivalent LR schedule (per direction and scalar); losses are excess losses [T]."""

    avg: Averaging
    equivalent: str                          # human description of the equivalent schedule
    lr_ref: float                            # training LR where the average starts acting (stationary reference)
    switch_step: int                         # T0: step from which the equivalent schedule differs
    lr_eq: np.ndarray                        # per-direction exact stationary equivalent constant LR [D]
    lr_eq_approx: np.ndarray                 # small-rate rule [D]
    lr_eq_scalar: float                      # one LR with the average's stationary excess loss
    equivalent_schedule: Schedule | None     # the scalar equivalent schedule when it is a spec schedule
    steps: np.ndarray
    loss_raw: np.ndarray
    loss_avg: np.ndarray
    loss_equiv: np.ndarray                   # per-direction equivalent schedules
    loss_equiv_scalar: np.ndarray
    max_rel_err_mean: float
    max_rel_err_var: float
    max_rel_err_loss_scalar: float
    diverged: bool                           # some direction has α ≥ 2(1+μ): numbers are inf, not predictions


def scalar_equivalent_lr(model: NQM, target_loss: float, momentum: float = 0.0) -> float:
    """The LR λ with ½ Σ h v∞(λh) = target_loss (theory.md §2.3, §2.4), by bisection on [0, 2(1+μ)/h_max).

    The stationary loss is strictly increasing in λ, so the root is unique; bisection runs until the bracket
    stops shrinking (full double precision, ~60 halvings of O(D) work). Returns the stability bound when the
    target is at or beyond the loss reachable below it, NaN for a non-finite target.
    """
    if not np.isfinite(target_loss) or target_loss < 0:
        return float("nan")
    if target_loss == 0:
        return 0.0

    def f(lr: float) -> float:
        return 0.5 * float(np.sum(model.h * st.iterate_variance(lr * model.h, model.sigma2, momentum))) - target_loss

    lo, hi = 0.0, st.max_stable_alpha(momentum) / float(np.max(model.h))
    while True:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            return mid
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid


def _stationary_avg(avg: Averaging, total: int) -> Averaging:
    if isinstance(avg, SWA) and avg.length is None:
        return SWA(start=avg.start, length=max(1, (total - avg.start) // avg.every + 1), every=avg.every)
    return avg


def _switch(avg: Averaging) -> int:
    if isinstance(avg, (EMA, SWA)):
        return int(avg.start)
    if isinstance(avg, TwoPoint):
        return int(avg.gap)
    if isinstance(avg, NPoint):
        return int(avg.n - 1) * int(avg.gap)
    return 0


def _hyperbolic_phases(alpha, mu, t0, total, c, length):
    """Per-direction α_t = α/(1 + (n+1)/τ) for t ≥ t0, n = t − t0, and 0 once the window is complete; one phase
    per step. The +1 counts x_{t0} itself among the averaged points: with α = 1 (τ = 1) the SGD iterate is then
    exactly the window's running mean of minimisers (theory.md §3.4)."""
    a_eff = np.minimum(alpha / (1 - mu), 1.0)
    with np.errstate(divide="ignore"):
        tau = np.where(a_eff > 0, c / (1 - (1 - a_eff) ** c), np.inf)
    end = total if length is None else min(total, t0 + (length - 1) * c)
    out = [(t, t + 1, alpha / (1 + (t - t0 + 1) / tau)) for t in range(t0, end)]
    if end < total:
        out.append((end, total, np.zeros_like(alpha)))
    return out


def _rel(a, b, floor):
    """max |a − b| / max(|a|, floor); where that denominator is not > 0: 0 if a == b else inf. Two [T, D] temporaries."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        den = np.maximum(np.abs(a), floor)
        r = np.subtract(a, b)
        np.abs(r, out=r)
        np.divide(r, den, out=r)
        zero = ~(den > 0)                           # 0, or NaN where a is NaN
        if zero.any():
            r[zero] = np.where(a[zero] == b[zero], 0.0, np.inf)
    return float(np.max(r))


def _rows_from(steps: np.ndarray, t0: int):
    """Index of the rows with step ≥ t0: a slice (views, no copies) when those rows are contiguous."""
    idx = np.flatnonzero(steps >= t0)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def equivalence(model: NQM, opt: SGD, avg: Averaging, steps) -> Equivalence:
    """Compare the average's moments with those of its equivalent LR schedule along the run (module docstring).

    Example: ``equivalence(NQM(h=[1.], m0=1.), SGD(Constant(.05)), EMA(.995, start=2000), np.arange(0, 4001, 100))``.
    """
    steps = _steps(steps)
    total, mu = int(steps.max()), opt.momentum
    t0 = min(_switch(avg), total)
    lr_ref = float(opt.schedule.lr_at(np.array([min(t0, max(total - 1, 0))]))[0])
    alpha = lr_ref * model.h
    bad = bool(np.any(diverges(model, opt, max(total, 1))))
    stat = _stationary_avg(avg, total)
    v_stat = st.averaged_variance(alpha, stat, model.sigma2, mu)
    a_apx = st.equivalent_alpha_approx(alpha, stat, mu)
    a_eq = st.equivalent_alpha(v_stat, model.sigma2, mu)
    a_eq = np.where(np.isnan(a_eq), a_apx, a_eq)                  # σ² = 0: variance cannot pick a rate
    lr_eq, lr_apx = a_eq / model.h, a_apx / model.h
    l_stat = 0.5 * float(np.sum(model.h * v_stat))
    lr_sc = scalar_equivalent_lr(model, l_stat, mu) if not bad else float("nan")

    base = [(a, min(b, t0), al) for a, b, al in alpha_phases(model, opt, total) if a < t0]
    base_sched = opt.schedule
    if isinstance(avg, SWA):
        per_dir = base + _hyperbolic_phases(alpha, mu, t0, total, avg.every, stat.length)
        hs2 = model.h * model.sigma2
        h_ref = float(np.sum(model.h * hs2) / np.sum(hs2)) if np.sum(hs2) > 0 else float(np.median(model.h))
        a_ref = np.array([lr_ref * h_ref])
        sc_alpha = [(a, b, al[0] / h_ref)
                    for a, b, al in _hyperbolic_phases(a_ref, mu, t0, total, avg.every, stat.length)]
        scalar = base + [(a, b, lr * model.h) for a, b, lr in sc_alpha]
        tau = float("nan") if lr_ref == 0 else (1 - mu) / (lr_ref * h_ref)
        open_ended = t0 + (stat.length - 1) * avg.every >= total       # no freeze inside the run
        eq_sched = (Hyperbolic(lr=lr_ref, start=t0 - 1, tau=tau) if isinstance(base_sched, Constant) and open_ended
                    and avg.every == 1 and lr_ref > 0 and t0 >= 1 else None)   # start t0 − 1: the "+1" above
        desc = (f"hyperbolic cooldown λ/(1+λ_eff·h·(n+1)), n = steps since {t0} (per direction; τ = 1/α_eff"
                f"{'' if avg.every == 1 else f', sampled every {avg.every}'}), LR 0 after the window")
    elif isinstance(avg, NoAverage):
        per_dir = scalar = alpha_phases(model, opt, total)
        eq_sched, desc = base_sched, "the schedule itself (no average)"
    else:
        per_dir = base + ([(t0, total, a_eq)] if t0 < total else [])
        scalar = base + ([(t0, total, lr_sc * model.h)] if t0 < total else [])
        eq_sched = (Piecewise(lr=lr_ref, boundaries=(t0,), lrs=(lr_sc,)) if isinstance(base_sched, Constant)
                    and t0 > 0 and np.isfinite(lr_sc) else Constant(lr_sc) if isinstance(base_sched, Constant)
                    and np.isfinite(lr_sc) else None)
        what = "EMA start" if isinstance(avg, EMA) else "the first step the average exists"
        desc = f"LR switch at step {t0} ({what}) to λ_eq (per direction; scalar {lr_sc:.6g})"
    if not np.isfinite(lr_sc):
        scalar = per_dir
    per_dir = [p for p in per_dir if p[0] < p[1]] or [(0, 1, alpha)]
    scalar = [p for p in scalar if p[0] < p[1]] or [(0, 1, alpha)]

    after = _rows_from(steps, t0)
    loss_raw, la, le, ls, err_m, err_v = _moments_in_blocks(model, opt, avg, per_dir, scalar, steps, after, v_stat)
    return Equivalence(
        avg=avg, equivalent=("diverges: " if bad else "") + desc, lr_ref=lr_ref, switch_step=t0, lr_eq=lr_eq,
        lr_eq_approx=lr_apx, lr_eq_scalar=lr_sc, equivalent_schedule=eq_sched, steps=steps,
        loss_raw=loss_raw, loss_avg=la, loss_equiv=le, loss_equiv_scalar=ls, max_rel_err_mean=err_m,
        max_rel_err_var=err_v, max_rel_err_loss_scalar=_rel(la[after], ls[after], l_stat), diverged=bad)


# Directions per block in _moments_in_blocks: a block's [T, D] moment arrays are freed before the next block
# allocates them again, so peak memory is O(T·block), not O(T·D). Measured on the 2-core dev machine for the
# 10,000-direction benchmark of scripts/bench_theory.py (T = 202; 7 interleaved fresh processes each): one block
# of 10,000 → peak RSS 165 MB, forward median 0.30 s; 5,000 → 101 MB, 0.25 s; 2,500 → 69 MB, 0.31 s; 1,250 → 0.38 s
# (smaller blocks pay the per-output-point Python overhead once more per block). Fresh pages cost ~1–2 ms per MB.
BLOCK_DIRECTIONS = 5000


def _block(phases, d: int, sl: slice):
    return [(a, b, np.broadcast_to(al, (d,))[sl]) for a, b, al in phases]


def _moments_in_blocks(model: NQM, opt: SGD, avg: Averaging, per_dir, scalar, steps, after, v_stat):
    """Excess losses [T] of the raw iterate, the average, its per-direction and scalar equivalents, and the
    largest relative mean / variance errors over the rows ``after`` (t ≥ T0) of average vs per-direction
    equivalent, block by block."""
    mu = opt.momentum
    loss_raw, la, le, ls = (np.zeros(steps.size) for _ in range(4))
    err_m = err_v = 0.0
    for lo in range(0, model.dim, BLOCK_DIRECTIONS):
        sl = slice(lo, min(lo + BLOCK_DIRECTIONS, model.dim))
        sub = NQM(h=model.h[sl], sigma2=model.sigma2[sl], m0=model.m0[sl], v0=model.v0[sl])
        m_avg = moments(sub, opt, avg, steps)
        loss_raw += excess_loss(sub, m_avg.mean_x, m_avg.var_x)
        la += excess_loss(sub, m_avg.mean_avg, m_avg.var_avg)
        m_eq = moments_from_alpha(sub, mu, NoAverage(), _block(per_dir, model.dim, sl), steps)
        le += excess_loss(sub, m_eq.mean_x, m_eq.var_x)
        err_m = np.maximum(err_m, _rel(m_avg.mean_avg[after], m_eq.mean_x[after], np.sqrt(v_stat[sl])))
        err_v = np.maximum(err_v, _rel(m_avg.var_avg[after], m_eq.var_x[after], v_stat[sl]))
        del m_avg, m_eq                                            # free this block's arrays for the next
        m_sc = moments_from_alpha(sub, mu, NoAverage(), _block(scalar, model.dim, sl), steps)
        ls += excess_loss(sub, m_sc.mean_x, m_sc.var_x)
        del m_sc
    return loss_raw, la, le, ls, float(err_m), float(err_v)
