"""The product's answers as library calls: which EMA decay or SWA start to pick, and which LR schedule an average
stands for (theory.md §2.4, §3.3-3.5, §3.9). numpy and scipy only.

The model is a spectrum of curvatures ``h`` (1/LR units) with noise masses ``noise`` = σ² per scale (parameter²),
trained at one constant LR ``lr`` with heavy-ball momentum ``momentum`` (theory.md §2.0, §2.6) — what
``compare.report`` calibrates on a run's raw trajectory, or what you assume (h = 1, noise = 1: one direction in
units of the LR). The state is stationary at ``lr`` at step 0, the regime of the quasi-stationary window
(theory.md §2.7 item 3); step t is the iterate after t updates.

* :func:`rank_ema_decays`, :func:`rank_swa_starts`: the predicted gain of each candidate, the window-mean excess
  loss of the raw iterate minus that of the average (loss units, > 0: the average is better), from the exact NQM
  moments of theory.moments; sorted best first. With ``alternatives`` (the parameter sets the data allow, e.g.
  ``compare.pairs.SpectrumFit.alternatives``: tuples (h, s) or (h, s, drift), the drift is not a moment and is
  ignored) each row also carries the least and the largest gain over them.
* :func:`equivalent_schedule`: the LR schedule an average acts like, as a callable ``lr(step)`` (LR of update
  ``step``): an EMA or a two-point / N-point average switches the LR to λ_eq where it starts acting, λ_eq being the
  LR whose stationary excess equals the average's (theory.stationary.spectrum_equivalent_lr; for two points far
  apart ≈ λ/2); SWA is the hyperbolic cooldown λτ/(τ + n) of theory.md §3.4 with the spectrum's τ
  (theory.stationary.spectrum_cooldown_tau).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import stationary as st
from .moments import excess_loss, moments_from_alpha
from .spec import EMA, NQM, SWA, Averaging, Constant, Hyperbolic, NoAverage, NPoint, Piecewise, Schedule, TwoPoint

__all__ = ["RankedAverage", "rank_ema_decays", "rank_swa_starts", "EquivalentSchedule", "equivalent_schedule"]

# The state is made stationary at ``lr`` by this many slowest relaxation times 1/(−ln r) of the heavy-ball
# recursion (r: the largest root modulus; variances then carry e^-40 of the start), at most MAX_BURN_IN steps.
# The start is already v∞ (exactly stationary for μ = 0), so the cap only matters with momentum and h ≈ 0.
BURN_IN_RELAX = 20.0
MAX_BURN_IN = 10_000_000


@dataclass(frozen=True)
class RankedAverage:
    """One candidate of :func:`rank_ema_decays` / :func:`rank_swa_starts`; excess losses are window means, loss
    units (theory.md §2.3: ½Σh(m² + Var) above the floor)."""

    average: Averaging         # the candidate, as a theory.spec average (EMA or SWA with its start and every)
    gain: float                # raw_excess − average_excess for the given spectrum (> 0: the average is better)
    gain_min: float            # least gain over the spectrum and the alternatives (= gain without alternatives)
    gain_max: float            # largest gain over them
    raw_excess: float          # window-mean excess of the raw iterate
    average_excess: float      # window-mean excess of the average


def _model(lr: float, momentum: float, h, noise) -> NQM:
    """The spectrum as an NQM stationary at ``lr`` (v0 = v∞); ValueError if some scale is unstable at ``lr``."""
    model = NQM(h=h, sigma2=noise)
    alpha = lr * model.h
    edge = st.max_stable_alpha(momentum)
    if np.any(alpha >= edge):
        raise ValueError(f"lr·h = {float(np.max(alpha)):g} >= 2(1 + μ) = {edge:g}: SGD diverges at this LR, there is "
                         f"no stationary state to average")
    return NQM(h=model.h, sigma2=model.sigma2, v0=st.iterate_variance(alpha, model.sigma2, momentum))


def _burn_in(alpha: np.ndarray, mu: float) -> int:
    """Steps that make the (x, x_prev) state stationary: BURN_IN_RELAX relaxation times of the slowest direction,
    from the roots of r² − (1 + μ − α) r + μ (complex roots: |r| = √μ)."""
    c = 1.0 + mu - alpha
    disc = c * c - 4.0 * mu
    r = np.where(disc >= 0, (np.abs(c) + np.sqrt(np.maximum(disc, 0.0))) / 2.0, math.sqrt(mu))
    r = float(np.max(r))
    if r <= 0:
        return 1
    if r >= 1:
        return MAX_BURN_IN
    return int(min(math.ceil(BURN_IN_RELAX / -math.log(r)), MAX_BURN_IN))


def _check(lr, momentum, window) -> tuple[float, float, int, int]:
    if isinstance(lr, bool) or not (isinstance(lr, (int, float, np.number)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(momentum, (int, float, np.number)) and math.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    try:
        a, b = window
    except (TypeError, ValueError):
        raise ValueError(f"window must be (first step, last step), got {window!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (a, b)) or not 0 <= a <= b:
        raise ValueError(f"window must be integer steps 0 <= first <= last, got {window!r}")
    return float(lr), float(momentum), int(a), int(b)


def _sets(h, noise, alternatives) -> list[tuple]:
    sets = [(h, noise)]
    for i, alt in enumerate(alternatives or ()):
        if not isinstance(alt, (tuple, list)) or len(alt) not in (2, 3):
            raise ValueError(f"alternatives[{i}] must be (h, s) or (h, s, drift), got {alt!r}")
        sets.append((alt[0], alt[1]))
    return sets


def _window_gain(model: NQM, lr: float, mu: float, avg_at, window: tuple[int, int]) -> tuple[float, float]:
    """(raw, average) window-mean excess of the average ``avg_at(shift)`` over a run stationary at ``lr``."""
    a, b = window
    shift = _burn_in(lr * model.h, mu)
    steps = shift + np.arange(a, b + 1)
    mom = moments_from_alpha(model, mu, avg_at(shift), [(0, int(steps[-1]) + 1, lr * model.h)], steps)
    raw = excess_loss(model, mom.mean_x, mom.var_x)
    avg = excess_loss(model, mom.mean_avg, mom.var_avg)
    return float(np.mean(raw)), float(np.mean(avg))


def _rank(averages: list[Averaging], shifted, lr, momentum, h, noise, window, alternatives) -> list[RankedAverage]:
    lr, mu, a, b = _check(lr, momentum, window)
    models = [_model(lr, mu, hh, ss) for hh, ss in _sets(h, noise, alternatives)]
    rows = []
    for avg in averages:
        res = [_window_gain(m, lr, mu, lambda s, avg=avg: shifted(avg, s), (a, b)) for m in models]
        gains = [r - v for r, v in res]
        rows.append(RankedAverage(average=avg, gain=gains[0], gain_min=min(gains), gain_max=max(gains),
                                  raw_excess=res[0][0], average_excess=res[0][1]))
    return sorted(rows, key=lambda r: -r.gain)


def _list(name: str, values) -> list:
    vals = list(values) if isinstance(values, (list, tuple, range, np.ndarray)) else [values]
    if not vals:
        raise ValueError(f"{name}: give at least one candidate")
    return vals


def rank_ema_decays(decays: Sequence[float], lr: float, momentum: float, h, noise, *, start: int = 0,
                    window: tuple[int, int], every: int = 1, alternatives: Sequence[tuple] | None = None
                    ) -> list[RankedAverage]:
    """EMA decays γ (per optimiser step) ranked by predicted gain over ``window`` (best first, module docstring).

    Each EMA starts at step ``start`` from the iterate (theory.spec.EMA; before it the average is the iterate, so
    window steps before ``start`` gain 0) and is updated every ``every`` steps. ``window`` = (first, last) steps,
    both included; the gain is the mean over every step of it (cost and memory grow with its length × the number
    of scales). Exact NQM moments (theory.moments), so the transient
    after ``start`` counts too; long after it the gain is the stationary one of theory.md §3.3.

    >>> rows = rank_ema_decays([0.9, 0.99, 0.999], lr=0.05, momentum=0.0, h=1.0, noise=1.0, window=(2000, 3000))
    >>> [r.average.decay for r in rows]
    [0.999, 0.99, 0.9]
    >>> round(rows[0].gain, 6), round(rows[0].raw_excess, 7)    # raw: ½v∞ = ½α/(2 − α) = 1/78 (theory.md §2.4)
    (0.012472, 0.0128205)
    """
    start_ = int(start)
    if start_ != start or start_ < 0:
        raise ValueError(f"start must be an integer step >= 0, got {start!r}")
    avgs = [EMA(decay=d, start=start_, every=every) for d in _list("decays", decays)]
    return _rank(avgs, lambda avg, s: EMA(decay=avg.decay, start=avg.start + s, every=avg.every), lr, momentum, h,
                 noise, window, alternatives)


def rank_swa_starts(starts: Sequence[int], lr: float, momentum: float, h, noise, *, window: tuple[int, int],
                    every: int = 1, alternatives: Sequence[tuple] | None = None) -> list[RankedAverage]:
    """SWA starts (steps) ranked by predicted gain over ``window`` (best first, module docstring).

    SWA from step s is the uniform mean of θ_s, θ_{s+every}, … up to the step evaluated (theory.spec.SWA, no length
    limit); window steps before s gain 0. Exact NQM moments; a mean of n iterates of one direction has the variance
    of theory.md §3.4.

    >>> rows = rank_swa_starts([0, 1000, 1900], lr=0.05, momentum=0.0, h=1.0, noise=1.0, window=(2000, 2000))
    >>> [r.average.start for r in rows]
    [0, 1000, 1900]
    >>> round(rows[0].average_excess, 7)    # ½ Var of the mean of θ_0..θ_2000 (theory.md §3.4), ≈ ½σ²/2001
    0.0002474
    """
    avgs = []
    for s in _list("starts", starts):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"starts must be integer steps >= 0, got {s!r}")
        avgs.append(SWA(start=int(s), every=every))
    return _rank(avgs, lambda avg, s: SWA(start=avg.start + s, every=avg.every), lr, momentum, h, noise, window,
                 alternatives)


# ------------------------------------------------------------------------------------------ equivalent schedule

@dataclass(frozen=True)
class EquivalentSchedule:
    """An LR schedule an average acts like: call it with a step to get the LR of that update (steps 0, 1, ...).

    ``schedule`` is the theory.spec schedule it follows; ``stop`` the first update at LR 0 (SWA with a finite
    window) or None. ``lr_at(steps)`` takes an integer array, as theory.spec schedules do."""

    average: Averaging
    lr: float                      # the training LR before the switch, LR units
    switch_step: int               # first update whose LR differs from ``lr``
    lr_eq: float | None            # the constant equivalent LR (EMA, two-point, N-point), LR units
    tau: float | None              # the cooldown constant of SWA, steps
    schedule: Schedule
    stop: int | None
    description: str

    def lr_at(self, steps) -> np.ndarray:
        steps = np.asarray(steps)
        out = self.schedule.lr_at(steps)
        if self.stop is not None:
            out = np.where(steps >= self.stop, 0.0, out)
        return out

    def __call__(self, step):
        out = self.lr_at(step)
        return float(out) if out.ndim == 0 else out


def equivalent_schedule(average: Averaging, lr: float, momentum: float, h, noise) -> EquivalentSchedule:
    """The LR schedule ``average`` (a theory.spec EMA, SWA, TwoPoint, NPoint or NoAverage) acts like, on a run at the
    constant LR ``lr`` over the spectrum (h, noise) (theory.md §3.3-3.5, module docstring).

    * EMA from step T0: ``lr`` before T0, λ_eq from update T0 on (theory.md §3.3);
    * TwoPoint (gap k) / NPoint: λ_eq once the average exists, from update (N − 1)·gap (§3.5); ≈ λ/2 for two points
      far apart (λhk ≫ 1);
    * SWA from T0 (every step): update t ≥ T0 runs at λτ/(τ + t − T0 + 1), τ = (1 − μ)/(λh) for one direction
      (theory.md §3.4: the n-th update after the window start at λτ/(τ + n), n = 1, 2, …; x_{T0} counts as τ
      pseudo-observations); with ``length`` n the LR is 0 from update T0 + n − 1 on, when the window is complete.

    >>> from theory.spec import EMA, SWA
    >>> f = equivalent_schedule(EMA(0.995, start=100), lr=0.05, momentum=0.0, h=1.0, noise=1.0)
    >>> f(99), round(f(100), 9)            # theory.md §3.3 anchor: α_eq = 4.556101e-3 for α = 0.05, γ = 0.995
    (0.05, 0.004556101)
    >>> g = equivalent_schedule(SWA(start=10), lr=0.05, momentum=0.0, h=1.0, noise=1.0)
    >>> g.tau, g(9), g(10) == 0.05 * 20 / 21
    (20.0, 0.05, True)
    """
    lr_, mu, _, _ = _check(lr, momentum, (0, 0))
    model = _model(lr_, mu, h, noise)
    hh, s2 = model.h, model.sigma2
    if isinstance(average, NoAverage):
        return EquivalentSchedule(average, lr_, 0, lr_, None, Constant(lr_), None, "the constant LR itself")
    if isinstance(average, SWA):
        if average.every != 1:
            raise ValueError(f"equivalent_schedule: SWA of every iterate only (every=1), got every={average.every}; "
                             f"the cooldown constant of a sampled SWA is per direction (theory.md §3.4)")
        t0 = int(average.start)
        tau = st.spectrum_cooldown_tau(lr_, hh, s2, mu)
        # update t ≥ t0 at λτ/(τ + t − t0 + 1): spec.Hyperbolic started one step earlier, or (t0 = 0) from 0 with
        # τ + 1 and the first LR λτ/(τ + 1)
        sched = (Hyperbolic(lr_, start=t0 - 1, tau=tau) if t0 >= 1
                 else Hyperbolic(lr_ * tau / (tau + 1.0), start=0, tau=tau + 1.0))
        stop = None if average.length is None else t0 + int(average.length) - 1
        desc = (f"hyperbolic cooldown λτ/(τ + n) from update {t0} (n = 1, 2, …), τ = {tau:.6g} steps"
                + ("" if stop is None else f", LR 0 from update {stop}"))
        return EquivalentSchedule(average, lr_, t0, None, tau, sched, stop, desc)
    if not isinstance(average, (EMA, TwoPoint, NPoint)):
        raise ValueError(f"average must be a theory.spec EMA, SWA, TwoPoint, NPoint or NoAverage, got "
                         f"{type(average).__name__}")
    stat = EMA(decay=average.decay, every=average.every) if isinstance(average, EMA) else average
    excess = st.spectrum_averaged_excess(lr_, stat, hh, s2, mu)
    lr_eq = st.spectrum_equivalent_lr(excess, lr_, hh, s2, mu)
    if not (math.isfinite(lr_eq) and lr_eq > 0):
        raise ValueError(f"no equivalent LR: the average's stationary excess is {excess:g} (zero noise?)")
    t0 = average.defined_from
    sched = Piecewise(lr_, boundaries=(t0,), lrs=(lr_eq,)) if t0 > 0 else Constant(lr_eq)
    return EquivalentSchedule(average, lr_, t0, lr_eq, None, sched, None,
                              f"LR switch at update {t0} from {lr_:g} to λ_eq = {lr_eq:.6g}")
