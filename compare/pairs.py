"""Calibrate on the raw trajectory's own two-point structure, and predict every average from it (theory.md §3.8a).

For a quadratic loss and weights w_j over iterates (Σ w_j = 1), θ̄ = Σ w_j θ_j:

    L(θ̄) = Σ_j w_j L(θ_j) − ¼ Σ_jk w_j w_k D_jk,      D_jk = (θ_j − θ_k)ᵀH(θ_j − θ_k) = 8[½(L_j + L_k) − L(½(θ_j + θ_k))]

so the gain of an average over the current iterate θ_t splits into a drift term and a fluctuation term,

    L(θ_t) − L(θ̄_t) = [L(θ_t) − Σ_j w_j L(θ_j)] + ¼ Σ_jk w_j w_k D(|j − k|)        (stationary D_jk = D(|j − k|)).

D(τ) is measured from the run's two-point averages ``two_point_k<τ>`` at a grid of lags τ (empirical.run records them,
BN statistics recomputed exactly as for every other variant) and the raw losses at both ends. Nothing here reads an
EMA, SWA or N-point curve: those are what the identity predicts. Between measured lags D is interpolated linearly;
below the smallest and beyond the largest lag its shape comes from an NQM spectrum fitted to the measured D(τ)
(:func:`fit_spectrum`, D(τ) = Σ_k 4h_k(v_k − Var_k(two-point at lag τ)) = Σ_k 2h_k v_k (1 − ρ_k(τ))), anchored to the
measured values at the ends. Standard errors are block standard errors over the window (``BLOCKS`` contiguous
blocks of evaluation steps); blocks shorter than an average's memory understate them, so the seed-to-seed spread is
reported beside them (compare/report.py).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, nnls
from scipy.signal import correlate

from compare.load import Variant
from theory import stationary

BLOCKS = 6                 # contiguous blocks of the window for block standard errors
MIN_PAIRS = 3              # a lag needs at least this many (t − τ, t) pairs in the window to count
FIT_RATES = np.geomspace(1e-4, 3.0, 36)   # α_eff grid of the multi-start for the spectrum fit (dimensionless)
SMOOTH_POINTS = 2          # the drift and transient terms smooth the raw loss over ±2 evaluation steps
SLOWEST_RELAX = 4.0        # no fitted relaxation time 1/α_eff beyond this many times the longest measured lag


# --------------------------------------------------------------------------------------------- block statistics

def block_mean_se(values: np.ndarray, blocks: int = BLOCKS) -> tuple[float, float]:
    """(mean, block s.e.) of a series ordered in time: the s.e. of the mean of ``blocks`` contiguous block means
    (fewer blocks when there are fewer values; NaN s.e. with < 2 blocks). NaN entries are dropped first."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    nb = min(blocks, x.size)
    if nb < 2:
        return float(x.mean()), float("nan")
    means = np.array([c.mean() for c in np.array_split(x, nb)])
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(nb))


# --------------------------------------------------------------------------------------------- measurement

@dataclass
class LagStructure:
    """Measured D(τ) of one run (or pooled over runs): loss units, lags in optimiser steps."""

    lags: np.ndarray
    D: np.ndarray
    se: np.ndarray
    pairs: np.ndarray          # number of (t − τ, t) pairs behind each value


def _series(tr, key: str, steps: np.ndarray) -> np.ndarray:
    """The eval series ``key`` at exactly ``steps`` (NaN where not evaluated)."""
    st = np.asarray(tr["eval/step"])
    val = np.asarray(tr[key], float) if key in tr else np.full(st.size, np.nan)
    idx = np.searchsorted(st, steps)
    ok = (idx < st.size) & (st[np.minimum(idx, st.size - 1)] == steps)
    out = np.full(steps.size, np.nan)
    out[ok] = val[idx[ok]]
    return out


def lag_grid(run, split: str = "test") -> list[int]:
    """Lags τ of the run's two-point averages (eval/<split>_loss_two_point_k<τ>), ascending."""
    pre = f"eval/{split}_loss_two_point_k"
    return sorted(int(k[len(pre):]) for k in run.trajectory.series if k.startswith(pre))


def structure(run, window: tuple[int, int], split: str = "test") -> LagStructure:
    """D(τ) = 8[½(L_t + L_{t−τ}) − L(two-point at t)] averaged over the evaluation steps t in ``window`` where all
    three losses were evaluated (raw loss at t − τ measured, never interpolated), with its block s.e."""
    tr = run.trajectory
    st = np.asarray(tr["eval/step"])
    t = st[(st >= window[0]) & (st <= window[1])]
    raw_t = _series(tr, f"eval/{split}_loss_raw", t)
    lags, D, se, n = [], [], [], []
    for k in lag_grid(run, split):
        d = 8.0 * (0.5 * (raw_t + _series(tr, f"eval/{split}_loss_raw", t - k))
                   - _series(tr, f"eval/{split}_loss_two_point_k{k}", t))
        ok = np.isfinite(d)
        if ok.sum() < MIN_PAIRS:
            continue
        m, s = block_mean_se(d[ok])
        lags.append(k), D.append(m), se.append(s), n.append(int(ok.sum()))
    return LagStructure(np.array(lags, int), np.array(D), np.array(se), np.array(n, int))


def pool(structures: list[LagStructure]) -> LagStructure:
    """Mean over runs of D at the lags every run has; s.e. = √(Σ se²)/n (runs independent)."""
    common = sorted(set.intersection(*[set(s.lags.tolist()) for s in structures])) if structures else []
    rows = [[s.D[list(s.lags).index(k)] for k in common] for s in structures]
    ses = [[s.se[list(s.lags).index(k)] for k in common] for s in structures]
    nn = [[s.pairs[list(s.lags).index(k)] for k in common] for s in structures]
    n = len(structures)
    return LagStructure(np.array(common, int), np.mean(rows, axis=0) if common else np.array([]),
                        np.sqrt(np.nansum(np.square(ses), axis=0)) / n if common else np.array([]),
                        np.sum(nn, axis=0).astype(int) if common else np.array([], int))


# --------------------------------------------------------------------------------------------- NQM spectrum fit

def nqm_structure(h, s, lr: float, momentum: float, lags) -> np.ndarray:
    """Model D(τ) = Σ_k 4h_k(v_k − Var_k(½(x_t + x_{t−τ}))) at stationarity (theory.md §3.5, §3.8a); h in 1/LR units,
    s the noise mass per scale (param²), lr λ the raw LR (momentum enters through theory.stationary)."""
    h, s = np.atleast_1d(np.asarray(h, float)), np.atleast_1d(np.asarray(s, float))
    alpha = lr * h
    v = stationary.iterate_variance(alpha, s, momentum)
    out = []
    for k in np.atleast_1d(lags):
        k = int(k)
        out.append(0.0 if k == 0 else float(np.sum(4.0 * h * (v - stationary.two_point_variance(alpha, k, s,
                                                                                                  momentum)))))
    return np.array(out)


@dataclass
class SpectrumFit:
    h: np.ndarray              # curvature scales, 1/LR units
    s: np.ndarray              # noise mass per scale, param²
    cov: np.ndarray            # covariance of (log h, log s)
    chi2: float
    dof: int

    def params(self) -> np.ndarray:
        return np.concatenate([np.log(self.h), np.log(self.s)])


def fit_spectrum(ls: LagStructure, lr: float, momentum: float, scales: int = 2) -> SpectrumFit:
    """Weighted least squares of the NQM D(τ) (``scales`` curvature scales) to the measured one.

    Given the rates, D is linear in the noise masses, so a grid of rates α_eff ∈ FIT_RATES (all ``scales``-subsets)
    is scanned with non-negative least squares for the masses, and the best start is refined in (log h, log s).
    Raises ValueError with fewer measured lags than 2·scales or a non-positive D everywhere."""
    J = int(scales)
    if J < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    ok = np.isfinite(ls.D) & np.isfinite(ls.se)
    lags, D = ls.lags[ok], ls.D[ok]
    if lags.size < 2 * J or not np.any(D > 0):
        raise ValueError(f"fitting {J} scale(s) to D(τ) needs at least {2 * J} lags with a positive D, got "
                         f"{int(lags.size)} lag(s) (record two-point averages at a lag grid: --two-point-gaps)")
    se = np.maximum(ls.se[ok], 0.02 * np.abs(D) + 1e-12)   # floor: one noiseless lag cannot dominate the fit
    lam_eff = lr / (1.0 - momentum)
    h_max = 0.999 * stationary.max_stable_alpha(momentum) / lr
    # slowest resolvable rate: a scale relaxing over much more than the longest lag only adds D ∝ τ over the grid, so
    # its h and s trade off freely (h → 0, s → ∞) and its stationary excess would be unbounded
    h_min = 1.0 / (SLOWEST_RELAX * float(lags.max()) * lam_eff)
    hs = np.unique(np.clip(FIT_RATES / lam_eff, h_min, h_max))
    unit = np.array([nqm_structure([h], [1.0], lr, momentum, lags) for h in hs])   # [rates, lags]
    best = None
    for combo in itertools.combinations(range(hs.size), J):
        A = (unit[list(combo)] / se).T
        sol, rnorm = nnls(A, D / se)
        if best is None or rnorm < best[0]:
            best = (rnorm, combo, sol)
    _, combo, sol = best
    h0 = hs[list(combo)]
    s0 = np.maximum(sol, 1e-12 * max(sol.max(), 1e-30))
    fun = lambda p: (nqm_structure(np.exp(p[:J]), np.exp(p[J:]), lr, momentum, lags) - D) / se  # noqa: E731
    lo = np.concatenate([np.full(J, np.log(h_min)), np.full(J, -80.0)])
    hi = np.concatenate([np.full(J, np.log(h_max)), np.full(J, 50.0)])
    p0 = np.clip(np.log(np.concatenate([h0, s0])), lo + 1e-9, hi - 1e-9)
    fit = least_squares(fun, p0, bounds=(lo, hi))
    chi2, dof = float(np.sum(fit.fun ** 2)), int(lags.size - 2 * J)
    try:
        cov = np.linalg.pinv(fit.jac.T @ fit.jac) * (max(chi2 / dof, 1.0) if dof > 0 else 1.0)
    except np.linalg.LinAlgError:
        cov = np.full((2 * J, 2 * J), np.nan)
    order = np.argsort(np.exp(fit.x[:J]))
    idx = np.concatenate([order, order + J])
    return SpectrumFit(np.exp(fit.x[:J])[order], np.exp(fit.x[J:])[order], cov[np.ix_(idx, idx)], chi2, dof)


class StructureFunction:
    """D(τ) for any lag τ >= 0: measured values interpolated linearly between measured lags; below the smallest
    lag the fitted shape scaled to the first measured value, beyond the largest the fitted increments added to the
    last measured value (theory.md §3.8a). Loss units."""

    def __init__(self, ls: LagStructure, fit: SpectrumFit | None, lr: float, momentum: float):
        ok = np.isfinite(ls.D)
        self.lags, self.D = ls.lags[ok].astype(float), ls.D[ok]
        if self.lags.size == 0:
            raise ValueError("no measured lag: D(τ) needs two-point averages at one lag at least")
        self.fit, self.lr, self.momentum = fit, lr, momentum
        self._table = np.zeros(0)

    def __call__(self, tau) -> np.ndarray:
        """D at lags ``tau`` (steps); integer lags come from a table built once up to the largest lag asked."""
        tau = np.asarray(tau, float)
        if tau.size and np.all(tau == np.round(tau)) and tau.min() >= 0:
            top = int(tau.max())
            if self._table.size <= top:
                self._table = self._evaluate(np.arange(max(top + 1, 2 * self._table.size), dtype=float))
            return self._table[tau.astype(int)]
        return self._evaluate(tau)

    def _evaluate(self, tau: np.ndarray) -> np.ndarray:
        out = np.interp(tau, np.concatenate([[0.0], self.lags]), np.concatenate([[0.0], self.D]))
        if self.fit is None:
            return out
        lo, hi = self.lags[0], self.lags[-1]
        below, above = (tau > 0) & (tau < lo), tau > hi
        if below.any():
            model = nqm_structure(self.fit.h, self.fit.s, self.lr, self.momentum, [lo, *tau[below]])
            if model[0] > 0:
                out[below] = self.D[0] * model[1:] / model[0]
        if above.any():
            model = nqm_structure(self.fit.h, self.fit.s, self.lr, self.momentum, [hi, *tau[above]])
            out[above] = self.D[-1] + model[1:] - model[0]
        return out


# --------------------------------------------------------------------------------------------- averages as weights

def variant_weights(v: Variant, cfg: dict, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps j, weights w_j) with Σ w_j = 1 of the run's variant ``v`` at evaluation step t, as empirical/averaging.py
    builds it (docs/run-series.md): EMA initialised to θ_s at s = ema_start, then y ← γ^c y + (1 − γ^c) θ every c
    steps; SWA the uniform mean of θ_r, θ_{r+c}, …; N-point 1/N at t − i·gap; two-point ½ at t and t − k.
    Raises ValueError where the variant is not defined at t."""
    if v.kind == "ema":
        s, c = int(cfg.get("ema_start", 0) or 0), int(cfg.get("ema_every", 1) or 1)
        if t < s:
            raise ValueError(f"{v.name} is not defined before step {s}")
        j = np.arange(s, t + 1 - (t - s) % c, c)
        q = v.decay ** c                                   # decay per update
        w = (1.0 - q) * q ** ((j[-1] - j) // c).astype(float)
        w[0] = q ** ((j[-1] - j[0]) // c)                 # the initial copy keeps the mass of all decays since
        return j, w
    if v.kind == "swa":
        r, c = int(cfg.get("swa_start", 0) or 0), int(cfg.get("swa_every", 1) or 1)
        length = cfg.get("swa_length")
        if t < r:
            raise ValueError(f"swa is not defined before step {r}")
        j = np.arange(r, t + 1, c)
        if length:
            j = j[:int(length)]
        return j, np.full(j.size, 1.0 / j.size)
    if v.kind in ("two_point", "points"):
        n = 2 if v.kind == "two_point" else v.n
        j = t - v.gap * np.arange(n)[::-1]
        if j[0] < 0:
            raise ValueError(f"{v.name} is not defined before step {v.gap * (n - 1)}")
        return j, np.full(n, 1.0 / n)
    raise ValueError(f"no averaging weights for variant {v.name!r}")


def fluctuation_term(w: np.ndarray, j: np.ndarray, D: StructureFunction) -> float:
    """¼ Σ_jk w_j w_k D(|j − k|) for weights on an arithmetic grid of steps j (spacing c) — through the weights'
    autocorrelation A(τ) = Σ_j w_j w_{j+τ}, so the cost is one correlation, not a double sum."""
    if j.size == 1:
        return 0.0
    c = int(j[1] - j[0]) if j.size > 1 else 1
    if np.any(np.diff(j) != c):
        raise ValueError("weights must sit on an evenly spaced grid of steps")
    A = correlate(w, w, mode="full")[w.size - 1:]         # A[m] at lag m·c, m >= 0 (FFT for long windows)
    lags = np.arange(A.size) * c
    return float(0.25 * 2.0 * np.sum(A[1:] * D(lags[1:])))   # ordered pairs: each |j − k| = m·c twice


@dataclass
class GainSeries:
    """Per evaluation step t in the window: observed gain L_raw − L_avg and its prediction (both BN-consistent, loss
    units). ``pred`` = ``drift`` + ``fluct`` + ``transient``; ``plain`` = the identity with a stationary D for every
    pair and the raw losses as measured (the transient term's reference: theory.md §3.8a)."""

    steps: np.ndarray
    obs: np.ndarray
    pred: np.ndarray
    drift: np.ndarray
    fluct: np.ndarray
    transient: np.ndarray
    plain: np.ndarray


def smoothed(values: np.ndarray, half_width: int = SMOOTH_POINTS) -> np.ndarray:
    """Moving mean over ±``half_width`` neighbouring entries (fewer at the ends)."""
    v = np.asarray(values, float)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo, hi = np.maximum(i - half_width, 0), np.minimum(i + half_width + 1, v.size)
    return (c[hi] - c[lo]) / (hi - lo)


def gain_series(run, v: Variant, cfg: dict, D: StructureFunction, window: tuple[int, int],
                split: str = "test") -> GainSeries:
    """Observed and predicted gain of variant ``v`` over the raw iterate at the run's evaluation steps in ``window``
    where both losses were evaluated (theory.md §3.8a):

        gain(t) = [L_t − Σ_j w_j L̄_j]  +  ¼ Σ_jk w_j w_k D(|j − k|)  +  ½[Σ_j w_j b_j − (Σ_j w_j √b_j)²] − Σ_j w_j² e_j
                   drift                  fluctuation (stationary D)     transient: pairs outside stationarity

    L̄ is the raw loss smoothed over ±SMOOTH_POINTS evaluation steps (interpolated linearly between them), e_j = L_j −
    L̄_j the iterate's own excursion, b_j = max(L̄_j − L_stat, 0) the excess of the smoothed loss before the window
    over its window mean L_stat (0 inside the window, which is stationary by assumption). The stationary D misses
    what a pair involving a non-stationary iterate adds to D_jk: a mean path decaying along one direction adds
    2(√b_j − √b_k)² (coherent), an iterate's own excursion adds 2(e_j + e_k) (independent); summed with the weights
    these give the transient term. Without it (``plain``) an EMA whose memory reaches back before the window is
    predicted to lose what its early iterates cost, with nothing for how far they sat from the later ones."""
    tr = run.trajectory
    st = np.asarray(tr["eval/step"])
    raw = np.asarray(tr[f"eval/{split}_loss_raw"], float)
    key = f"eval/{split}_loss_{v.name}"
    avg = np.asarray(tr[key], float) if key in tr else np.full(st.size, np.nan)
    ok_raw = np.isfinite(raw)
    s_raw, l_raw = st[ok_raw], raw[ok_raw]
    l_smooth = smoothed(l_raw)
    in_window = (s_raw >= window[0]) & (s_raw <= window[1])
    l_stat = float(l_raw[in_window].mean()) if in_window.any() else float("nan")
    sel = np.flatnonzero((st >= window[0]) & (st <= window[1]) & ok_raw & np.isfinite(avg))
    rows = []
    for i in sel:
        t = int(st[i])
        try:
            j, w = variant_weights(v, cfg, t)
        except ValueError:
            continue
        if j[0] < s_raw[0]:
            continue
        l_j, lbar_j = np.interp(j, s_raw, l_raw), np.interp(j, s_raw, l_smooth)
        b = np.where(j < window[0], np.maximum(lbar_j - l_stat, 0.0), 0.0)
        drift = raw[i] - float(np.sum(w * lbar_j))
        transient = (0.5 * (float(np.sum(w * b)) - float(np.sum(w * np.sqrt(b))) ** 2)
                     - float(np.sum(w * w * (l_j - lbar_j))))
        fl = fluctuation_term(w, j, D)
        plain = raw[i] - float(np.sum(w * l_j)) + fl
        rows.append((t, raw[i] - avg[i], drift + fl + transient, drift, fl, transient, plain))
    arr = np.array(rows, float).reshape(-1, 7)
    return GainSeries(arr[:, 0].astype(int), *(arr[:, k] for k in range(1, 7)))
