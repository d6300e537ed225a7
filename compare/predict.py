"""Predict averaged-weight and branch loss curves from a raw-weight calibration (theory.md §3.3-§3.5, §3.9).

The model state is stationary at the training LR λ when the window opens: the NQM is run through a burn-in of
BURN_IN_RELAX slowest relaxation times at λ (exact moments, theory.moments), and run step t is model step B + t.
Averages are the spec objects of the run's config (EMA start/every, SWA start/every, two-point gap, N points), so
the prediction is the exact NQM moment of that same linear average; the loss is floor + ½Σh(m² + Var) (§2.3).
Predictions are NaN outside the quasi-stationary window and where the run's variant is not yet defined.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compare.calibrate import Calibration
from theory import moments as nqm_moments
from theory import spec, stationary

BURN_IN_RELAX = 20.0      # relaxation times 1/α_eff of the slowest scale: the state is stationary to e^-40


def burn_in_steps(cal: Calibration) -> int:
    """Steps of the burn-in at λ that makes the model stationary when run step 0 begins (BURN_IN_RELAX times the
    slowest relaxation time)."""
    return int(min(math.ceil(BURN_IN_RELAX / float(np.min(cal.alpha_eff))), 10_000_000))


def shifted(avg: spec.Averaging, shift: int) -> spec.Averaging:
    """The average ``avg`` with run steps moved ``shift`` burn-in steps later (EMA and SWA start that much later;
    two- and N-point averages are defined by their gaps alone)."""
    return dataclasses.replace(avg, start=avg.start + shift) if isinstance(avg, (spec.EMA, spec.SWA)) else avg


def nqm_of(cal: Calibration, h=None, s=None) -> spec.NQM:
    """The calibrated NQM (or the one with curvatures h and noise masses s), started at the optimum."""
    return spec.NQM(h=cal.h if h is None else h, sigma2=cal.s if s is None else s, m0=0.0, v0=0.0)


def variant_excess(cal: Calibration, avg: spec.Averaging, steps: np.ndarray, h=None, s=None) -> np.ndarray:
    """Predicted excess loss of the run's average ``avg`` at run ``steps`` (NaN outside the window and before the
    average is defined, ``avg.defined_from``), loss units."""
    steps = np.asarray(steps, dtype=np.int64)
    lo, hi = cal.window
    ok = (steps >= lo) & (steps <= hi) & (steps >= avg.defined_from)
    out = np.full(steps.size, np.nan)
    if not ok.any():
        return out
    B = burn_in_steps(cal)
    model = nqm_of(cal, h, s)
    lr0 = float(cal.lr)
    mom = nqm_moments.moments_from_alpha(model, cal.momentum, shifted(avg, B),
                                         [(0, B + int(steps[ok].max()) + 1, lr0 * model.h)], B + steps[ok])
    out[ok] = nqm_moments.excess_loss(model, mom.mean_avg, mom.var_avg)
    return out


def branch_excess(cal: Calibration, t0: int, lr_steps: np.ndarray, lr_values: np.ndarray,
                  steps: np.ndarray, h=None, s=None) -> np.ndarray:
    """Predicted raw excess of a branch stationary at λ until t0, then LR lr_values held from lr_steps on."""
    steps = np.asarray(steps, dtype=np.int64)
    ok = steps >= t0
    out = np.full(steps.size, np.nan)
    if not ok.any():
        return out
    B = burn_in_steps(cal)
    model = nqm_of(cal, h, s)
    end = B + int(steps[ok].max()) + 1
    phases, t = [(0, B + t0, cal.lr * model.h)], B + t0        # B >= 1, so the first phase is never empty
    ls, lv = np.asarray(lr_steps, np.int64), np.asarray(lr_values, float)
    keep = ls >= t0
    ls, lv = ls[keep], lv[keep]
    if ls.size == 0:
        ls, lv = np.array([t0]), np.array([cal.lr])
    # merge equal consecutive LRs so a constant branch is one phase (the engine's cost grows with phases)
    cut = np.concatenate([[0], np.flatnonzero(np.diff(lv) != 0) + 1])
    bounds = [B + int(ls[i]) for i in cut[1:]] + [end]
    for i, b in zip(cut, bounds):
        if b > t:
            phases.append((t, b, float(lv[i]) * model.h))
            t = b
    mom = nqm_moments.moments_from_alpha(model, cal.momentum, spec.NoAverage(), phases, B + steps[ok])
    out[ok] = nqm_moments.excess_loss(model, mom.mean_x, mom.var_x)
    return out


def raw_excess_at(cal: Calibration, lr: float) -> float:
    """Stationary raw excess ½Σh v∞(lr·h) of the calibrated spectrum at a constant LR (theory.md §2.4, §2.6)."""
    return stationary.spectrum_raw_excess(lr, cal.h, cal.s, cal.momentum)


def equivalent_lr(cal: Calibration, excess: float) -> float:
    """Scalar LR whose stationary raw excess equals ``excess`` (= equivalent_alpha/h for one scale, §3.3)."""
    return stationary.spectrum_equivalent_lr(excess, cal.lr, cal.h, cal.s, cal.momentum)


def stationary_excess(cal: Calibration, avg: spec.Averaging) -> float:
    """Excess of the run's average ``avg`` once everything is stationary (EMA/two-point/N-point, theory.md §3.3,
    §3.5); for SWA the window from its start up to the end of the constant phase, at most its recorded length
    (§3.4)."""
    if isinstance(avg, spec.NoAverage):
        return raw_excess_at(cal, cal.lr)
    if isinstance(avg, spec.SWA):
        n = max((cal.window[1] - avg.start) // avg.every + 1, 1)
        n = min(n, avg.length) if avg.length else n
        avg = spec.SWA(start=0, length=n, every=avg.every)
    elif isinstance(avg, spec.EMA):      # stationary: the start has been forgotten
        avg = spec.EMA(decay=avg.decay, every=avg.every)
    var = stationary.averaged_variance(cal.lr * cal.h, avg, cal.s, cal.momentum)
    return float(0.5 * np.sum(cal.h * var))


def hyperbolic_tau(cal: Calibration) -> float:
    """τ (steps) of the SWA-equivalent cooldown λτ/(τ + n) for the calibrated spectrum
    (theory.stationary.spectrum_cooldown_tau, theory.md §3.4)."""
    return stationary.spectrum_cooldown_tau(cal.lr, cal.h, cal.s, cal.momentum)
