"""The data of every figure, prepared from analyses of run directories and from theory/ closed forms (theory.md §7.2).

Each function returns plain dicts of numbers and arrays (documented in the figure module that draws it,
figures/<name>.py) or None when the runs do not allow the figure; :data:`FIGURES` is the one registry of figures
(name → data function and what it is called with) and :func:`figure_data` gathers them for a list of analyses
(compare.analysis.analyse, one per setup). Nothing here draws: figures/<name>.py holds ``plot(data) -> Figure`` and
``python -m figures.build`` calls both, so compare never imports figures (the package order is
common ← theory ← compare ← figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from common import prediction
from compare import branch_prediction, pairs, predict
from compare.load import stack
from theory import moments, probes, spec, stationary

__all__ = ["FIGURES", "FigureSpec", "NAMES", "theory_grid", "probe_data", "bank_data", "equivalence_data",
           "two_point_data", "ellipsoid_data", "alignment_data", "structure_data", "figure_data"]

ELLIPSE_SEED = 0            # fixed seed of the stationary-iterate samples of the ellipsoid (figure is deterministic)


def theory_grid() -> dict:
    """Data of nqm_equivalence_grid from theory.stationary closed forms (theory.md §3.3-§3.5, §2.6)."""
    alpha = 0.05
    ratio = np.logspace(-3, np.log10(0.99 / alpha), 60)     # β = ratio·α < 1
    beta = ratio * alpha
    var = np.array([float(stationary.ema_variance(alpha, float(1 - b), 1.0, 0.0)) for b in beta])
    exact = stationary.equivalent_alpha(var, 1.0, 0.0) / alpha
    # §3.3's harmonic rule at μ = 0 (its one definition), as α_eq/α
    harmonic = np.array([float(stationary.harmonic_equivalent_lr(alpha, float(1 - b))) for b in beta]) / alpha
    n = np.unique(np.logspace(0, 3.5, 40).astype(int))
    v_swa = np.array([float(stationary.swa_variance(alpha, int(k), 1.0, 0.0)) for k in n])
    model = spec.NQM(h=[1.0], sigma2=1.0, v0=float(stationary.iterate_variance(alpha, 1.0, 0.0)))
    sched = spec.Hyperbolic(lr=alpha, start=0, tau=1.0 / alpha)
    v_hyp = moments.moments(model, spec.SGD(sched), spec.NoAverage(), n).var_x[:, 0]
    k = np.unique(np.logspace(0, 3, 40).astype(int))
    v_tp = np.array([float(stationary.two_point_variance(alpha, int(g), 1.0, 0.0)) for g in k])
    v_tp = v_tp / float(stationary.iterate_variance(alpha, 1.0, 0.0))
    mu = 0.9
    a_eff = np.logspace(-3, 0, 40)
    hb = stationary.iterate_variance(a_eff * (1 - mu), 1.0, mu)
    plain = stationary.iterate_variance(a_eff, 1.0, 0.0)
    return {"ema": {"ratio": ratio, "exact": exact, "harmonic": harmonic, "alpha": alpha},
            "swa": {"n": n, "var_swa": v_swa, "var_hyperbolic": v_hyp, "alpha": alpha},
            "two_point": {"k": k, "var_ratio": v_tp, "alpha": alpha},
            "momentum": {"alpha_eff": a_eff, "heavy_ball": hb, "plain": plain, "mu": mu}}


def probe_data(a) -> dict | None:
    """Probe rows in the window, the parabolas of the fitted probe moments, and the calibrated spectrum's prediction.
    None (no figure) without probe rows or without probe moments (a.cal.probes is None)."""
    r = a.setup.base[0]
    tr = r.trajectory
    pm = a.cal.probes
    if "probe/step" not in tr or pm is None:
        return None
    st = tr["probe/step"]
    lo, hi = a.cal.window
    idx = np.flatnonzero((st >= lo) & (st <= hi))
    pick = idx[np.linspace(0, idx.size - 1, min(3, idx.size)).astype(int)] if idx.size else []
    model = spec.NQM(h=a.cal.h, sigma2=a.cal.s)
    rows = []
    for i in pick:
        eta = np.asarray(tr["probe/eta"][i], float)
        row = {"step": int(st[i]), "eta": eta, "loss_train": tr["probe/loss_train"][i],
               "loss_heldout": tr["probe/loss_heldout"][i], "loss0_train": float(tr["probe/loss0_train"][i]),
               "loss0_heldout": float(tr["probe/loss0_heldout"][i])}
        ok = eta[np.isfinite(eta) & (eta > 0)]
        row["eta_line"] = np.logspace(np.log10(ok.min()), np.log10(ok.max()), 200) if ok.size else eta
        # theory.md §3.1 at the fitted spectrum, on a fine η grid
        pr = probes.stationary_probe(model, a.cal.lr, row["eta_line"], a.cal.momentum)
        if not pr.diverged:
            row["pred_train"] = row["loss0_train"] - pr.batch_gain
            row["pred_heldout"] = row["loss0_heldout"] - pr.heldout_gain
        rows.append(row)
    r2 = {"step": st, "train": tr["probe/fit_r2"] if "probe/fit_r2" in tr else np.full(st.size, np.nan),
          "heldout": tr["probe/fit_r2_heldout"] if "probe/fit_r2_heldout" in tr else []}
    return {"lam_eff": a.cal.lam_eff, "n": 1, "rows": rows, "source": a.cal.source,
            "theory": {"S": pm.S[0], "G": pm.G[0], "C": pm.C[0]}, "r2": r2}


def bank_data(a) -> dict | None:
    """Every (seed, bank batch) curve ℓ_B(θ_t) − mean held-out bank loss at t, aligned on x = t − s (s the step that
    trained on B) and averaged at each x recorded by at least half as many curves as the best-covered x; the
    predicted dip and recovery (theory.probes.fixed_batch_loss: seen − unseen, calibrated spectrum, the run's λ, μ,
    bank fraction), anchored at the mean pre-use level (the NQM has no train/test gap, so the offset of training
    batches from the held-out ones before use is not a prediction)."""
    curves, runs, every = [], 0, []
    for r in a.setup.base:
        tr = r.trajectory
        if "bank/step" not in tr or "static/bank_used_at" not in tr or "bank/train_loss" not in tr:
            continue
        st = np.asarray(tr["bank/step"], np.int64)
        loss = np.asarray(tr["bank/train_loss"], float).reshape(st.size, -1)
        held = (np.nanmean(np.asarray(tr["bank/heldout_loss"], float).reshape(st.size, -1), axis=1)
                if "bank/heldout_loss" in tr else np.zeros(st.size))
        used = [(j, int(u)) for j, u in enumerate(np.atleast_1d(tr["static/bank_used_at"]))
                if u >= 0 and j < loss.shape[1]]          # −1: a batch the run stopped before training on
        curves += [(st - u, loss[:, j] - held) for j, u in used]
        runs += bool(used)
        every += np.diff(st).tolist()
    if not curves:
        return None
    lag = np.unique(np.concatenate([c[0] for c in curves]))
    M = np.full((len(curves), lag.size), np.nan)
    for i, (x, y) in enumerate(curves):
        M[i, np.searchsorted(lag, x)] = y
    count = np.sum(np.isfinite(M), axis=0)
    keep = count >= max(1, int(np.ceil(count.max() / 2)))   # lags reached by half the best-covered lag's curves
    lag, M, count = lag[keep], M[:, keep], count[keep]
    if lag.size == 0:
        return None
    mean = np.nanmean(M, axis=0)
    se = np.full(lag.size, np.nan)         # s.e. over the curves where at least two reach the lag
    two = count > 1
    se[two] = np.nanstd(M[:, two], axis=0, ddof=1) / np.sqrt(count[two])
    pre = mean[lag < 0]
    level = float(np.nanmean(pre)) if np.isfinite(pre).any() else 0.0
    x = np.arange(int(lag.min()), int(lag.max()) + 1)
    u = max(0, -int(x.min()))
    frac = float(a.setup.config.get("bank_fraction", 1.0) or 1.0)
    fb = probes.fixed_batch_loss(spec.NQM(h=a.cal.h, sigma2=a.cal.s),
                                 spec.SGD(spec.Constant(a.cal.lr), momentum=a.cal.momentum), u, u + x, fraction=frac)
    theory = None if fb.diverged else {"lag": x, "rel_loss": level + (fb.loss_seen - fb.loss_unseen), "dip": fb.dip}
    return {"n": runs, "n_curves": len(curves), "lag": lag, "mean": mean, "se": se, "count": count,
            "pre_level": level, "every": int(np.median(every)) if every else 1, "theory": theory,
            "reference": "bank/heldout_loss" in a.setup.base[0].trajectory}


def equivalence_data(a, kinds: tuple[type, ...]) -> dict | None:
    """Raw and the run's averages of ``kinds`` (theory.spec classes, e.g. ``(spec.EMA,)``; observed, NQM), and the
    branch runs that stand in for them from their branch step: observed, and — where the branch recorded a prediction
    made before it ran (compare/branch_prediction.py) — that prediction (its calibration's floor + the predicted
    excess) with its s.e. band; branches without one are drawn with the NQM line of this report's calibration, and
    say so."""
    names = [n for n, avg in a.variants.items() if isinstance(avg, kinds)]
    if not names:
        return None
    curves = [{"name": n, "steps": a.curves[n].steps, "obs": a.curves[n].obs, "pred": a.curves[n].pred}
              for n in ["raw", *names]]
    judged: dict[str, list[dict]] = {}      # one cell per label; a run predicted for several labels has several
    for c in (a.metrics.get("branches_predicted") or {}).get("per_branch", []):
        judged.setdefault(c["run"], []).append(c)
    br = []
    for b in a.branches:
        mine = judged.get(str(b["path"]), [])
        cell = next((c for c in mine if c.get("equivalent_of") in names), mine[0] if mine else None)
        matches = cell.get("equivalent_of") if cell else b.get("matches")
        if matches not in names:
            continue
        c, t0 = b["curve"], int(b["t0"])
        m = c.steps >= t0      # before its branch step a branch run's series are its parent's
        entry = {"label": f"branch λ={b['lr']:.3g} ({b['kind']})", "matches": matches, "t0": t0,
                 "steps": c.steps[m], "obs": np.atleast_2d(c.obs)[:, m], "pred": np.asarray(c.pred)[m],
                 "predicted_before": False}
        if cell:
            doc = prediction.read_prediction(branch_prediction.resolve_path(cell["prediction"], b["path"]))
            st = np.asarray(doc["steps"])
            entry.update({"label": f"{doc['label']} ({doc['schedule'].split(':')[0]})", "pred_steps": st,
                          "pred": doc["calibration"]["floor"] + np.asarray(doc["branch_excess"]),
                          "pred_se": np.asarray(doc["branch_excess_se"]), "predicted_before": True})
        br.append(entry)
    return {"n": len(a.setup.base), "window": a.cal.window, "curves": curves, "branches": br,
            "ylabel": f"eval {a.cal.split} loss"}


def two_point_data(a) -> dict | None:
    """Window-mean eval loss of each two-point average ½(θ_t + θ_{t−k}) per seed against its gap k, the NQM curve
    over a log grid of k at the end of the window (theory.md §3.5), the raw baseline and, if a λ/2 branch matches a
    two-point variant, its settled mean. None without two-point variants."""
    names = sorted([n for n, avg in a.variants.items() if isinstance(avg, spec.TwoPoint)],
                   key=lambda n: a.variants[n].gap)
    if not names:
        return None
    lo, hi = a.cal.window

    def wmean(c):
        m = (c.steps >= lo) & (c.steps <= hi)
        return np.nanmean(c.obs[:, m], axis=1)
    obs = np.column_stack([wmean(a.curves[n]) for n in names])
    gaps = np.array([a.variants[n].gap for n in names])
    kk = np.unique(np.logspace(0, np.log10(max(gaps.max(), 10) * 3), 30).astype(int))
    probe_step = np.array([hi])
    th = [float(predict.variant_excess(a.cal, spec.TwoPoint(int(k)), probe_step)[0]) + a.floor if k <= hi else np.nan
          for k in kk]
    half = [b for b in a.branches if b.get("matches") in names and abs(b.get("lr_ratio", 0) - 0.5) < 0.2]
    half_obs = [b["curve"].obs[0, b["curve"].steps >= b["settle_step"]] for b in half]
    half_obs = [x[np.isfinite(x)] for x in half_obs]
    half_v = float(np.mean([x.mean() for x in half_obs if x.size])) if any(x.size for x in half_obs) else None
    base = float(np.nanmean(wmean(a.curves["raw"])))
    return {"n": len(a.setup.base), "gaps": gaps, "obs": obs, "theory": {"gaps": kk, "loss": np.array(th)},
            "baseline": base, "half_lr": half_v, "ylabel": f"window-mean eval {a.cal.split} loss"}


def ellipsoid_data(a) -> dict:
    """The stationary NQM at the sharpest and flattest calibrated scales: raw iterates (samples), and 1-s.d. ellipses
    of the raw iterate, of the iterate at λ/2 and of each of the run's own averages (its config: EMA decays and start,
    SWA start, two-point lags, N-point) at the end of the window; each axis in units of that scale's √v∞. Right
    panel: the observed ‖θ_avg − θ_raw‖ series."""
    cal = a.cal
    idx = [int(np.argmax(cal.h)), int(np.argmin(cal.h))]
    h, s = cal.h[idx], cal.s[idx]
    model = spec.NQM(h=h, sigma2=s, m0=0.0, v0=0.0)
    B = predict.burn_in_steps(cal)      # compare.predict's burn-in: the model is stationary at λ when the window opens
    t = int(cal.window[1])
    v_raw = stationary.iterate_variance(cal.lr * h, s, cal.momentum)
    averages = {}
    for name, avg in a.variants.items():
        if isinstance(avg, spec.NoAverage) or t < avg.defined_from:
            continue
        m = moments.moments_from_alpha(model, cal.momentum, predict.shifted(avg, B),
                                       [(0, B + t + 1, cal.lr * h)], np.array([B + t]))
        averages[name] = tuple(float(x) for x in np.sqrt(m.var_avg[0] / v_raw))
    half = np.sqrt(stationary.iterate_variance(0.5 * cal.lr * h, s, cal.momentum) / v_raw)
    rng = np.random.default_rng(ELLIPSE_SEED)
    dist = None
    d_names = [k2[len("dist/"):] for k2 in a.setup.base[0].trajectory.series
               if k2.startswith("dist/") and k2 != "dist/step"]
    if d_names:
        ser = {}
        steps = a.setup.base[0].trajectory["dist/step"]
        for nm in sorted(d_names, key=lambda n: list(a.variants).index(n) if n in a.variants else len(a.variants)):
            _, ser[nm] = stack(a.setup.base, f"dist/{nm}", steps)
        dist = {"steps": steps, "series": ser, "n": len(a.setup.base)}
    return {"iterates": rng.standard_normal((400, 2)), "averages": averages, "axes_half": tuple(half.tolist()),
            "scales": [{"h": float(x), "alpha_eff": float(cal.lam_eff * x)} for x in h], "step": t,
            "single_scale": cal.h.size == 1, "dist": dist}


def alignment_data(analyses) -> dict | None:
    """Window-mean cos(g_B, ĝ) per setup at its α_eff = λ_eff Σh³s/Σh²s (calibrated spectrum; per-seed fits give the
    range), the spectrum's own prediction, and the one-scale heavy-ball line cos = √(v∞/(v∞ + σ²)) (≈ √(α_eff/2)
    for small α_eff, theory.md §3.7) over a range that covers every measured α_eff."""
    runs = []
    for a in analyses:
        if "align/cos" not in a.setup.base[0].trajectory:
            continue
        cal = a.cal
        steps, cos = stack(a.setup.base, "align/cos")
        lo, hi = cal.window
        m = (steps >= lo) & (steps <= hi)
        per = np.nanmean(cos[:, m], axis=1)
        ae = lambda h, s: float(np.sum(h ** 3 * s) / np.sum(h ** 2 * s)) * cal.lam_eff   # noqa: E731
        seeds = [ae(np.asarray(h), np.asarray(s)) for h, s in zip(cal.seed_h, cal.seed_s)]
        v = stationary.iterate_variance(cal.lr * cal.h, cal.s, cal.momentum)
        runs.append({"label": f"λ={cal.lr:g}", "steps": steps, "cos": cos, "n": len(a.setup.base),
                     "alpha_eff": ae(cal.h, cal.s), "alpha_eff_seeds": np.array(seeds),
                     "cos_pred": probes.gradient_alignment(spec.NQM(h=cal.h, sigma2=cal.s), np.zeros(cal.h.size), v),
                     "cos_mean": float(np.nanmean(per)),
                     "cos_sd": float(np.nanstd(per, ddof=1)) if per.size > 1 else np.nan})
    if not runs:
        return None
    mu = float(analyses[0].cal.momentum)
    xs = np.concatenate([[r["alpha_eff"], *r["alpha_eff_seeds"]] for r in runs])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    top = 0.999 * stationary.max_stable_alpha(mu) / (1 - mu)
    ae = np.logspace(np.log10(min(xs.min() / 3, 1e-3)), np.log10(min(max(xs.max() * 3, 1.0), top)), 80)
    v1 = stationary.iterate_variance(ae * (1 - mu), 1.0, mu)
    return {"runs": runs, "theory": {"alpha_eff": ae, "cos": np.sqrt(v1 / (v1 + 1.0)), "mu": mu}}


def structure_data(a) -> dict | None:
    """The calibration input: measured D(τ) per base run and pooled (block s.e.), and the fitted D(τ)
    (compare.pairs.nqm_structure at a.cal.h, a.cal.s with the drift term) from τ = 1 to twice the largest lag. None for
    probe source."""
    cal = a.cal
    if cal.structure is None or np.asarray(cal.structure.lags).size == 0:
        return None
    seeds = [{"label": Path(str(r.path)).name, "lags": st.lags, "D": st.D, "se": st.se}
             for r, st in zip(a.setup.base, cal.seed_structures)]
    top = 2 * int(np.max(cal.structure.lags))
    drift = cal.fit.drift if cal.fit is not None else 0.0
    tau = np.unique(np.round(np.logspace(0, np.log10(max(top, 2)), 120)).astype(int))
    return {"n": len(a.setup.base), "seeds": seeds,
            "pooled": {"lags": cal.structure.lags, "D": cal.structure.D, "se": cal.structure.se},
            "model": {"tau": tau, "D": pairs.nqm_structure(cal.h, cal.s, cal.lr, cal.momentum, tau, drift)},
            "fit": {"h": cal.h, "s": cal.s, "alpha_eff": cal.lam_eff * cal.h, "drift": drift}, "window": cal.window,
            "ylabel": f"D(τ), eval {cal.split} loss units"}


@dataclass(frozen=True)
class FigureSpec:
    """How one figure's data is prepared: ``data`` returns the dict figures/<name>.py's ``plot`` draws, or None when
    the runs do not allow the figure. ``per`` says what ``data`` is called with: "theory" nothing (theory/ closed
    forms only; drawn with or without runs, no runs in its provenance), "setup" the first analysis, "all" the list of
    every analysis (one per setup)."""
    data: Callable
    per: str = "setup"

    def __post_init__(self):
        if self.per not in ("theory", "setup", "all"):
            raise ValueError(f"FigureSpec per={self.per!r}: use theory, setup or all")


# The one registry of figures, in drawing order: the name is also the module figures/<name>.py whose plot(data)
# draws it and the stem of the files figures.build writes (<name>.png, <name>.json).
FIGURES: dict[str, FigureSpec] = {
    "nqm_equivalence_grid": FigureSpec(theory_grid, per="theory"),
    "one_step_probe": FigureSpec(probe_data),
    "fixed_batch_along_trajectory": FigureSpec(bank_data),
    "ema_equivalence": FigureSpec(lambda a: equivalence_data(a, (spec.EMA,))),
    "swa_equivalence": FigureSpec(lambda a: equivalence_data(a, (spec.SWA,))),
    "two_point_vs_distance": FigureSpec(two_point_data),
    "ellipsoid": FigureSpec(ellipsoid_data),
    "gradient_alignment": FigureSpec(alignment_data, per="all"),
    "structure_function": FigureSpec(structure_data),
}
NAMES = tuple(FIGURES)      # every figure this module prepares data for, in drawing order


def figure_data(analyses: list) -> dict[str, dict]:
    """{figure name: data} for every figure of :data:`FIGURES` the analyses allow, in its order: the "theory"
    figures always, the others only with at least one analysis (the "setup" ones from the first)."""
    out: dict[str, dict] = {}
    for name, fig in FIGURES.items():
        if fig.per == "theory":
            d = fig.data()
        elif not analyses:
            continue
        else:
            d = fig.data(analyses[0] if fig.per == "setup" else analyses)
        if d is not None:
            out[name] = d
    return out
