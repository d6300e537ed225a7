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

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, nnls
from scipy.signal import correlate

from theory import spec, stationary

BLOCKS = 6                 # contiguous blocks of the window for block standard errors
MIN_PAIRS = 3              # a lag needs at least this many (t − τ, t) pairs in the window to count
WINDOW_PER_LAG = 3.0       # a lag τ is used only if the window is at least this many times τ long: both iterates of
                           # every pair lie in the window, so a longer lag has fewer pairs and fewer independent ones
FIT_RATES = np.geomspace(1e-4, 3.0, 36)   # α_eff grid of the multi-start for the spectrum fit (dimensionless)
SMOOTH_POINTS = 2          # the drift and transient terms smooth the raw loss over ±2 evaluation steps
SLOWEST_RELAX = 4.0        # no fitted relaxation time 1/α_eff beyond this many times the longest measured lag
PROFILE_SPAN = 100.0       # the profile scan of each scale's h reaches this factor below the fit's lower bound
PROFILE_DCHI2 = 4.0        # Δχ² of the profile that bounds "the range the data allow" (≈ 2 s.e. for one parameter)
AT_BOUND = 0.05            # a fitted log h within this of a bound (5 %) sits on the bound
SCALE_DCHI2 = 6.0          # a further scale (2 parameters) must lower χ² by this much (p ≈ 0.05 for 2 dof)
MERGE_RATIO = 1.5          # two fitted scales closer than this factor in h are one scale
REFINE_STARTS = 6          # the fit refines this many of the best grid starts


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
    """Measured D(τ) of one run (or pooled over runs): loss units, lags in optimiser steps. ``blocks`` [n_blocks,
    n_lags]: D of each contiguous block of the window (NaN where a block has no pair at that lag), from which the
    covariance of the D estimates across lags is taken (:meth:`cov`)."""

    lags: np.ndarray
    D: np.ndarray
    se: np.ndarray
    pairs: np.ndarray          # number of (t − τ, t) pairs behind each value
    blocks: np.ndarray | None = None
    dropped: tuple = ()        # lags recorded but not used: (lag, why)

    def cov(self) -> np.ndarray:
        """Covariance of the D estimates across lags: that of the block means over the number of blocks (pairwise
        complete), with the block s.e. on the diagonal. Lags of one window share iterates, so their errors are
        positively correlated and a sum over lags is less certain than independent errors would say."""
        n = self.lags.size
        C = np.diag(np.nan_to_num(self.se, nan=0.0) ** 2)
        if self.blocks is None or self.blocks.shape[0] < 3:
            return C
        Bm = self.blocks
        for i in range(n):
            for j in range(i + 1, n):
                ok = np.isfinite(Bm[:, i]) & np.isfinite(Bm[:, j])
                if ok.sum() >= 3:
                    c = np.cov(Bm[ok, i], Bm[ok, j], ddof=1)[0, 1] / ok.sum()
                    lim = np.sqrt(C[i, i] * C[j, j])
                    C[i, j] = C[j, i] = float(np.clip(c, -lim, lim))
        return C


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


def usable_lag(window: tuple[int, int]) -> float:
    """The longest lag the window can measure: its length over WINDOW_PER_LAG (steps)."""
    return (window[1] - window[0]) / WINDOW_PER_LAG


def structure(run, window: tuple[int, int], split: str = "test") -> LagStructure:
    """D(τ) = 8[½(L_t + L_{t−τ}) − L(two-point at t)] averaged over the pairs whose BOTH iterates lie in ``window``
    (t − τ ≥ window start; raw loss at t − τ measured, never interpolated), with its block s.e. Lags longer than
    :func:`usable_lag` are dropped (``dropped`` says which): a pair reaching back before the window measures the
    descent before it, not the stationary fluctuation (theory.md §3.8a)."""
    tr = run.trajectory
    st = np.asarray(tr["eval/step"])
    t = st[(st >= window[0]) & (st <= window[1])]
    raw_t = _series(tr, f"eval/{split}_loss_raw", t)
    edges = np.linspace(window[0], window[1] + 1, BLOCKS + 1)
    lags, D, se, n, blocks, dropped = [], [], [], [], [], []
    for k in lag_grid(run, split):
        if k > usable_lag(window):
            dropped.append((k, f"longer than the window / {WINDOW_PER_LAG:g}"))
            continue
        inside = t - k >= window[0]
        d = 8.0 * (0.5 * (raw_t + _series(tr, f"eval/{split}_loss_raw", t - k))
                   - _series(tr, f"eval/{split}_loss_two_point_k{k}", t))
        ok = np.isfinite(d) & inside
        if ok.sum() < MIN_PAIRS:
            dropped.append((k, f"fewer than {MIN_PAIRS} in-window pairs"))
            continue
        m, s = block_mean_se(d[ok])
        lags.append(k), D.append(m), se.append(s), n.append(int(ok.sum()))
        # blocks by the position of the later iterate t (the same blocks for every lag, so they can be compared)
        blocks.append([float(np.mean(d[ok & (t >= lo) & (t < hi)])) if np.any(ok & (t >= lo) & (t < hi))
                       else np.nan for lo, hi in zip(edges[:-1], edges[1:])])
    return LagStructure(np.array(lags, int), np.array(D), np.array(se), np.array(n, int),
                        np.array(blocks).T if blocks else None, tuple(dropped))


def pool(structures: list[LagStructure]) -> LagStructure:
    """Mean over runs of D at the lags every run has; s.e. = √(Σ se²)/n (runs independent)."""
    common = sorted(set.intersection(*[set(s.lags.tolist()) for s in structures])) if structures else []
    rows = [[s.D[list(s.lags).index(k)] for k in common] for s in structures]
    ses = [[s.se[list(s.lags).index(k)] for k in common] for s in structures]
    nn = [[s.pairs[list(s.lags).index(k)] for k in common] for s in structures]
    n = len(structures)
    blocks = None
    if common and all(s.blocks is not None for s in structures):
        # per-run block rows stacked and scaled so that the block covariance / rows is that of the pooled mean
        idx = [[list(s.lags).index(k) for k in common] for s in structures]
        blocks = np.vstack([s.blocks[:, i] for s, i in zip(structures, idx)])
        blocks = np.nanmean(blocks, axis=0) + (blocks - np.nanmean(blocks, axis=0)) / np.sqrt(n)
    return LagStructure(np.array(common, int), np.mean(rows, axis=0) if common else np.array([]),
                        np.sqrt(np.nansum(np.square(ses), axis=0)) / n if common else np.array([]),
                        np.sum(nn, axis=0).astype(int) if common else np.array([], int), blocks,
                        structures[0].dropped if structures else ())


# --------------------------------------------------------------------------------------------- NQM spectrum fit

def nqm_structure(h, s, lr: float, momentum: float, lags, drift: float = 0.0) -> np.ndarray:
    """Model D(τ) = Σ_k 2h_k v_k (1 − ρ_k(τ)) + c·τ² at stationarity (theory.md §2.6, §3.5, §3.8a); h in 1/LR units,
    s the noise mass per scale (param²), lr λ the raw LR, ρ_k the heavy-ball iterate's autocorrelation at α = λh_k
    ((1 − α)^τ for μ = 0, else the AR(2) recursion ρ(τ) = (1 + μ − α)ρ(τ−1) − μρ(τ−2), ρ(1) = (1 + μ − α)/(1 + μ)),
    ``drift`` c (loss/step²) a deterministic motion at constant speed r along curvature h_d, c = h_d r² (§3.8a).
    Vectorised over the lags (integers ≥ 0): one pass of the recursion up to the largest."""
    h, s = np.atleast_1d(np.asarray(h, float)), np.atleast_1d(np.asarray(s, float))
    alpha = lr * h
    v = stationary.iterate_variance(alpha, s, momentum)
    tau = np.rint(np.atleast_1d(np.asarray(lags, float))).astype(np.int64)
    if tau.size == 0:
        return np.zeros(0)
    if momentum == 0:
        rho = (1.0 - alpha[None, :]) ** tau[:, None]
    else:
        top = int(tau.max())
        table = np.empty((top + 1, alpha.size))
        phi1 = 1.0 + momentum - alpha
        table[0] = 1.0
        if top >= 1:
            table[1] = phi1 / (1.0 + momentum)
        for k in range(2, top + 1):
            table[k] = phi1 * table[k - 1] - momentum * table[k - 2]
        rho = table[tau]
    out = np.sum(2.0 * h * v * (1.0 - rho), axis=1) + drift * tau.astype(float) ** 2
    return np.where(tau == 0, 0.0, out)


@dataclass
class SpectrumFit:
    h: np.ndarray              # curvature scales, 1/LR units
    s: np.ndarray              # noise mass per scale, param²
    cov: np.ndarray            # covariance of (log h, log s), fit s.e.
    chi2: float
    dof: int
    drift: float = 0.0         # c of the c·τ² term, loss/step²
    drift_se: float = float("nan")
    h_bounds: tuple = (0.0, float("inf"))   # the fit's limits on h, 1/LR units
    h_range: np.ndarray | None = None        # [J, 2]: h allowed by the data (profile Δχ² ≤ PROFILE_DCHI2)
    alternatives: list = field(default_factory=list)   # (h, s, drift) sets inside those ranges
    s_se: np.ndarray | None = None           # s.e. of s (param²) from the linear refit at the best h
    s_range: np.ndarray | None = None        # [J, 2]: noise mass allowed by the data (over h_range, ± 2 s.e. at each h)
    fitted_to: tuple = field(default=(), repr=False)   # (lags, D, se, lr, momentum, drift): what the profile rescans

    def params(self) -> np.ndarray:
        return np.concatenate([np.log(self.h), np.log(self.s)])

    def at_bound(self) -> np.ndarray:
        """Per scale: h within AT_BOUND (relative) of a limit of the fit."""
        lo, hi = self.h_bounds
        return (np.log(self.h) - np.log(lo) < AT_BOUND) | (np.log(hi) - np.log(self.h) < AT_BOUND)

    def identified(self) -> np.ndarray:
        """Per scale: the data pin it down — h off the fit's limits, its profile range closed on both sides inside
        the scan, and a noise mass more than 2 s.e. above zero (theory.md §3.8a). Anything else is reported as the
        range the data allow, never as one number."""
        J = self.h.size
        closed = np.ones(J, bool) if self.h_range is None else np.array(
            [self.h_range[k, 0] > self.h_bounds[0] / PROFILE_SPAN * (1 + 1e-9) and
             self.h_range[k, 1] < self.h_bounds[1] * (1 - 1e-9) for k in range(J)])
        noisy = np.ones(J, bool) if self.s_se is None else self.s > 2.0 * np.nan_to_num(self.s_se, nan=np.inf)
        return ~self.at_bound() & closed & noisy

    def drift_identified(self) -> bool:
        return bool(self.drift > 2.0 * np.nan_to_num(self.drift_se, nan=np.inf))


@functools.lru_cache(maxsize=4096)
def _unit_column(h: float, lr: float, momentum: float, lags: tuple) -> np.ndarray:
    """D(τ) of one scale at unit noise mass (cached: the grid scan and the profiles ask for the same h many times)."""
    return nqm_structure([h], [1.0], lr, momentum, lags)


def _design(hs, lr, momentum, lags, drift: bool) -> np.ndarray:
    """Columns: D(τ) of one scale at unit noise mass for each h in ``hs``, then τ² (the drift column)."""
    key = tuple(int(k) for k in np.atleast_1d(lags))
    cols = [_unit_column(float(h), float(lr), float(momentum), key) for h in hs]
    if drift:
        cols.append(np.asarray(lags, float) ** 2)
    return np.array(cols, float).reshape(len(cols), len(lags)).T


def _linear(A: np.ndarray, D: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Non-negative weighted least squares D ≈ A·x; (x, χ², s.e. of x from the unconstrained normal equations)."""
    Aw, Dw = A / se[:, None], D / se
    # columns span many decades (a slow scale's unit D is ~1e-12 of a fast one's, τ² reaches 1e6): solve on columns
    # scaled to unit norm, or NNLS and the normal equations lose the small ones to rounding
    norm = np.linalg.norm(Aw, axis=0)
    norm = np.where(norm > 0, norm, 1.0)
    y, rnorm = nnls(Aw / norm, Dw)
    x = y / norm
    try:
        xse = np.sqrt(np.clip(np.diag(np.linalg.pinv((Aw / norm).T @ (Aw / norm))), 0, None)) / norm
    except np.linalg.LinAlgError:
        xse = np.full(x.size, np.nan)
    return x, float(rnorm ** 2), xse


def fit_spectrum(ls: LagStructure, lr: float, momentum: float, scales: int = 2, drift: bool = True,
                 profile: bool = True) -> SpectrumFit:
    """Weighted least squares of the NQM D(τ) (``scales`` curvature scales) plus a drift term c·τ² to the measured
    one (theory.md §3.8a).

    Given the rates, D is linear in the noise masses and in c, so a grid of rates α_eff ∈ FIT_RATES (all
    ``scales``-subsets) is scanned with non-negative least squares, and the best start is refined in (log h, log s,
    c). Each scale's h is then profiled (the others held, masses and c refitted linearly) over [h_min/PROFILE_SPAN,
    h_max]: the range where χ² stays within PROFILE_DCHI2 of its minimum is what the data allow. Raises ValueError
    with fewer measured lags than the parameters or a non-positive D everywhere."""
    J = int(scales)
    if J < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    ok = np.isfinite(ls.D) & np.isfinite(ls.se)
    lags, D = ls.lags[ok], ls.D[ok]
    npar = 2 * J + int(drift)
    if lags.size < npar or not np.any(D > 0):
        raise ValueError(f"fitting {J} scale(s){' and a drift term' if drift else ''} to D(τ) needs at least {npar} "
                         f"lags with a positive D inside the window, got {int(lags.size)} lag(s) (record two-point "
                         f"averages at a lag grid, --two-point-gaps, and a window at least {WINDOW_PER_LAG:g}× the "
                         f"longest lag)")
    se = np.maximum(ls.se[ok], 0.02 * np.abs(D) + 1e-12)   # floor: one noiseless lag cannot dominate the fit
    lam_eff = lr / (1.0 - momentum)
    h_max = 0.999 * stationary.max_stable_alpha(momentum) / lr
    # slowest resolvable rate: a scale relaxing over much more than the longest lag only adds D ∝ τ over the grid, so
    # its h and s trade off freely (h → 0, s → ∞) and its stationary excess would be unbounded
    h_min = 1.0 / (SLOWEST_RELAX * float(lags.max()) * lam_eff)
    hs = np.unique(np.clip(FIT_RATES / lam_eff, h_min, h_max))
    unit = _design(hs, lr, momentum, lags, False)          # [lags, rates]
    tail = _design([], lr, momentum, lags, drift)          # [lags, 0 or 1]
    scan = []
    for combo in itertools.combinations(range(hs.size), J):
        x, chi2, _ = _linear(np.hstack([unit[:, list(combo)], tail]), D, se)
        scan.append((chi2, combo, x))
    scan.sort(key=lambda r: r[0])
    c_scale = float(np.max(D)) / float(lags.max()) ** 2   # c in units of D(τ_max)/τ_max², so the refit is well scaled

    def model(p):
        return nqm_structure(np.exp(p[:J]), np.exp(p[J:2 * J]), lr, momentum, lags,
                             p[2 * J] * c_scale if drift else 0.0)

    fun = lambda p: (model(p) - D) / se  # noqa: E731
    lo = np.concatenate([np.full(J, np.log(h_min)), np.full(J, -80.0), [0.0] if drift else []])
    hi = np.concatenate([np.full(J, np.log(h_max)), np.full(J, 50.0), [np.inf] if drift else []])
    fit = None
    # refine the REFINE_STARTS best starts of the scan: the best grid point can sit in the basin of a local optimum
    # (two scales sharing the sharp one while the slow one is missed)
    for _, combo, sol in scan[:REFINE_STARTS]:
        s0 = np.maximum(sol[:J], 1e-12 * max(sol[:J].max(), 1e-30))
        p0 = np.concatenate([np.log(hs[list(combo)]), np.log(s0), [sol[J] / c_scale] if drift else []])
        p0 = np.clip(p0, lo + 1e-9, np.where(np.isfinite(hi), hi - 1e-9, p0 + 1.0))
        trial = least_squares(fun, p0, bounds=(lo, hi))
        if fit is None or trial.cost < fit.cost:
            fit = trial
    chi2, dof = float(np.sum(fit.fun ** 2)), int(lags.size - npar)
    try:
        cov = np.linalg.pinv(fit.jac.T @ fit.jac) * (max(chi2 / dof, 1.0) if dof > 0 else 1.0)
    except np.linalg.LinAlgError:
        cov = np.full((npar, npar), np.nan)
    h, s = np.exp(fit.x[:J]), np.exp(fit.x[J:2 * J])
    c = float(fit.x[2 * J] * c_scale) if drift else 0.0
    c_se = float(np.sqrt(max(cov[2 * J, 2 * J], 0.0)) * c_scale) if drift else float("nan")
    order = np.argsort(h)
    idx = np.concatenate([order, order + J])
    h, s = h[order], s[order]
    # linear refit at the best h: s.e. of the masses themselves (a mass at 0 has no log)
    _, _, xse = _linear(np.hstack([_design(h, lr, momentum, lags, False), tail]), D, se)
    infl = np.sqrt(max(chi2 / dof, 1.0)) if dof > 0 else 1.0
    out = SpectrumFit(h, s, cov[np.ix_(idx, idx)], chi2, dof, c, c_se, (h_min, h_max), None, [], xse[:J] * infl)
    out.fitted_to = (lags, D, se, lr, momentum, drift)
    if profile:
        _profile(out, *out.fitted_to)
    return out


def select_fit(ls: LagStructure, lr: float, momentum: float, max_scales: int = 2, profile: bool = True) -> SpectrumFit:
    """The fit with the fewest scales (each with the drift term) that the data ask for: J + 1 scales replace J only
    when χ² falls by more than SCALE_DCHI2 (two more parameters) and the extra scale is not a copy of another (h
    within a factor MERGE_RATIO). A second scale the data do not need would otherwise split one scale's noise and
    leave both "not identified". Raises ValueError if not even one scale can be fitted."""
    best = fit_spectrum(ls, lr, momentum, 1, profile=False)
    for J in range(2, int(max_scales) + 1):
        try:
            f = fit_spectrum(ls, lr, momentum, J, profile=False)
        except ValueError:
            break
        distinct = np.all(np.diff(np.log(f.h)) > np.log(MERGE_RATIO))
        if best.chi2 - f.chi2 > SCALE_DCHI2 and distinct:
            best = f
        else:
            break
    if profile:
        _profile(best, *best.fitted_to)
    return best


def _profile(fit: SpectrumFit, lags, D, se, lr: float, momentum: float, drift: bool) -> None:
    """Fill ``h_range`` and ``alternatives``: each scale's h scanned over [h_min/PROFILE_SPAN, h_max] with the other
    h held at their fitted values and every mass and c refitted (linear, non-negative)."""
    J = fit.h.size
    coarse = np.geomspace(fit.h_bounds[0] / PROFILE_SPAN, fit.h_bounds[1], 80)
    tail = _design([], lr, momentum, lags, drift)
    rng, srng, alts = np.zeros((J, 2)), np.zeros((J, 2)), []
    for k in range(J):
        keep, masses = [], []
        # the coarse scan (×1.23 per point) plus a fine one (×1.035) within a factor 2 of the fitted h
        fine = fit.h[k] * np.geomspace(0.5, 2.0, 41)
        grid = np.concatenate([coarse, fine[(fine >= coarse[0]) & (fine <= coarse[-1])]])
        for hk in np.unique(np.concatenate([grid, [fit.h[k]]])):
            h = fit.h.copy()
            h[k] = hk
            x, chi2, xse = _linear(np.hstack([_design(h, lr, momentum, lags, False), tail]), D, se)
            if chi2 <= fit.chi2 + PROFILE_DCHI2:
                keep.append(hk)
                # the mass at this h, ± 2 s.e. of the linear refit: the profile over h alone would miss the spread
                # of s at fixed h
                masses += [x[k] - 2 * np.nan_to_num(xse[k]), x[k] + 2 * np.nan_to_num(xse[k])]
                alts.append((h, x[:J], float(x[J]) if drift else 0.0))
        rng[k] = (min(keep), max(keep)) if keep else (fit.h[k], fit.h[k])
        srng[k] = (max(min(masses), 0.0), max(masses)) if masses else (fit.s[k], fit.s[k])
    fit.h_range, fit.s_range, fit.alternatives = rng, srng, alts


class StructureFunction:
    """D(τ) for any lag τ >= 0: measured values interpolated linearly between measured lags; below the smallest
    lag the fitted shape scaled to the first measured value, beyond the largest the fitted increments added to the
    last measured value (theory.md §3.8a); the fit's drift term c·τ² is part of that shape. Loss units."""

    def __init__(self, ls: LagStructure, fit: SpectrumFit | None, lr: float, momentum: float):
        ok = np.isfinite(ls.D)
        self.lags, self.D = ls.lags[ok].astype(float), ls.D[ok]
        if self.lags.size == 0:
            raise ValueError("no measured lag: D(τ) needs two-point averages at one lag at least")
        self.fit, self.lr, self.momentum = fit, lr, momentum
        self._table = np.zeros(0)

    def basis(self, tau) -> np.ndarray:
        """[len(tau), n_lags]: ∂D(τ)/∂D_i for integer lags ``tau`` (D is linear in the measured values; one unit
        shift of each, tables built once)."""
        tau = np.asarray(tau, int)
        top = int(tau.max()) if tau.size else 0
        if getattr(self, "_basis", None) is None or self._basis.shape[0] <= top:
            grid = np.arange(max(top + 1, 2 * (self._basis.shape[0] if getattr(self, "_basis", None) is not None
                                               else 0)), dtype=float)
            base = self._evaluate(grid)
            self._basis = np.stack([self.shifted(i, 1.0)._evaluate(grid) - base for i in range(self.lags.size)], 1)
        return self._basis[tau]

    def shifted(self, i: int, delta: float) -> "StructureFunction":
        """The same function with the i-th measured value moved by ``delta`` (for the sensitivity of a prediction
        to each measured lag)."""
        out = StructureFunction.__new__(StructureFunction)
        out.lags, out.D = self.lags, self.D.copy()
        out.D[i] += delta
        out.fit, out.lr, out.momentum, out._table = self.fit, self.lr, self.momentum, np.zeros(0)
        return out

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
            model = nqm_structure(self.fit.h, self.fit.s, self.lr, self.momentum, [lo, *tau[below]], self.fit.drift)
            if model[0] > 0:
                out[below] = self.D[0] * model[1:] / model[0]
        if above.any():
            model = nqm_structure(self.fit.h, self.fit.s, self.lr, self.momentum, [hi, *tau[above]], self.fit.drift)
            out[above] = self.D[-1] + model[1:] - model[0]
        return out


# --------------------------------------------------------------------------------------------- averages as weights

def _autocorrelation(w: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A[m], lag m·c) for m >= 1: the weights' autocorrelation A(τ) = Σ_j w_j w_{j+τ} on their grid of spacing c."""
    c = int(j[1] - j[0])
    if np.any(np.diff(j) != c):
        raise ValueError("weights must sit on an evenly spaced grid of steps")
    A = correlate(w, w, mode="full")[w.size - 1:]         # A[m] at lag m·c, m >= 0 (FFT for long windows)
    return A[1:], np.arange(1, A.size) * c


def fluctuation_term(w: np.ndarray, j: np.ndarray, D: StructureFunction) -> float:
    """¼ Σ_jk w_j w_k D(|j − k|) for weights on an arithmetic grid of steps j (spacing c) — through the weights'
    autocorrelation A(τ) = Σ_j w_j w_{j+τ}, so the cost is one correlation, not a double sum."""
    if j.size == 1:
        return 0.0
    A, lags = _autocorrelation(w, j)
    return float(0.25 * 2.0 * np.sum(A * D(lags)))          # ordered pairs: each |j − k| = m·c twice


def fluctuation_sensitivity(w: np.ndarray, j: np.ndarray, D: StructureFunction) -> np.ndarray:
    """∂(fluctuation term)/∂D_i for each measured lag i: the term is linear in the measured values (interpolation
    between them, the fitted shape scaled to the first below, the last plus fitted increments above)."""
    if j.size == 1:
        return np.zeros(D.lags.size)
    A, lags = _autocorrelation(w, j)
    return 0.25 * 2.0 * (A @ D.basis(lags))


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
    fluct_sens: np.ndarray | None = None    # [steps, lags]: ∂fluct/∂D_i (compare.pairs.fluctuation_sensitivity)


def smoothed(values: np.ndarray, half_width: int = SMOOTH_POINTS) -> np.ndarray:
    """Moving mean over ±``half_width`` neighbouring entries (fewer at the ends)."""
    v = np.asarray(values, float)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo, hi = np.maximum(i - half_width, 0), np.minimum(i + half_width + 1, v.size)
    return (c[hi] - c[lo]) / (hi - lo)


def gain_series(run, avg: spec.Averaging, D: StructureFunction, window: tuple[int, int],
                split: str = "test", stationary_window: tuple[int, int] | None = None) -> GainSeries:
    """Observed and predicted gain of the run's average ``avg`` (its series named by theory.spec.variant_name) over
    the raw iterate at the run's evaluation steps in ``window`` where both losses were evaluated (theory.md §3.8a):

        gain(t) = [L_t − Σ_j w_j L̄_j]  +  ¼ Σ_jk w_j w_k D(|j − k|)  +  ½[Σ_j w_j b_j − (Σ_j w_j √b_j)²] − Σ_j w_j² e_j
                   drift                  fluctuation (stationary D)     transient: pairs outside stationarity

    L̄ is the raw loss smoothed over ±SMOOTH_POINTS evaluation steps (interpolated linearly between them), e_j = L_j −
    L̄_j the iterate's own excursion, b_j = max(L̄_j − L_stat, 0) the excess of the smoothed loss before the window
    over its window mean L_stat (0 inside the window, which is stationary by assumption). The stationary D misses
    what a pair involving a non-stationary iterate adds to D_jk: a mean path decaying along one direction adds
    2(√b_j − √b_k)² (coherent), an iterate's own excursion adds 2(e_j + e_k) (independent); summed with the weights
    these give the transient term. Without it (``plain``) an EMA whose memory reaches back before the window is
    predicted to lose what its early iterates cost, with nothing for how far they sat from the later ones.
    ``stationary_window`` (default ``window``): where iterates count as stationary (b_j = 0, L_stat its mean loss);
    a prediction over one half of a calibration window passes the whole window here."""
    tr = run.trajectory
    st = np.asarray(tr["eval/step"])
    raw = np.asarray(tr[f"eval/{split}_loss_raw"], float)
    key = f"eval/{split}_loss_{spec.variant_name(avg)}"
    l_avg = np.asarray(tr[key], float) if key in tr else np.full(st.size, np.nan)
    ok_raw = np.isfinite(raw)
    s_raw, l_raw = st[ok_raw], raw[ok_raw]
    l_smooth = smoothed(l_raw)
    stat = window if stationary_window is None else stationary_window
    in_window = (s_raw >= stat[0]) & (s_raw <= stat[1])
    l_stat = float(l_raw[in_window].mean()) if in_window.any() else float("nan")
    sel = np.flatnonzero((st >= window[0]) & (st <= window[1]) & ok_raw & np.isfinite(l_avg))
    rows, sens = [], []
    for i in sel:
        t = int(st[i])
        try:
            j, w = avg.weights(t)           # theory.spec: the weights empirical/averaging.py builds
        except ValueError:
            continue
        if j[0] < s_raw[0]:
            continue
        l_j, lbar_j = np.interp(j, s_raw, l_raw), np.interp(j, s_raw, l_smooth)
        b = np.where(j < stat[0], np.maximum(lbar_j - l_stat, 0.0), 0.0)
        drift = raw[i] - float(np.sum(w * lbar_j))
        transient = (0.5 * (float(np.sum(w * b)) - float(np.sum(w * np.sqrt(b))) ** 2)
                     - float(np.sum(w * w * (l_j - lbar_j))))
        fl = fluctuation_term(w, j, D)
        sens.append(fluctuation_sensitivity(w, j, D))
        plain = raw[i] - float(np.sum(w * l_j)) + fl
        rows.append((t, raw[i] - l_avg[i], drift + fl + transient, drift, fl, transient, plain))
    arr = np.array(rows, float).reshape(-1, 7)
    return GainSeries(arr[:, 0].astype(int), *(arr[:, k] for k in range(1, 7)),
                      np.array(sens, float).reshape(-1, D.lags.size))


@dataclass
class GainPrediction:
    """One (run, variant) cell: the window-mean gain predicted by the identity and its s.e., the observed one and
    its block s.e., and the series behind them (loss units)."""

    series: GainSeries
    pred: float
    pred_se: float
    obs: float
    obs_se: float


def predict_gain(run, avg: spec.Averaging, ls: LagStructure, fit: SpectrumFit | None, lr: float, momentum: float,
                 window: tuple[int, int], split: str = "test",
                 stationary_window: tuple[int, int] | None = None) -> GainPrediction | None:
    """The identity's window-mean gain of ``avg`` over the raw iterate (:func:`gain_series`) with its own s.e.: the
    measured D(τ)'s uncertainty carried through the fluctuation term (linear in the measured values:
    :func:`fluctuation_sensitivity`; covariance across lags from :meth:`LagStructure.cov`)
    and the block s.e. of the drift and transient terms, which are window means of measured losses. None where the
    variant has no evaluation in the window."""
    D = StructureFunction(ls, fit, lr, momentum)
    g = gain_series(run, avg, D, window, split, stationary_window)
    if g.steps.size == 0:
        return None
    sens = g.fluct_sens.mean(axis=0)
    ok = np.isfinite(ls.D)
    var_d = float(sens @ ls.cov()[np.ix_(ok, ok)] @ sens)
    _, se_rest = block_mean_se(g.pred - g.fluct)
    obs, obs_se = block_mean_se(g.obs)
    return GainPrediction(g, float(np.mean(g.pred)), float(np.sqrt(max(var_d, 0.0) + np.nan_to_num(se_rest) ** 2)),
                          obs, obs_se)
