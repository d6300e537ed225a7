"""Small numerical metrics for predicted-vs-observed comparisons. Pure numpy; NaN-aware.

Conventions: ``pred`` and ``obs`` are arrays on the same steps; ``obs_seeds`` is [n_seeds, T]. Relative errors are
(pred − obs)/|obs| (signed) or their absolute mean; an observed value of exactly 0 makes the relative error NaN
rather than infinite.
"""

from __future__ import annotations

import warnings

import numpy as np


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def relative_error(pred, obs) -> np.ndarray:
    """Signed (pred − obs)/|obs| elementwise; NaN where obs == 0 or either is NaN."""
    p, o = np.broadcast_arrays(_arr(pred), _arr(obs))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (p - o) / np.abs(o)
    return np.where(o == 0, np.nan, out)


def mean_abs_relative_error(pred, obs) -> float:
    """mean |pred − obs|/|obs| over finite entries (NaN if none)."""
    r = np.abs(relative_error(pred, obs))
    r = r[np.isfinite(r)]
    return float(r.mean()) if r.size else float("nan")


def rmse(pred, obs) -> float:
    d = _arr(pred) - _arr(obs)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan")


def seed_band(obs_seeds) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, sample s.d., n) over axis 0, ignoring NaN; s.d. is NaN with one seed."""
    x = np.atleast_2d(_arr(obs_seeds))
    n = int(np.sum(np.any(np.isfinite(x), axis=1)))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns -> NaN, on purpose
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0, ddof=1) if n > 1 else np.full(x.shape[1], np.nan)
    return mean, sd, n


def band_coverage(pred, obs_seeds, k: float = 2.0) -> float:
    """Fraction of steps where pred lies within mean ± k·s.d. of the seeds (NaN with < 2 seeds)."""
    mean, sd, n = seed_band(obs_seeds)
    if n < 2:
        return float("nan")
    p = _arr(pred)
    ok = np.isfinite(p) & np.isfinite(mean) & np.isfinite(sd)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(p[ok] - mean[ok]) <= k * sd[ok]))


def r_squared(y, yhat) -> float:
    """1 − SS_res/SS_tot (NaN for constant y)."""
    y, yhat = _arr(y), _arr(yhat)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    tot = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum((y - yhat) ** 2) / tot) if tot > 0 else float("nan")


def polyfit_origin(x, y, w=None) -> tuple[np.ndarray, np.ndarray]:
    """Least squares y ≈ b1·x + b2·x² (through the origin). Returns (coef [b1, b2], covariance 2×2).

    The covariance is σ̂²(XᵀWX)⁻¹ with σ̂² the weighted residual variance (n − 2 dof)."""
    x, y = _arr(x), _arr(y)
    w = np.ones_like(x) if w is None else _arr(w)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(w)
    x, y, w = x[ok], y[ok], w[ok]
    if x.size < 3:
        raise ValueError(f"need at least 3 finite points for a 2-parameter fit, got {x.size}")
    X = np.column_stack([x, x ** 2])
    XtW = X.T * w
    A = XtW @ X
    coef = np.linalg.solve(A, XtW @ y)
    res = y - X @ coef
    s2 = float(np.sum(w * res ** 2) / max(x.size - 2, 1))
    return coef, s2 * np.linalg.inv(A)


def mean_se(x) -> tuple[float, float, int]:
    """(mean, standard error, n) of the finite entries of x."""
    x = _arr(x).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), 0
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se, int(x.size)


def window_mask(steps, lo: float, hi: float) -> np.ndarray:
    s = _arr(steps)
    return (s >= lo) & (s <= hi)
