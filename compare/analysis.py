"""Calibrate on raw weights, predict every averaged variant and branch, and measure the errors (one setup).

Excess loss needs a floor. Default (``floor="model"``): L_floor = (mean raw loss over the quasi-stationary window)
− (the calibrated model's raw stationary excess), i.e. the floor is itself a raw-only model estimate, so the
predictions never look at an averaged curve. Alternative (``floor="min-avg"``): the lowest window-mean loss of
any averaged variant (an upper bound on the floor, since every excess is ≥ 0). Both are modelling choices; the
floor-free *averaging gain* L_raw − L_avg is reported beside every excess error.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from compare import branch_prediction, checks, metrics, pairs, predict, verdicts
from compare.calibrate import Calibration, calibrate
from compare.load import Setup, branch_start, stack
from compare.verdicts import cell_agrees
from theory import spec
from theory.branchspec import BranchSchedule

PREDICTED_KINDS = (spec.EMA, spec.SWA, spec.NPoint)   # what the two-point identity predicts (two-point ones calibrate)
MATCH_LR_FACTOR = 1.5      # a constant branch "is" a variant's equivalent run if λ_b/λ_eq ∈ [1/1.5, 1.5]
SETTLE_RELAX = 3.0         # skip 3 relaxation times 1/α_eff after a branch point / EMA start before comparing
# A post-hoc average matches its scheduled run if |L_posthoc − L_branch| <= max(POSTHOC_REL_TOL·|L_T − L_branch|,
# POSTHOC_SE·s.e.), L_T the constant-LR iterate at the same step: within 15 % (the per-seed cells' relative tolerance)
# of the effect of the schedule itself, or within 2 s.e. of the difference of two single evaluations.
POSTHOC_REL_TOL = 0.15
POSTHOC_SE = 2.0


@dataclass
class Curve:
    steps: np.ndarray
    obs: np.ndarray            # [n_seeds, T] observed loss
    pred: np.ndarray           # [T] predicted loss (floor + excess), NaN outside the window


@dataclass
class Analysis:
    setup: Setup
    cal: Calibration
    floor_mode: str
    floor: float
    curves: dict[str, Curve] = field(default_factory=dict)
    variants: dict[str, spec.Averaging] = field(default_factory=dict)   # name -> recorded average (Setup.averages)
    branches: list[dict] = field(default_factory=list)
    posthoc: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def _window_mean(c: Curve, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    m = metrics.window_mask(c.steps, lo, hi)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(m, c.obs, np.nan), axis=1), np.nanmean(np.where(m, c.pred, np.nan))


def _variant_metrics(a: Analysis, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # one seed: the s.d. columns are all-NaN, on purpose
        return _variant_metrics_inner(a, name)


def _variant_metrics_inner(a: Analysis, name: str) -> dict:
    c, raw = a.curves[name], a.curves["raw"]
    lo, hi = a.cal.window
    m = metrics.window_mask(c.steps, lo, hi) & np.isfinite(c.pred)
    if not m.any():
        return {"testable": False, "why": "no eval step inside the quasi-stationary window where the variant is defined"}
    obs_mean, obs_sd, n = metrics.seed_band(c.obs)
    ex_obs, ex_pred = obs_mean - a.floor, c.pred - a.floor
    last = np.flatnonzero(m)[-1]
    gain_obs = metrics.seed_band(raw.obs - c.obs)
    gain_pred = raw.pred - c.pred
    gm = m & np.isfinite(gain_pred)
    return {
        "n_seeds": n,
        "final_step": int(c.steps[last]),
        "excess_pred_final": float(ex_pred[last]),
        "excess_obs_final": float(ex_obs[last]), "excess_obs_final_sd": float(obs_sd[last]),
        "rel_err_final": float(metrics.relative_error(ex_pred[last], ex_obs[last])),
        "rel_err_window_mean_abs": metrics.mean_abs_relative_error(ex_pred[m], ex_obs[m]),
        "band_coverage_2sd": metrics.band_coverage(c.pred[m], c.obs[:, m]),
        "gain_obs_window": float(np.nanmean(gain_obs[0][gm])) if gm.any() else float("nan"),
        "gain_obs_window_sd": float(np.nanmean(gain_obs[1][gm])) if gm.any() else float("nan"),
        "gain_pred_window": float(np.nanmean(gain_pred[gm])) if gm.any() else float("nan"),
        "gain_rel_err": (metrics.mean_abs_relative_error(np.nanmean(gain_pred[gm]), np.nanmean(gain_obs[0][gm]))
                         if gm.any() else float("nan")),
        "rmse_loss": metrics.rmse(c.pred[m], obs_mean[m]),
        **_per_seed(a, name),
        "equivalent_lr": predict.equivalent_lr(a.cal, predict.stationary_excess(a.cal, a.variants[name])),
        # over the parameter sets the data allow: one number only where every scale is identified
        "equivalent_lr_range": checks.equivalent_lr_range(a.cal, lambda h, s: predict.stationary_excess(
            dataclasses.replace(a.cal, h=h, s=s), a.variants[name])),
    }


def _per_seed(a: Analysis, name: str) -> dict:
    """Per base run: the identity's predicted window-mean gain (its own D(τ) and raw losses; compare/pairs.py) with
    its s.e., the observed one and its block s.e. ``per_seed`` holds exactly run, gain_pred, gain_pred_se, gain_obs,
    gain_obs_se (scripts read these names); ``per_seed_terms`` the drift / fluctuation / transient split, the plain
    identity and the verdict of each cell under compare.verdicts' rule."""
    avg, cal = a.variants[name], a.cal
    if cal.source != "two-point" or not isinstance(avg, PREDICTED_KINDS):
        return {}
    rows, terms = [], []
    for r, st, fit in zip(a.setup.base, cal.seed_structures, cal.seed_fits):
        if not np.isfinite(st.D).any():
            continue
        gp = pairs.predict_gain(r, avg, st, fit or cal.fit, cal.lr, cal.momentum, cal.window, cal.split)
        if gp is None:
            continue
        g = gp.series
        rows.append({"run": str(r.path), "gain_pred": gp.pred, "gain_pred_se": gp.pred_se, "gain_obs": gp.obs,
                     "gain_obs_se": gp.obs_se})
        plain = float(np.mean(g.plain))
        terms.append({"run": str(r.path), "drift": float(np.mean(g.drift)), "fluctuation": float(np.mean(g.fluct)),
                      "transient": float(np.mean(g.transient)), "gain_pred_plain": plain,
                      "n_steps": int(g.steps.size), "agrees": cell_agrees(gp.pred, gp.pred_se, gp.obs, gp.obs_se),
                      "agrees_plain": cell_agrees(plain, gp.pred_se, gp.obs, gp.obs_se)})
    return {"per_seed": rows, "per_seed_terms": terms} if rows else {}


def model_cells(a: Analysis) -> list[dict]:
    """Every (seed, variant) cell of the identity's predictions, with its variant and drift term (for the nulls)."""
    return [{**c, "variant": name, "drift": t["drift"]} for name, m in a.metrics["variants"].items()
            for c, t in zip(m.get("per_seed", []), m.get("per_seed_terms", []))]


def cross_fit(a: Analysis) -> dict:
    """Calibrate D(τ) on one half of the window and predict the gains over the other half, both ways, per seed
    (lags up to a third of the half). Cells are scored by compare.verdicts' rule with its nulls."""
    cal = a.cal
    if cal.source != "two-point":
        return {}
    lo, hi = cal.window
    mid = (lo + hi) // 2
    names = [n for n, avg in a.variants.items() if isinstance(avg, PREDICTED_KINDS)]
    cells = []
    for fit_w, pred_w in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
        for r in a.setup.base:
            st = pairs.structure(r, fit_w, cal.split)
            if not np.isfinite(st.D).any():
                continue
            try:   # only its extrapolation beyond the measured lags is used here: no profile needed
                fit = pairs.fit_spectrum(st, cal.lr, cal.momentum, cal.h.size, profile=False)
            except ValueError:
                fit = cal.fit
            for name in names:
                gp = pairs.predict_gain(r, a.variants[name], st, fit, cal.lr, cal.momentum, pred_w, cal.split,
                                        stationary_window=cal.window)
                if gp is None:
                    continue
                cells.append({"run": str(r.path), "variant": name, "calibrated_on": list(fit_w),
                              "predicted_on": list(pred_w), "gain_pred": gp.pred, "gain_pred_se": gp.pred_se,
                              "gain_obs": gp.obs, "gain_obs_se": gp.obs_se,
                              "drift": float(np.mean(gp.series.drift))})
    sc = verdicts.score(cells)
    for c, ok in zip(cells, sc.get("agree", [])):
        c["agrees"] = bool(ok)
    return {"cells": cells, **{k: v for k, v in sc.items() if k != "agree"}}


def bn_artefact(a: Analysis) -> list[dict]:
    """Per base run: window mean of L(raw weights, training-time running BN statistics) − L(raw, recomputed BN), the
    difference between the deployed raw weights and the procedure every variant is evaluated with."""
    out = []
    for r in a.setup.base:
        tr = r.trajectory
        key = f"eval/{a.cal.split}_loss_raw_running_bn"
        if key not in tr:
            continue
        st = np.asarray(tr["eval/step"])
        m = metrics.window_mask(st, *a.cal.window)
        d = (np.asarray(tr[key], float) - np.asarray(tr[f"eval/{a.cal.split}_loss_raw"], float))[m]
        mean, se = pairs.block_mean_se(d)
        out.append({"run": str(r.path), "running_minus_recomputed": mean, "se": se})
    return out


def _lr_profile(run) -> tuple[np.ndarray, np.ndarray]:
    tr = run.trajectory
    if "train/lr" in tr:
        return tr["train/step"], np.asarray(tr["train/lr"], float)
    lr = float(run.config.get("config", {}).get("lr"))
    return np.array([branch_start(run)]), np.array([lr])


def _classify(run, t0: int, lam: float) -> dict:
    st, lr = _lr_profile(run)
    after = lr[st >= t0]
    if after.size == 0:
        after = lr
    if np.nanmax(after) <= 1.05 * np.nanmin(after):
        return {"kind": "constant", "lr": float(np.nanmedian(after)), "lr_ratio": float(np.nanmedian(after) / lam)}
    n = (st[st >= t0] - t0).astype(float)
    # 1/λ_n = (1/λ_b)(1 + n/τ): a straight line in n for the hyperbolic (SWA-equivalent) cooldown, theory.md §3.4
    slope, icpt = np.polyfit(n, 1.0 / after, 1)
    return {"kind": "decay", "lr": float(after[0]), "lr_ratio": float(after[0] / lam),
            "tau_fit": float(icpt / slope) if slope > 0 else float("inf"), "lr_final": float(after[-1])}


def _branch(a: Analysis, run) -> dict:
    cal, cfg = a.cal, a.setup.config
    t0 = branch_start(run)
    info = {"path": str(run.path), "seed": run.config.get("config", {}).get("seed"), "t0": t0,
            **_classify(run, t0, cal.lr)}
    split = cal.split
    steps, obs = stack([run], f"eval/{split}_loss_raw")
    ls, lv = _lr_profile(run)
    pred = a.floor + predict.branch_excess(cal, t0, ls, lv, steps)
    info["curve"] = Curve(steps, obs, pred)
    # compare once the branch has relaxed (SETTLE_RELAX times its slowest scale's 1/α_eff), but no later than halfway
    # between the branch point and the end of the parent's constant phase: a spectrum fitted to D(τ) can hold a scale
    # slower than the whole window, and a comparison flagged as unsettled says more than none
    model_settle = t0 + SETTLE_RELAX / max(info["lr"] / (1 - cal.momentum) * float(np.min(cal.h)), 1e-12)
    settle = min(model_settle, 0.5 * (t0 + cal.window[1])) if t0 < cal.window[1] else model_settle
    m = (steps >= settle) & np.isfinite(obs[0])
    info["settle_step"], info["settle_step_model"] = float(settle), float(model_settle)
    info["settled"] = bool(model_settle <= settle)
    if m.any():
        info["rel_err_pred_window_mean_abs"] = metrics.mean_abs_relative_error(pred[m] - a.floor, obs[0, m] - a.floor)
        info["rel_err_pred_final"] = float(metrics.relative_error(pred[m][-1] - a.floor, obs[0, m][-1] - a.floor))
    # which averaged variant this branch is the equivalent run of: by its declared --branch-schedule if it names
    # one (half, ema:GAMMA:H, swa:H), else by the LR closest to a variant's calibrated equivalent LR
    declared = _declared_variant(a, run, t0)
    best = None if declared is None else (0.0, declared[0]) if declared[0] else None
    info["matched_by"] = "branch schedule" if declared is not None else "equivalent LR"
    for name, avg in ([] if declared is not None else a.variants.items()):
        vm = a.metrics["variants"].get(name, {})
        if isinstance(avg, spec.NoAverage) or not vm.get("n_seeds"):
            continue
        if info["kind"] == "decay" and isinstance(avg, spec.SWA):
            if abs(t0 - avg.start) <= max(int(cfg.get("eval_every", 1) or 1), 1):
                best = (0.0, name)
        elif (info["kind"] == "constant" and not isinstance(avg, spec.SWA)
              and np.isfinite(vm.get("equivalent_lr", np.nan))):
            d = abs(np.log(info["lr"] / vm["equivalent_lr"]))
            if d <= np.log(MATCH_LR_FACTOR) and (best is None or d < best[0]):
                best = (d, name)
    info["matches"] = best[1] if best else None
    if best:
        info.update(_avg_vs_branch(a, best[1], run, steps, obs, m, pred))
    return info


def _declared_variant(a: Analysis, run, t0: int) -> tuple[str | None] | None:
    """The variant a branch was built to reproduce, read from its ``branch_schedule`` (empirical.run
    --branch-schedule, as scripts/reproduce.py writes them): ``half`` → the two-point average with the largest gap
    (two points far apart ⇔ λ/2, theory.md §3.5), ``ema:GAMMA:H`` → ema_GAMMA, ``swa:H`` → swa if the branch starts
    at the SWA start. Matching by intent means a poor calibration (an equivalent LR far from the one the branch was
    given) cannot pair a branch with the wrong average. Returns None when the schedule names no variant (constant,
    scale, hyperbolic, or no schedule recorded), (None,) when it names one the runs did not record."""
    text = run.config.get("config", {}).get("branch_schedule")
    try:
        b = BranchSchedule.parse(text) if text else None
    except ValueError:
        return None
    kind = b.kind if b else ""
    have = {n: avg for n, avg in a.variants.items() if a.metrics["variants"].get(n, {}).get("n_seeds")}
    if kind == "half":
        tps = [n for n, avg in have.items() if isinstance(avg, spec.TwoPoint)]
        return (max(tps, key=lambda n: have[n].gap) if tps else None,)
    if kind == "ema":
        g = b.value
        return (next((n for n, avg in have.items()
                      if isinstance(avg, spec.EMA) and np.isclose(avg.decay, g, rtol=1e-9)), None),)
    if kind == "swa":
        if "swa" not in have:
            return (None,)
        on_time = abs(t0 - have["swa"].start) <= max(int(a.setup.config.get("eval_every", 1) or 1), 1)
        return ("swa" if on_time else None,)
    return None


def _avg_vs_branch(a: Analysis, name: str, run, steps, obs, m, pred) -> dict:
    average = a.variants[name]
    seed = run.config.get("config", {}).get("seed")
    parent = [r for r in a.setup.base if r.config.get("config", {}).get("seed") == seed] or a.setup.base
    _, avg = stack(parent[:1], f"eval/{a.cal.split}_loss_{name}", steps)
    _, raw = stack(parent[:1], f"eval/{a.cal.split}_loss_raw", steps)
    settled = None
    end = a.cal.window[1]
    t0 = branch_start(run)
    ema_note = {}
    if isinstance(average, spec.EMA):   # forgets its start after SETTLE_RELAX time constants; capped as for the branch
        settled = average.defined_from + SETTLE_RELAX / (1 - average.decay)
        if t0 < end and settled > 0.5 * (t0 + end):
            ema_note = {"avg_settled": False, "avg_settle_step_model": float(settled)}
            settled = 0.5 * (t0 + end)
        m = m & (steps >= settled)
    # the parent's averages are only comparable while the parent is still in its constant-LR phase
    m = m & np.isfinite(avg[0]) & np.isfinite(raw[0]) & (steps <= end)
    out = {"compare_steps": int(m.sum()), **ema_note}
    if not m.any():   # say why, instead of leaving the reader a row of n/a
        out["not_compared"] = (
            f"{name} settles only at step {settled:.0f} ({SETTLE_RELAX:g} time constants 1/(1−γ) after its start), "
            f"after the parent's constant-LR phase ends at step {end}" if settled is not None and settled > end else
            f"no evaluation step up to the end of the parent's constant-LR phase (step {end}) where the branch has "
            f"settled and the parent's {name} is defined")
        return out
    g_avg, g_br = raw[0, m] - avg[0, m], raw[0, m] - obs[0, m]
    # floor-free check of the branch prediction: parent raw minus branch, predicted vs observed
    g_pred = np.interp(steps[m], a.curves["raw"].steps, a.curves["raw"].pred) - pred[m]
    out.update({
        "avg_minus_branch_mean": float(np.mean(avg[0, m] - obs[0, m])),
        "gain_capture": float(np.mean(g_br) / np.mean(g_avg)) if np.mean(g_avg) != 0 else float("nan"),
        "rel_diff_excess": metrics.mean_abs_relative_error(obs[0, m] - a.floor, avg[0, m] - a.floor),
        "branch_gain_rel_err_pred": metrics.mean_abs_relative_error(np.nanmean(g_pred), np.mean(g_br)),
    })
    out.update(_sketch_distances(parent[0], run, name, branch_start(run), a.cal.window[1]))
    return out


def _sketch_distances(parent, branch, name: str, t0: int, until: int) -> dict:
    """‖θ_branch − θ_parent-average‖ (and ‖θ_branch − θ_parent-raw‖ for scale) at the common evaluation steps in
    [t0, until] (from the branch point to the end of the parent's constant phase; before t0 a branch's series are
    its parent's), from the CountSketch series sketch/* (empirical/sketch.py: one shared S,
    so differences of sketches of two runs estimate distances between them; rel. s.d. ≤ 1/√(2d))."""
    tp, tb = parent.trajectory, branch.trajectory
    if not all(k in t for t, k in ((tp, f"sketch/{name}"), (tp, "sketch/raw"), (tb, "sketch/raw"))):
        return {}
    sp, sb = np.asarray(tp["sketch/step"]), np.asarray(tb["sketch/step"])
    common = np.intersect1d(sp, sb)
    common = common[(common >= t0) & (common <= until)]
    ip, ib = np.searchsorted(sp, common), np.searchsorted(sb, common)
    d_avg = np.linalg.norm(np.asarray(tb["sketch/raw"])[ib] - np.asarray(tp[f"sketch/{name}"])[ip], axis=1)
    d_raw = np.linalg.norm(np.asarray(tb["sketch/raw"])[ib] - np.asarray(tp["sketch/raw"])[ip], axis=1)
    ok = np.isfinite(d_avg)
    if ok.sum() < 2:
        return {}
    return {"path_distance_steps": common[ok].tolist(), "path_distance": d_avg[ok].tolist(),
            "path_distance_to_raw": d_raw[ok].tolist(),
            "path_distance_first": float(d_avg[ok][0]), "path_distance_last": float(d_avg[ok][-1]),
            "path_distance_to_raw_last": float(d_raw[ok][-1])}


def analyse(setup: Setup, scales: int | None = None, split: str = "test", floor: str = "model", frac: float = 0.5) -> Analysis:
    vs = setup.averages(split)      # first: a run without its averaging record is refused before any fitting
    cal = calibrate(setup, scales=scales, split=split, frac=frac)
    if "raw" not in vs:
        raise ValueError(f"runs have no eval/{split}_loss_raw; the raw variant is required (docs/run-series.md)")
    a = Analysis(setup, cal, floor, cal.floor, variants=vs)
    steps0 = setup.base[0].trajectory["eval/step"]
    for name, avg in vs.items():
        steps, obs = stack(setup.base, f"eval/{split}_loss_{name}", steps0)
        a.curves[name] = Curve(steps, obs, predict.variant_excess(cal, avg, steps))
    lo, hi = cal.window
    if floor == "min-avg":
        means = [np.nanmean(_window_mean(c, lo, hi)[0]) for n, c in a.curves.items() if n != "raw"]
        a.floor = float(np.nanmin(means)) if means else cal.floor
    elif floor != "model":
        raise ValueError(f"floor must be 'model' or 'min-avg', got {floor!r}")
    for c in a.curves.values():
        c.pred = c.pred + a.floor
    alt = [np.nanmean(_window_mean(c, lo, hi)[0]) for n, c in a.curves.items() if n != "raw"]
    a.metrics = {"floor": {"mode": floor, "value": a.floor, "model_floor": cal.floor, "model_floor_se": cal.floor_se,
                           "min_avg_floor": float(np.nanmin(alt)) if alt else None},
                 "variants": {}}
    for name in vs:
        a.metrics["variants"][name] = _variant_metrics(a, name)
    a.metrics["bn_artefact"] = bn_artefact(a)
    a.metrics["physical_checks"] = checks.physical_checks(cal)
    a.metrics["identification"] = checks.identification(cal)
    a.metrics["three_way"] = checks.three_way(cal, setup.base, float(setup.config.get("bank_fraction", 1.0) or 1.0))
    cells = model_cells(a)
    a.metrics["model_score"] = verdicts.score(cells)
    a.metrics["null"] = a.metrics["model_score"].get("null", {})
    a.metrics["cross_fit"] = cross_fit(a)
    a.branches = [_branch(a, r) for r in setup.branches]
    a.metrics["branches_predicted"] = branch_prediction.judge(setup, split)
    gaps = [n for n, avg in vs.items()
            if isinstance(avg, spec.TwoPoint) and a.metrics["variants"].get(n, {}).get("n_seeds")]
    if gaps:   # two points far apart: the largest lag, per seed (compare/claims.py judges it)
        a.metrics["two_point_per_seed"] = two_point_per_seed(a, max(gaps, key=lambda n: vs[n].gap))
    a.posthoc = [posthoc_vs_branch(a, r) for r in setup.posthoc]
    return a


def two_point_per_seed(a: Analysis, name: str) -> list[dict]:
    """Per base run: the two-point average ``name`` against the raw weights, loss (raw − average: > 0 is a gain) and
    accuracy (average − raw), as window means over the calibration window (block s.e.) and at the run's last
    evaluation (after the cooldown)."""
    split = a.cal.split
    lo, hi = a.cal.window
    out = []
    for r in a.setup.base:
        st = np.asarray(r.trajectory["eval/step"])
        row = {"run": str(r.path)}
        for what, sign in (("loss", 1.0), ("acc", -1.0)):
            key_raw, key_avg = f"eval/{split}_{what}_raw", f"eval/{split}_{what}_{name}"
            if key_raw not in r.trajectory or key_avg not in r.trajectory:
                row.update({f"{what}_window": float("nan"), f"{what}_window_se": float("nan"),
                            f"{what}_end": float("nan")})
                continue
            d = sign * (np.asarray(r.trajectory[key_raw], float) - np.asarray(r.trajectory[key_avg], float))
            m = (st >= lo) & (st <= hi) & np.isfinite(d)
            row[f"{what}_window"], row[f"{what}_window_se"] = pairs.block_mean_se(d[m])
            fin = np.flatnonzero(np.isfinite(d))
            row[f"{what}_end"] = float(d[fin[-1]]) if fin.size else float("nan")
        out.append(row)
    return out


def _trajectory_noise(steps: np.ndarray, loss: np.ndarray, lo: float, hi: float) -> float:
    """s.d. (loss units) of one evaluation of a run around its own trend: residuals of a straight line through its
    eval points in [lo, hi] (at least 4 points, else NaN). It stands for what another noise realisation would
    change in a single evaluation at the end of that range."""
    m = (steps >= lo) & (steps <= hi) & np.isfinite(loss)
    if m.sum() < 4:
        return float("nan")
    x, y = steps[m].astype(float), loss[m]
    res = y - np.polyval(np.polyfit(x, y, 1), x)
    return float(np.sqrt(np.sum(res ** 2) / (m.sum() - 2)))


def posthoc_vs_branch(a: Analysis, run) -> dict:
    """A post-hoc average of constant-LR checkpoints (empirical.posthoc, theory.md §3.6a) against the branch run of
    the same schedule, seed and branch point, at the step T the average emulates. Everything is one evaluation per
    run at T: L_posthoc, the constant-LR iterate L_T (the posthoc run's ``raw``) and the branch's raw weights."""
    ph = run.config.get("config", {}).get("posthoc", {})
    seed, split, at = run.config.get("config", {}).get("seed"), a.cal.split, int(ph.get("at", -1))
    tr = run.trajectory
    one = lambda key: float(np.asarray(tr[key], float)[0]) if key in tr else float("nan")  # noqa: E731
    w = np.asarray(ph.get("weights", []), float)
    info = {"path": str(run.path), "seed": seed, "schedule": ph.get("schedule"), "from": ph.get("from_step"),
            "at": at, "h": ph.get("h"), "n_checkpoints": int(w.size), "max_spacing": ph.get("max_spacing"),
            "negative_mass": ph.get("negative_mass"), "kernel_rel_error": ph.get("kernel_rel_error"),
            "variance_ratio": ph.get("variance_ratio"), "weight_last": float(w[-1]) if w.size else float("nan"),
            "loss_posthoc": one(f"eval/{split}_loss_posthoc"), "acc_posthoc": one(f"eval/{split}_acc_posthoc"),
            "loss_const": one(f"eval/{split}_loss_raw"), "acc_const": one(f"eval/{split}_acc_raw")}
    match = [b for b in a.setup.branches if b.config.get("config", {}).get("seed") == seed
             and ph.get("syntax") == "branch" and b.config.get("config", {}).get("branch_schedule") == ph.get("schedule")
             and branch_start(b) == ph.get("from_step")]
    if not match:
        info["not_compared"] = ("no branch run of this schedule, branch point and seed was given (empirical.run "
                                f"--branch-from RUN/checkpoints/step_{ph.get('from_step')}.pt --branch-schedule "
                                f"{ph.get('schedule')})" if ph.get("syntax") == "branch" else
                                "the target is a whole schedule (theory/schedtext syntax): only a branch-syntax "
                                "target (--schedule SPEC --from STEP) is paired with a branch run")
        return info
    b = match[0]
    bs, bl = b.trajectory["eval/step"], np.asarray(b.trajectory[f"eval/{split}_loss_raw"], float)
    ba = np.asarray(b.trajectory.series.get(f"eval/{split}_acc_raw", np.full(bs.size, np.nan)), float)
    ok = np.isfinite(bl)
    if not ok.any() or at < bs[ok].min() or at > bs[ok].max():
        info["not_compared"] = f"the branch run {b.path} has no {split} evaluation around step {at}"
        return info
    hit = np.flatnonzero((bs == at) & ok)
    L_b = float(bl[hit[0]]) if hit.size else float(np.interp(at, bs[ok], bl[ok]))
    acc_b = float(ba[hit[0]]) if hit.size else float("nan")
    t0 = branch_start(b)
    sd = _trajectory_noise(bs, bl, at - 0.5 * (at - t0), at)
    se = np.sqrt(2.0) * sd if np.isfinite(sd) else float("nan")   # the difference of two single evaluations
    effect = info["loss_const"] - L_b                              # what the schedule gained over the constant LR
    tol = max(POSTHOC_REL_TOL * abs(effect), POSTHOC_SE * (se if np.isfinite(se) else 0.0))
    diff = info["loss_posthoc"] - L_b
    info.update({"branch": str(b.path), "loss_branch": L_b, "acc_branch": acc_b, "branch_noise_sd": sd, "se": se,
                 "schedule_effect": effect, "posthoc_minus_branch": diff, "tolerance": tol,
                 "effect_captured": float((info["loss_const"] - info["loss_posthoc"]) / effect) if effect else float("nan"),
                 "agrees": bool(np.isfinite(diff) and abs(diff) <= tol),
                 "tolerance_from": "relative" if tol == POSTHOC_REL_TOL * abs(effect) else "noise"})
    # path level (CountSketch, empirical/sketch.py): how far the average is from the branch's weights at T, against
    # how far the constant-LR iterate is
    ts, tb = run.trajectory, b.trajectory
    if all(k in ts for k in ("sketch/posthoc", "sketch/raw")) and "sketch/raw" in tb:
        j = np.flatnonzero(np.asarray(tb["sketch/step"]) == at)
        if j.size:
            sb = np.asarray(tb["sketch/raw"])[j[0]]
            info["sketch_dist_posthoc_branch"] = float(np.linalg.norm(np.asarray(ts["sketch/posthoc"])[0] - sb))
            info["sketch_dist_const_branch"] = float(np.linalg.norm(np.asarray(ts["sketch/raw"])[0] - sb))
    return info
