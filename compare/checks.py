"""What the calibration must pass before its predictions mean anything: physical checks, what the data identify, and
one calibration against three independent measurements (theory.md §2.4, §3.1, §3.2, §3.8a).

* **Physical checks.** The floor L_floor = (observed raw window loss) − ½Σh v must be ≥ 0 (equivalently: the model's
  raw excess may not exceed the loss observed), every noise mass and the drift coefficient ≥ 0. Tolerance: 2 s.e.
* **Identified or not.** A scale whose h sits on the fit's limit, or whose profile range is open, identifies
  nothing: the quantities that depend on it (λ_eq, the SWA cooldown τ, branch H, the floor) are given as the range
  over the parameter sets the data allow (``SpectrumFit.alternatives``).
* **Three measurements, one model.** The noise the D(τ) fit implies predicts (a) D(τ) itself (χ² of the fit),
  (b) the dip of a fixed training batch right after it is used (the bank, theory.probes.fixed_batch_loss) and (c) the
  one-step probe's training-minus-held-out slope G = Σ h² s = tr(H²Σ) (theory.md §3.1). Each prediction carries an
  s.e. from its spread over the parameter sets the data allow; the claim holds only where all three agree within
  CONSISTENT_SE combined s.e.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from theory import probes, spec, stationary

CHECK_SE = 2.0             # a physical check fails only beyond this many s.e.
CONSISTENT_SE = 2.0        # three-way consistency: |pred − obs| ≤ this many combined s.e.
CHI2_P_MIN = 0.05          # the D(τ) leg agrees when the fit's χ² has p ≥ this


def physical_checks(cal) -> list[dict]:
    """Rows {check, value, se, passed, note} for the calibration ``cal`` (compare.calibrate.Calibration)."""
    rows = []
    se = cal.floor_se if np.isfinite(cal.floor_se) else 0.0
    rows.append({"check": "floor ≥ 0 (model raw excess ≤ observed raw loss)", "value": float(cal.floor),
                 "se": float(se), "passed": bool(cal.floor >= -CHECK_SE * se),
                 "note": f"observed raw window loss {cal.floor + cal.raw_excess:.4g}, model raw excess "
                         f"{cal.raw_excess:.4g}"})
    rows.append({"check": "noise masses ≥ 0", "value": float(np.min(cal.s)), "se": float("nan"),
                 "passed": bool(np.all(cal.s >= 0)), "note": "noise mass per scale " + ", ".join(f"{x:.3g}" for x in cal.s)})
    if cal.fit is not None:
        rows.append({"check": "drift coefficient ≥ 0", "value": float(cal.fit.drift), "se": float(cal.fit.drift_se),
                     "passed": bool(cal.fit.drift >= 0), "note": "c of c·τ² in D(τ), loss/step²"})
    return rows


def parameter_sets(cal) -> list[tuple]:
    """(h, s) of the fit, then of every parameter set the data allow (SpectrumFit.alternatives, a Δχ² ≤ 4 ≈ ±2 s.e.
    set)."""
    alts = cal.fit.alternatives if cal.fit is not None and cal.fit.alternatives else []
    return [(cal.h, cal.s)] + [(h, s) for h, s, _ in alts]


def quarter_range(values, axis=None):
    """The s.e. a set of values over the allowed parameter sets stands for: a quarter of their range (NaNs
    dropped; NaN when none is finite)."""
    v = np.asarray(values, float)
    if axis is None:
        v = v[np.isfinite(v)]
        return float((v.max() - v.min()) / 4.0) if v.size else float("nan")
    return (np.nanmax(v, axis=axis) - np.nanmin(v, axis=axis)) / 4.0


def spread_se(f, cal) -> float:
    """s.e. of f(h, s) over the parameter sets the data allow: a quarter of its range. The fit's covariance is no
    guide where the fit has no degrees of freedom left."""
    return quarter_range([f(h, s) for h, s in parameter_sets(cal)])


def _leg(name: str, pred: float, pred_se: float, obs: float, obs_se: float, note: str = "") -> dict:
    se = float(np.hypot(np.nan_to_num(pred_se), np.nan_to_num(obs_se)))
    ok = bool(np.isfinite(pred) and np.isfinite(obs) and abs(pred - obs) <= CONSISTENT_SE * se)
    return {"measurement": name, "pred": float(pred), "pred_se": float(pred_se), "obs": float(obs),
            "obs_se": float(obs_se), "agrees": ok, "note": note}


def dip_prediction(cal, fraction: float, lag: int, h=None, s=None) -> float:
    """Predicted fixed-batch dip at ``lag`` steps after the batch was used: loss_unseen − loss_seen there."""
    h = cal.h if h is None else h
    s = cal.s if s is None else s
    fb = probes.fixed_batch_loss(spec.NQM(h=h, sigma2=s), spec.SGD(spec.Constant(cal.lr), momentum=cal.momentum),
                                 0, np.array([lag]), fraction=fraction)
    return float("nan") if fb.diverged else float(fb.loss_unseen[0] - fb.loss_seen[0])


PRE_USE_POINTS = 5        # a bank curve's level before use: the mean of its last this many points before it


def observed_dip(runs) -> tuple[int, float, float] | None:
    """(lag, dip, s.e.) at the first recorded lag after use, from every (run, bank batch) curve of ``runs``: each
    curve's own level over its last PRE_USE_POINTS points before use minus its value at that lag, minus the same for
    the held-out bank mean (the common motion of the iterate); mean and s.e. over curves. Each batch's own constant
    c_B cancels inside its curve, which a mean over curves of different batches would not do."""
    dips, lags = [], []
    for r in runs:
        tr = r.trajectory
        if not all(k in tr for k in ("bank/step", "bank/train_loss", "static/bank_used_at")):
            continue
        st = np.asarray(tr["bank/step"], np.int64)
        loss = np.asarray(tr["bank/train_loss"], float).reshape(st.size, -1)
        held = (np.nanmean(np.asarray(tr["bank/heldout_loss"], float).reshape(st.size, -1), axis=1)
                if "bank/heldout_loss" in tr else np.zeros(st.size))
        for j, u in enumerate(np.atleast_1d(tr["static/bank_used_at"])):
            if u < 0 or j >= loss.shape[1]:
                continue
            rel = loss[:, j] - held
            pre, post = np.flatnonzero(st <= u)[-PRE_USE_POINTS:], np.flatnonzero(st > u)
            if pre.size == 0 or post.size == 0 or not np.isfinite(rel[post[0]]):
                continue
            dips.append(float(np.nanmean(rel[pre]) - rel[post[0]]))
            lags.append(int(st[post[0]] - u))
    if not dips:
        return None
    vals, counts = np.unique(lags, return_counts=True)
    lag = int(vals[np.argmax(counts)])          # the most common first lag after use (bank cadence)
    d = np.array([x for x, g in zip(dips, lags) if g == lag])
    return lag, float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")


def three_way(cal, runs, fraction: float) -> dict:
    """The three legs and the verdict ("agrees", "disagrees: <legs>" or "not testable: <why>")."""
    legs, missing = [], []
    fit = cal.fit
    if fit is not None and fit.dof > 0:
        p = float(stats.chi2.sf(fit.chi2, fit.dof))
        legs.append({"measurement": "D(τ) (two-point averages)", "pred": float("nan"), "pred_se": float("nan"),
                     "obs": float("nan"), "obs_se": float("nan"), "agrees": bool(p >= CHI2_P_MIN),
                     "note": f"fit χ² = {fit.chi2:.3g} on {fit.dof} dof, p = {p:.2g}"})
    else:
        missing.append("no D(τ) fit with dof > 0")
    od = observed_dip(runs)
    if od is None:
        missing.append("no fixed-batch bank")
    else:
        lag, obs, obs_se = od
        f = lambda h, s: dip_prediction(cal, fraction, lag, h, s)  # noqa: E731
        legs.append(_leg("fixed-batch dip after use (bank)", f(cal.h, cal.s), spread_se(f, cal), obs, obs_se,
                         f"at {lag} steps after use; each batch's pre-use level minus its loss there, relative to the "
                         f"held-out bank"))
    pm = cal.probes
    if pm is None:
        missing.append("no one-step probes")
    else:
        g = lambda h, s: float(np.sum(np.asarray(h) ** 2 * np.asarray(s)))  # noqa: E731
        legs.append(_leg("one-step probe: training − held-out slope G = Σh²s", g(cal.h, cal.s), spread_se(g, cal),
                         pm.G[0], pm.G[1], "loss per LR unit"))
    if missing:
        verdict = "not testable: " + "; ".join(missing)
    else:
        bad = [leg["measurement"] for leg in legs if not leg["agrees"]]
        verdict = "agrees" if not bad else "disagrees: " + "; ".join(bad)
    return {"legs": legs, "verdict": verdict}


def identification(cal) -> dict:
    """Per scale: h and noise with their s.e., the h range the data allow, identified or not; the drift term; and
    the range of every derived quantity over the parameter sets the data allow."""
    fit = cal.fit
    if fit is None:
        return {}
    ident = fit.identified()
    scales = _scales(cal, fit)
    alts = fit.alternatives or [(fit.h, fit.s, fit.drift)]
    obs_raw = cal.floor + cal.raw_excess
    rng = lambda vals: [float(np.nanmin(vals)), float(np.nanmax(vals))]  # noqa: E731
    excess = [float(0.5 * np.sum(h * stationary.iterate_variance(cal.lr * h, s, cal.momentum))) for h, s, _ in alts]
    derived = {"floor": rng([obs_raw - e for e in excess]), "raw_excess": rng(excess),
               "swa_cooldown_tau": rng([_safe(stationary.spectrum_cooldown_tau, cal.lr, h, s, cal.momentum)
                                        for h, s, _ in alts])}
    per_seed = [{"scales": _scales(cal, f), "drift": {"c": float(f.drift), "c_se": float(f.drift_se),
                                                      "identified": f.drift_identified()}} if f is not None else None
                for f in cal.seed_fits]
    return {"scales": scales, "all_identified": bool(ident.all()),
            "drift": {"c": float(fit.drift), "c_se": float(fit.drift_se), "identified": fit.drift_identified()},
            "derived_ranges": derived, "lags_used": cal.structure.lags.tolist() if cal.structure is not None else [],
            "lags_dropped": [list(d) for d in (cal.structure.dropped if cal.structure is not None else ())],
            "per_seed": per_seed}


def _scales(cal, fit) -> list[dict]:
    """Per scale of ``fit``: h with its profile interval and s.e., noise likewise, relaxation time, identified."""
    ident, scales = fit.identified(), []
    for k in range(fit.h.size):
        relax = (1 - cal.momentum) / (cal.lr * fit.h[k])
        lo, hi = fit.h_range[k]
        scales.append({"h": float(fit.h[k]),
                       # the profile's Δχ² = 4 interval is ±2 s.e.: a quarter of its width in log h is one s.e.
                       "h_se": float(fit.h[k] * (np.log(hi) - np.log(lo)) / 4.0),
                       "h_range": [float(lo), float(hi)], "noise": float(fit.s[k]),
                       "noise_se": float(fit.s_se[k]) if fit.s_se is not None else float("nan"),
                       "noise_range": [float(x) for x in fit.s_range[k]],
                       "relax_steps": float(relax), "at_bound": bool(fit.at_bound()[k]), "identified": bool(ident[k])})
    return scales


def _safe(fn, *args) -> float:
    try:
        return float(fn(*args))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")


def equivalent_lr_range(cal, excess_of) -> list[float]:
    """[min, max] of the equivalent LR over the parameter sets the data allow; ``excess_of(h, s)`` gives the
    average's stationary excess for one set."""
    fit = cal.fit
    alts = fit.alternatives if fit is not None and fit.alternatives else [(cal.h, cal.s, 0.0)]
    vals = [_safe(stationary.spectrum_equivalent_lr, excess_of(h, s), cal.lr, h, s, cal.momentum) for h, s, _ in alts]
    return [float(np.nanmin(vals)), float(np.nanmax(vals))] if np.isfinite(vals).any() else [float("nan")] * 2
