"""Calibrate the noisy-quadratic model on the RAW trajectory of one setup (theory.md §2.1, §2.6, §3.1, §3.8a).

Nothing averaged that is being predicted is read here: no EMA, SWA or N-point curve.

Default source, ``two-point``: the structure function D(τ) of the raw trajectory, measured from the run's two-point
averages of raw iterates at a grid of lags (compare/pairs.py), and an NQM spectrum of J scales fitted to it. D(τ)
weights each direction by h·v (its share of the excess loss ½Σhv) over the trajectory's own time scales, so the flat,
slow directions that carry the averaging gain are seen. The fitted (h_j, s_j) feed every equivalent-LR quantity
(λ_eq, the EMA-switch and SWA-cooldown branches) and the model curves.

Fallback source, ``probe`` (runs without a lag grid): the one-step-probe moments below. They stay computed whenever
probes were recorded, for the probe claims (theory.md §3.1), which is all they are used for otherwise.

One-step probes: J curvature scales h_j (1/LR units) carrying noise mass s_j = Σσ_k² (param²);
v_j = iterate_variance(λh_j, s_j, μ) (heavy-ball, theory.md §2.6). Expected one-step gains at probe LR η
(theory.md §3.1, derived per direction from ℓ_B = ½h(x − ε_B)², step x − ηh(x − ε_B)):

    held-out:  E[L(θ) − L(θ − η g_B)]     = S η − C η²,       S = Σ h²v     (roots 0 and S/C ≈ λ_eff = λ/(1−μ))
    training:  E[ℓ_B(θ) − ℓ_B(θ − η g_B)] = (S + G) η − C η²,  G = Σ h²s = tr(H²Σ),  C = ½ Σ h³ (v + s)

so the training-batch optimum is η* = (S + G)/(2C) (= 1/h₀ for one scale, the M3 statement). The gains are
fitted per probe row by least squares through the origin; (S, G, C) and their standard errors are the row mean and
its s.e.; (h_j, s_j) are then a weighted least-squares fit of the three moments (plus top_eig ≈ max h_j when J ≥ 2).
Held-out fits use η ≤ HELDOUT_ETA_MAX·λ_eff; training fits use the η where the batch loss is below its η = 0 value
(for an exact parabola that is [0, 2η*]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from compare import metrics, pairs
from compare.load import RECORDINGS, Setup, constant_phase
from theory import stationary

HELDOUT_ETA_MAX = 4.0      # × λ_eff: beyond a few λ_eff a real network's held-out curve leaves the quadratic regime
# Quadratic range of a probe row: η up to the last grid point before the training-batch gain first falls below
# −QUADRATIC_RANGE × its maximum. An exact parabola g = 4g*·x(1 − x) (x = η/2η*) reaches −4g* only at η ≈ 3.2 η*;
# past that a real network's step overshoots and the loss explodes (mnist: −2.7 at 10 η*, −6e2 at 100 η*, where
# the best gain is 0.01), and fitting those points made the held-out moments ±1e8 (docs/results.md, mnist).
QUADRATIC_RANGE = 4.0
STATIONARY_FROM = 0.5      # the quasi-stationary window is the last half of the constant-LR phase (theory.md §2.7.3)
MIN_REL_SE = 0.02          # floor on each moment's relative s.e. so one noiseless moment cannot dominate the fit


@dataclass
class ProbeMoments:
    """Row-averaged one-step fits in the window (all in loss units per LR unit powers)."""

    S: tuple[float, float]           # (value, s.e.) Σh²v: held-out linear gain coefficient
    G: tuple[float, float]           # Σh²σ²: training minus held-out linear coefficient
    C: tuple[float, float]           # ½Σh³(v+σ²): minus the quadratic coefficient (both curves)
    eta_star: tuple[float, float]    # training-batch optimum (S+G)/(2C), LR units
    root: tuple[float, float]        # held-out second root S/C, LR units
    r2_train: np.ndarray             # per-row R² of the recorded quadratic fits (probe/fit_r2)
    r2_heldout: np.ndarray
    taylor_curv: tuple[float, float]  # gᵀHg/‖g‖²: Rayleigh curvature along g_B (= 1/η* for an exact quadratic)
    min_ratio: np.ndarray            # per row: min_η ℓ_B(θ − ηg_B) / mean training loss at that step
    n_rows: int


@dataclass
class Calibration:
    lr: float
    momentum: float
    lam_eff: float                   # λ/(1−μ), LR units
    h: np.ndarray                    # fitted curvature scales, 1/LR units
    s: np.ndarray                    # fitted noise mass per scale, param²
    cov: np.ndarray                  # covariance of (log h, log s), fit s.e.
    seed_h: np.ndarray               # per-seed fits [n_seeds, J] (seed spread)
    seed_s: np.ndarray
    probes: ProbeMoments | None      # one-step-probe moments (probe claims), None without probe rows
    top_eig: tuple[float, float]
    window: tuple[int, int]          # quasi-stationary window [t_stat, T_end] in steps
    raw_excess: float                # predicted stationary excess ½Σh v, loss units
    floor: float                     # L_floor = observed raw window loss − raw_excess (the "model" floor)
    floor_se: float
    split: str
    residuals: dict = field(default_factory=dict)
    source: str = "probe"            # "two-point" (D(τ) of the raw trajectory) or "probe" (one-step probes)
    structure: "pairs.LagStructure | None" = None          # pooled measured D(τ)
    seed_structures: list = field(default_factory=list)    # per base run (same order as setup.base)
    seed_fits: list = field(default_factory=list)          # per base run: pairs.SpectrumFit or None
    fit: "pairs.SpectrumFit | None" = None                 # the pooled D(τ) fit: drift, bounds, ranges, identified

    @property
    def alpha_eff(self) -> np.ndarray:
        return self.lam_eff * self.h

    def params(self) -> np.ndarray:
        return np.concatenate([np.log(self.h), np.log(self.s)])


def window(setup: Setup, frac: float = STATIONARY_FROM) -> tuple[int, int]:
    a, b = constant_phase(setup.base[0])
    return int(a + frac * (b - a)), b


def _quadratic_range(gain: np.ndarray) -> np.ndarray:
    """Mask of the probe LRs (ascending) before the training-batch gain first drops below −QUADRATIC_RANGE × its
    maximum (or turns non-finite): the range where ℓ_B(θ − ηg_B) can still be the parabola of theory.md §3.1."""
    g = np.asarray(gain, float)
    top = np.nanmax(np.where(np.isfinite(g), g, -np.inf)) if np.isfinite(g).any() else 0.0
    bad = ~np.isfinite(g) | (g < -QUADRATIC_RANGE * max(top, 0.0))
    stop = int(np.argmax(bad)) if bad.any() else g.size
    return np.arange(g.size) < stop


def _rows(runs, lo: int, hi: int, lam_eff: float) -> ProbeMoments:
    S, G, C, tay, ratio, r2t, r2h = [], [], [], [], [], [], []
    for r in runs:
        tr = r.trajectory
        if "probe/step" not in tr:
            continue
        st = tr["probe/step"]
        ev_s, ev_l = tr["eval/step"], tr["eval/train_loss_raw"] if "eval/train_loss_raw" in tr else None
        for i in np.flatnonzero((st >= lo) & (st <= hi)):
            eta = np.asarray(tr["probe/eta"][i], float)
            gt = tr["probe/loss0_train"][i] - tr["probe/loss_train"][i]
            gh = tr["probe/loss0_heldout"][i] - tr["probe/loss_heldout"][i]
            quad = _quadratic_range(gt)
            kt = quad & np.isfinite(gt) & (gt >= 0)
            kh = quad & np.isfinite(gh) & (eta <= HELDOUT_ETA_MAX * lam_eff)
            try:
                (bt1, bt2), _ = metrics.polyfit_origin(eta[kt], gt[kt])
                (bh1, bh2), _ = metrics.polyfit_origin(eta[kh], gh[kh])
            except (ValueError, np.linalg.LinAlgError):
                continue
            S.append(bh1)
            G.append(bt1 - bh1)
            C.append(-(bt2 + bh2) / 2)
            if "probe/gHg" in tr and "probe/grad_sq" in tr:
                tay.append(tr["probe/gHg"][i] / tr["probe/grad_sq"][i])
            if "probe/fit_r2" in tr:
                r2t.append(tr["probe/fit_r2"][i])
            if "probe/fit_r2_heldout" in tr:
                r2h.append(tr["probe/fit_r2_heldout"][i])
            if ev_l is not None:
                ref = np.interp(st[i], ev_s, ev_l)
                ratio.append(np.nanmin(tr["probe/loss_train"][i]) / ref)
    if len(S) < 2:
        raise ValueError(f"fewer than 2 usable one-step probe rows in steps [{lo}, {hi}]; "
                         f"record {RECORDINGS['probes']} during the constant-LR phase")
    mS, mG, mC = (metrics.mean_se(x) for x in (S, G, C))
    es = (mS[0] + mG[0]) / (2 * mC[0])
    es_se = es * np.sqrt((np.hypot(mS[1], mG[1]) / (mS[0] + mG[0])) ** 2 + (mC[1] / mC[0]) ** 2)
    root = mS[0] / mC[0]
    root_se = abs(root) * np.sqrt((mS[1] / mS[0]) ** 2 + (mC[1] / mC[0]) ** 2)
    return ProbeMoments(mS[:2], mG[:2], mC[:2], (es, es_se), (root, root_se), np.asarray(r2t), np.asarray(r2h),
                        metrics.mean_se(tay)[:2], np.asarray(ratio), len(S))


def _moments(logp: np.ndarray, lr: float, mu: float) -> np.ndarray:
    J = logp.size // 2
    h, s = np.exp(logp[:J]), np.exp(logp[J:])
    v = stationary.iterate_variance(lr * h, s, mu)
    # the last entry is the Rayleigh curvature gᵀHg/‖g‖² along g_B = the noise-weighted mean curvature Σh³s/Σh²s
    return np.array([np.sum(h ** 2 * v), np.sum(h ** 2 * s), 0.5 * np.sum(h ** 3 * (v + s)), np.max(h),
                     np.sum(h ** 3 * s) / np.sum(h ** 2 * s)])


def fit_scales(pm: ProbeMoments, lr: float, mu: float, J: int = 1, top_eig=None):
    """Weighted least squares of (S, G, C[, top_eig]) for J scales. Returns (log-params, cov, residuals)."""
    obs = np.array([pm.S[0], pm.G[0], pm.C[0], np.nan if top_eig is None else top_eig[0], pm.taylor_curv[0]])
    se = np.array([pm.S[1], pm.G[1], pm.C[1], np.nan if top_eig is None else top_eig[1], pm.taylor_curv[1]])
    use = np.array([True, True, True, J >= 2 and top_eig is not None and np.isfinite(obs[3]), False])
    se = np.maximum(np.nan_to_num(se, nan=0.0), MIN_REL_SE * np.abs(obs))
    excluded = []
    names = ("S", "G", "C")
    bad = [i for i in range(3) if not obs[i] > 0]
    if J == 1 and len(bad) == 1:
        # One moment non-positive. S ≤ 0: the held-out batch is a TEST batch, and with a generalisation gap a step on
        # a training batch can raise the test loss at every η. G ≤ 0: the training batch gains no more than the
        # test batch (an interpolating network has nothing batch-specific left to fit). Neither is possible in the
        # NQM; the other two moments still fix (h, s) for one scale, and the dropped one becomes a prediction.
        use[bad[0]] = False
        if bad[0] == 1 and np.isfinite(obs[4]) and obs[4] > 0:
            # S and C fix only h³s and S/C ≈ λ_eff, not h: take the curvature from the probes' Taylor term instead
            use[4] = True
        why = {0: "held-out test batch shows a generalisation gap", 1: "no batch-specific gain left to fit",
               2: "the probes see no curvature"}[bad[0]]
        excluded.append(f"{names[bad[0]]}={obs[bad[0]]:.3g}≤0 ({why})")
    elif bad:
        raise ValueError(f"one-step probe moments must be positive (S={obs[0]:.3g}, G={obs[1]:.3g}, C={obs[2]:.3g}); "
                         "the constant-LR phase may be too short to be quasi-stationary")
    if not obs[2] > 0:
        raise ValueError(f"one-step probe curvature moment C={obs[2]:.3g} must be positive")
    h0 = (obs[4] if use[4] else                               # 1/η*: the one-scale (M3) curvature
          2 * obs[2] / max(max(obs[0], 0.0) + max(obs[1], 0.0), 1e-300))
    h_init = h0 * np.logspace(0.5 * (J - 1), -0.5 * (J - 1), J) if J > 1 else np.array([h0])
    s_init = np.full(J, (obs[1] if obs[1] > 0 else obs[0]) / (J * h0 ** 2))
    lam_max = stationary.max_stable_alpha(mu) / lr          # keep every α inside the stability region
    p0 = np.log(np.concatenate([np.minimum(h_init, 0.9 * lam_max), s_init]))
    res_fn = lambda p: ((_moments(p, lr, mu) - obs) / se)[use]   # noqa: E731
    fit = least_squares(res_fn, p0, bounds=(np.full(2 * J, -50.0),
                                            np.concatenate([np.full(J, np.log(0.999 * lam_max)), np.full(J, 50.0)])))
    jac = fit.jac
    dof = int(use.sum()) - 2 * J
    chi2 = float(np.sum(fit.fun ** 2))
    try:
        cov = np.linalg.inv(jac.T @ jac) * (max(chi2 / dof, 1.0) if dof > 0 else 1.0)
    except np.linalg.LinAlgError:
        cov = np.full((2 * J, 2 * J), np.nan)
    return fit.x, cov, {"chi2": chi2, "dof": dof, "normalised_residuals": fit.fun.tolist(), "excluded": excluded}


def calibrate(setup: Setup, scales: int | None = None, split: str = "test",
              frac: float = STATIONARY_FROM, window_steps: tuple[int, int] | None = None) -> Calibration:
    """Fit the NQM to the raw trajectory of ``setup`` (pooled seeds; per-seed fits give the seed spread): on D(τ)
    from two-point averages when the runs recorded a lag grid, else on the one-step probes (module docstring).
    ``scales`` J: for D(τ) by default the fewest scales, up to 2, that the data ask for (pairs.select_fit), each fit
    with its drift term; 1 for the probes (three moments). ``window_steps`` overrides the window (steps)."""
    cfg = setup.config
    if "momentum" in cfg and cfg["momentum"] is None:   # the library records momentum null for a non-SGD optimiser
        raise ValueError(f"optimiser {cfg.get('optimizer', 'unknown')} ({cfg.get('optimizer_assumption', '')}) is not "
                         f"heavy-ball SGD, which the NQM assumes: no calibration or prediction is made for it; train "
                         f"with torch.optim.SGD to compare")
    try:
        lr, mu = float(cfg["lr"]), float(cfg.get("momentum", 0.0))
    except (KeyError, TypeError, ValueError):
        raise ValueError("config.json 'config' needs a numeric 'lr' (and 'momentum'); re-create the run") from None
    lam_eff = lr / (1 - mu)
    lo, hi = window(setup, frac) if window_steps is None else (int(window_steps[0]), int(window_steps[1]))
    try:
        pm = _rows(setup.base, lo, hi, lam_eff)
    except ValueError as e:
        pm, probe_error = None, str(e)
    _, eig = _stack_mean(setup, "curv/top_eig", lo, hi)
    top = metrics.mean_se(eig) if eig.size else None
    structs = [pairs.structure(r, (lo, hi), split) for r in setup.base]
    pooled = pairs.pool(structs)
    seeds_h, seeds_s, seed_fits, fit = [], [], [], None
    if int(np.isfinite(pooled.D).sum()) >= 2 * (scales or 1) + 1 and np.any(pooled.D > 0):
        source = "two-point"
        # J scales as asked, else the fewest (up to 2) that the pooled D(τ) asks for (pairs.select_fit)
        fit = pairs.fit_spectrum(pooled, lr, mu, scales) if scales else pairs.select_fit(pooled, lr, mu, 2)
        scales = fit.h.size
        logp, cov = fit.params(), fit.cov[:2 * scales, :2 * scales]
        resid = {"chi2": fit.chi2, "dof": fit.dof, "excluded": [], "lags": pooled.lags.tolist(),
                 "dropped_lags": [list(d) for d in pooled.dropped]}
        for st in structs:
            try:
                f = pairs.fit_spectrum(st, lr, mu, scales)
            except ValueError:
                f = None
            seed_fits.append(f)
            if f is not None:
                seeds_h.append(f.h)
                seeds_s.append(f.s)
    else:
        if pm is None:
            raise ValueError(f"cannot calibrate: no two-point lag grid (record {RECORDINGS['lag grid']}) and "
                             f"{probe_error}")
        source, scales = "probe", scales or 1
        logp, cov, resid = fit_scales(pm, lr, mu, scales, top)
        for r in setup.base:
            try:
                p, _, _ = fit_scales(_rows([r], lo, hi, lam_eff), lr, mu, scales, top)
            except ValueError:
                continue
            seeds_h.append(np.exp(p[:scales]))
            seeds_s.append(np.exp(p[scales:]))
    h, s = np.exp(logp[:scales]), np.exp(logp[scales:])
    raw_ex = float(0.5 * np.sum(h * stationary.iterate_variance(lr * h, s, mu)))
    obs_raw, _ = _stack_mean(setup, f"eval/{split}_loss_raw", lo, hi)
    seed_means = np.array([np.nanmean(x) for x in obs_raw]) if obs_raw.size else np.array([np.nan])
    m, se, n = metrics.mean_se(seed_means)
    if n == 1:   # one seed: the block s.e. of the window mean
        m, se = pairs.block_mean_se(obs_raw[0])
    grad = _num_grad(lambda p: 0.5 * np.sum(np.exp(p[:scales]) * stationary.iterate_variance(
        lr * np.exp(p[:scales]), np.exp(p[scales:]), mu)), logp)
    ex_se = float(np.sqrt(max(grad @ np.nan_to_num(cov) @ grad, 0.0)))
    if fit is not None and fit.alternatives:
        # a D(τ) fit: the spread of the raw excess over the parameter sets the data allow (Δχ² ≤ 4 ≈ ±2 s.e.); the
        # covariance says nothing useful where the fit has no degrees of freedom left
        ex = [0.5 * np.sum(h_ * stationary.iterate_variance(lr * h_, s_, mu)) for h_, s_, _ in fit.alternatives]
        ex_se = float((max(ex + [raw_ex]) - min(ex + [raw_ex])) / 4.0)
    return Calibration(lr, mu, lam_eff, h, s, cov, np.array(seeds_h), np.array(seeds_s), pm, top or (np.nan, np.nan),
                       (lo, hi), raw_ex, m - raw_ex, float(np.hypot(se if np.isfinite(se) else 0.0, ex_se)), split,
                       resid, source, pooled if source == "two-point" else None, structs, seed_fits, fit)


def _stack_mean(setup: Setup, key: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed rows of a 1-D series restricted to [lo, hi] (list of arrays as an object-free 2-D NaN-padded array)."""
    rows = []
    for r in setup.base:
        tr = r.trajectory
        if key not in tr:
            continue
        st = tr[key.split("/", 1)[0] + "/step"]
        rows.append(np.asarray(tr[key], float)[(st >= lo) & (st <= hi)])
    if not rows:
        return np.empty((0, 0)), np.empty(0)
    n = max(len(x) for x in rows)
    mat = np.full((len(rows), n), np.nan)
    for i, x in enumerate(rows):
        mat[i, :len(x)] = x
    return mat, mat[np.isfinite(mat)]


def _num_grad(f, p: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    g = np.zeros_like(p)
    for i in range(p.size):
        d = np.zeros_like(p)
        d[i] = eps
        g[i] = (f(p + d) - f(p - d)) / (2 * eps)
    return g
