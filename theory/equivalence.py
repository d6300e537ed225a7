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
from .moments import alpha_phases, checked_steps, chunked_moments, diverges, excess_loss
from .segments import Varying, clip_phases, restrict
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


def stationary_average(avg: Averaging, total: int) -> Averaging:
    """``avg`` with an open-ended SWA closed at step ``total`` (the window its stationary variance is taken over)."""
    if isinstance(avg, SWA) and avg.length is None:
        return SWA(start=avg.start, length=max(1, (total - avg.start) // avg.every + 1), every=avg.every)
    return avg


def _hyperbolic_phases(alpha, mu, t0, total, c, length):
    """Per-direction α_t = α/(1 + (n+1)/τ) for t ≥ t0, n = t − t0, and 0 once the window is complete, as one
    varying stretch whose rates are computed block by block (segments.Varying). The +1 counts x_{t0} itself among
    the averaged points: with α = 1 (τ = 1) the SGD iterate is then exactly the window's running mean of
    minimisers (theory.md §3.4)."""
    alpha = np.asarray(alpha, dtype=float)
    a_eff = np.minimum(alpha / (1 - mu), 1.0)
    with np.errstate(divide="ignore"):
        tau = np.where(a_eff > 0, c / (1 - (1 - a_eff) ** c), np.inf)
    end = total if length is None else min(total, t0 + (length - 1) * c)
    out = []
    if end > t0:
        out.append(Varying(t0, end, lambda t, sl: alpha[None, sl] / (1 + (t[:, None] - t0 + 1) / tau[None, sl])))
    if end < total:
        out.append((end, total, np.zeros_like(alpha)))
    return out


def _scaled(phases, factor):
    """The pieces with every rate multiplied by ``factor`` [D] (per direction)."""
    out = []
    for p in phases:
        if isinstance(p, Varying):
            out.append(Varying(p.start, p.stop, lambda t, sl, r=p.rate: r(t, sl) * factor[None, sl], p.sl))
        else:
            out.append((p[0], p[1], p[2] * factor))
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
    steps = checked_steps(steps)
    total, mu = int(steps.max()), opt.momentum
    t0 = min(avg.defined_from, total)
    lr_ref = float(opt.schedule.lr_at(np.array([min(t0, max(total - 1, 0))]))[0])
    alpha = lr_ref * model.h
    bad = bool(np.any(diverges(model, opt, max(total, 1))))
    stat = stationary_average(avg, total)
    v_stat = st.averaged_variance(alpha, stat, model.sigma2, mu)
    a_apx = st.equivalent_alpha_approx(alpha, stat, mu)
    a_eq = st.equivalent_alpha(v_stat, model.sigma2, mu)
    a_eq = np.where(np.isnan(a_eq), a_apx, a_eq)                  # σ² = 0: variance cannot pick a rate
    lr_eq, lr_apx = a_eq / model.h, a_apx / model.h
    l_stat = 0.5 * float(np.sum(model.h * v_stat))
    lr_sc = scalar_equivalent_lr(model, l_stat, mu) if not bad else float("nan")

    base = clip_phases(alpha_phases(model, opt, total), 0, t0)
    base_sched = opt.schedule
    if isinstance(avg, SWA):
        per_dir = base + _hyperbolic_phases(alpha, mu, t0, total, avg.every, stat.length)
        hs2 = model.h * model.sigma2
        h_ref = float(np.sum(model.h * hs2) / np.sum(hs2)) if np.sum(hs2) > 0 else float(np.median(model.h))
        a_ref = np.full(model.dim, lr_ref * h_ref)         # the same scalar rate in every direction, then × h/h_ref
        scalar = base + _scaled(_hyperbolic_phases(a_ref, mu, t0, total, avg.every, stat.length), model.h / h_ref)
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
    per_dir = clip_phases(per_dir, 0, total) or [(0, 1, alpha)]
    scalar = clip_phases(scalar, 0, total) or [(0, 1, alpha)]

    after = _rows_from(steps, t0)
    loss_raw, la, le, ls, err_m, err_v = _moments_in_blocks(model, opt, avg, per_dir, scalar, steps, after, v_stat,
                                                            t0)
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
# With the per-step kernels of varying schedules (theory/kernels.py) every block pays the Python cost of every
# step once, so the blocks are as large as memory allows: 10,000 directions × ~200 output points × ~8 arrays ≈ 130 MB.
BLOCK_DIRECTIONS = 10000


def _block(phases, d: int, sl: slice):
    return [restrict(p, sl, d) for p in phases]


def _moments_in_blocks(model: NQM, opt: SGD, avg: Averaging, per_dir, scalar, steps, after, v_stat, t0=0):
    """Excess losses [T] of the raw iterate, the average, its per-direction and scalar equivalents, and the
    largest relative mean / variance errors over the rows ``after`` (t ≥ T0) of average vs per-direction
    equivalent, block by block.

    For an EMA or SWA starting at T0 > 0 the three runs share updates [0, T0) (same schedule, the average not yet
    started, theory.md §3.3/§3.4): those are computed once and the three runs continue from the state at T0."""
    mu = opt.momentum
    d = model.dim
    sched = alpha_phases(model, opt, int(steps.max()))
    loss_raw, la, le, ls = (np.zeros(steps.size) for _ in range(4))
    share = isinstance(avg, (EMA, SWA)) and 0 < t0 <= int(steps.max())
    pre = steps < t0 if share else np.zeros(steps.size, dtype=bool)
    post = ~pre
    err_m = err_v = 0.0
    for lo in range(0, d, BLOCK_DIRECTIONS):
        sl = slice(lo, min(lo + BLOCK_DIRECTIONS, d))
        sub = NQM(h=model.h[sl], sigma2=model.sigma2[sl], m0=model.m0[sl], v0=model.v0[sl])
        init = None
        if share:
            m_pre, st0 = chunked_moments(sub, mu, NoAverage(), _block(sched, d, sl), steps[pre] if pre.any() else [t0],
                                  stop=t0)
            init = (t0, *st0)
            if pre.any():
                raw = excess_loss(sub, m_pre.mean_x, m_pre.var_x)      # before T0 every run is the raw iterate
                for acc in (loss_raw, la, le, ls):
                    acc[pre] += raw
            del m_pre
        at = steps[post]
        rows = after if not share else slice(None)                   # rows of the post arrays with t ≥ T0
        m_avg = chunked_moments(sub, mu, avg, _block(sched, d, sl), at, init)[0]
        loss_raw[post] += excess_loss(sub, m_avg.mean_x, m_avg.var_x)
        la[post] += excess_loss(sub, m_avg.mean_avg, m_avg.var_avg)
        m_eq = chunked_moments(sub, mu, NoAverage(), _block(per_dir, d, sl), at, init)[0]
        le[post] += excess_loss(sub, m_eq.mean_x, m_eq.var_x)
        err_m = np.maximum(err_m, _rel(m_avg.mean_avg[rows], m_eq.mean_x[rows], np.sqrt(v_stat[sl])))
        err_v = np.maximum(err_v, _rel(m_avg.var_avg[rows], m_eq.var_x[rows], v_stat[sl]))
        del m_avg, m_eq                                            # free this block's arrays for the next
        m_sc = chunked_moments(sub, mu, NoAverage(), _block(scalar, d, sl), at, init)[0]
        ls[post] += excess_loss(sub, m_sc.mean_x, m_sc.var_x)
        del m_sc
    return loss_raw, la, le, ls, float(err_m), float(err_v)
