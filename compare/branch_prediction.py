"""Predict what a branch run will do before it runs, and judge the branch runs against those predictions.

A branch leaves its parent run at step T0 under another LR schedule (``empirical.run --branch-from
RUN/checkpoints/step_T0.pt --branch-schedule TEXT``). Before it runs:

    python -m compare.branch_prediction RUN... --calibrate A:B --branch-at T0 --out DIR [--until D] [--branch LABEL]...

calibrates the NQM on the parents' raw trajectory over steps A–B ≤ T0 only (compare.calibrate, pooled seeds), and
writes per (parent, branch) one file DIR/<parent>--<label>.json (common/prediction.py) with the model's expected
excess loss of the parent's raw iterate and of the branch's at every step T0..D (exact moments, theory.moments, from
the stationary state at the parent's LR; theory.md §2, §3.3-3.5, §3.10), the predicted branch gain

    gain = mean over steps of (L_parent-raw − L_branch)        (loss units; > 0: the branch is better)

and its s.e. (the spread over the parameter sets the D(τ) data allow, compare.checks), plus DIR/plan.json
listing every branch's resolved schedule, file and SHA-256. The branch runs record that hash (``--prediction FILE``);
``compare.report`` then compares the predicted gain, at the evaluation steps both runs share in T0..D, with the
observed one (block s.e.) per seed by compare.verdicts' rule beside its nulls: metrics.json ``per_branch``.

Branch labels (``--branch``, repeatable; default: half, match:<each EMA>, match:swa and swa when the parent records
them):

* any complete ``--branch-schedule`` text (theory/branchspec.py): ``half``, ``scale:F``, ``constant:LR``, ...;
* ``swa`` / ``ema:GAMMA`` without H: H from this calibration (the SWA cooldown, theory.md §3.4; the harmonic rule,
  §3.3 — the stationary equivalences);
* ``match:VARIANT``: the constant LR λ_b that, switched on at T0, gives the raw weights the predicted window-mean
  loss of the parent's average VARIANT (e.g. ``ema_0.99``) over T0..D (theory.matching.match_switch, §3.10): the
  equivalence the model claims at that horizon. Where no λ_b reaches the average's loss the best one is used and the
  plan says which share of the gain it reaches.

Labels that resolve to the same schedule (on a one-scale calibration every average can match the same λ_b) share one
prediction file and one branch run; the file lists every label and the average each stands in for, and the report
judges the run once per label.

The drift term of the D(τ) fit (c = h_d·r², compare/pairs.py) enters as a minimum moving at constant speed
(theory/drift.py, theory.md §3.12): a lower LR lags further behind it. D(τ) gives c but not the curvature h_d along
the motion, so the prediction takes h_d = the slowest calibrated scale (``--drift-curvature``: a number, or ``none``
to leave the drift out), adds the s.e. that c's s.e. carries, and records beside it the range of the drift's share
of the gain over every h_d and c the data allow (:func:`drift_bounds`). A branch whose range is wider than its
prediction's 2 s.e. is *drift-sensitive*: the data cannot say what the drift will cost it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from common import prediction as prediction_file
from common.cli import DefaultsFormatter, OneLineParser, command_note, pipe_safe_stdout
from common.rundir import RunDirError, atomic_write_json
from compare import checks, predict, verdicts
from compare.calibrate import Calibration, calibrate
from compare.load import Setup, constant_phase, group_runs, load_runs, stack
from compare.pairs import block_mean_se
from theory import drift as lag, spec, stationary
from theory.branchspec import BranchSchedule
from theory.matching import match_switch

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PlannedBranch:
    """One branch to predict: its label, the --branch-schedule text it runs with, the parent average it is the
    equivalent run of (None: none) and, for ``match:VARIANT``, the theory.matching result (SwitchMatch.to_dict)."""
    label: str
    schedule: str
    equivalent_of: str | None
    match: dict | None = None


def default_labels(setup: Setup) -> list[str]:
    """half, match:<each EMA>, match:swa and swa (cooldown) — those whose average the parents record."""
    averages = setup.averages()
    out = ["half"] + [f"match:{n}" for n, avg in averages.items() if isinstance(avg, spec.EMA)]
    if "swa" in averages:
        out += ["match:swa", "swa"]
    return out


def _largest_gap(setup: Setup) -> str | None:
    pts = {n: avg for n, avg in setup.averages().items() if isinstance(avg, spec.TwoPoint) and avg.gap}
    return max(pts, key=lambda n: pts[n].gap) if pts else None


def plan_branch(label: str, cal: Calibration, setup: Setup, t0: int, until: int) -> PlannedBranch:
    """The schedule text and equivalence of one branch label (module docstring); ValueError (one line) when the
    label is not a schedule, or names an average the parents did not record."""
    averages = setup.averages()
    names = set(averages)
    if label.startswith("match:"):
        name = label.split(":", 1)[1]
        if name not in names:
            raise ValueError(f"--branch {label}: the parent runs record no average {name!r}; choose one of "
                             f"{', '.join(sorted(n for n in names if n != 'raw'))}")
        B = predict.burn_in_steps(cal)
        avg = predict.shifted(averages[name], B)
        m = match_switch(predict.nqm_of(cal), spec.SGD(spec.Constant(cal.lr), momentum=cal.momentum), avg,
                         (B + t0, B + until), switch_at=B + t0, per_direction=True)
        d = m.to_dict()
        d["window"], d["switch_step"] = [t0, until], t0          # back to run steps
        return PlannedBranch(label, str(BranchSchedule("constant", float(m.lr_branch))), name, d)
    b = BranchSchedule.parse(label)
    if b.needs_h:
        if b.kind == "swa":
            h = stationary.swa_branch_curvature(cal.lr, cal.h, cal.s, cal.momentum)
        else:
            every = next((avg.every for avg in averages.values() if isinstance(avg, spec.EMA)), 1)
            h = stationary.ema_branch_curvature(cal.lr, b.value, cal.h, cal.s, cal.momentum, every=every)
        if not (np.isfinite(h) and h > 0):
            raise ValueError(f"--branch {label}: the calibration gives no curvature H for it (H = {h}); give H")
        b = b.with_h(float(h))
    if b.kind == "half":
        equiv = _largest_gap(setup)
    elif b.kind == "ema":
        equiv = next((n for n, avg in averages.items() if isinstance(avg, spec.EMA) and avg.decay == b.value), None)
    elif b.kind == "swa":
        sw = averages.get("swa")
        equiv = "swa" if sw is not None and sw.start == t0 else None    # the cooldown equals the SWA from T0
    else:
        equiv = None
    return PlannedBranch(label, str(b), equiv)


def parent_excess(cal: Calibration, t0: int, steps: np.ndarray, h=None, s=None) -> np.ndarray:
    """The parent's raw excess at ``steps`` ≥ t0: it stays at its LR (loss units)."""
    return predict.branch_excess(cal, t0, np.array([t0]), np.array([cal.lr]), steps, h, s)


def branch_excess(cal: Calibration, br: PlannedBranch, t0: int, steps: np.ndarray, h=None, s=None) -> np.ndarray:
    """The branch's raw excess at ``steps`` ≥ t0 under its schedule from t0 (loss units)."""
    lr_steps = np.arange(t0, int(steps.max()) + 1)
    lrs = BranchSchedule.parse(br.schedule).lr_schedule(cal.lr, cal.momentum, t0).lr_at(lr_steps)
    return predict.branch_excess(cal, t0, lr_steps, lrs, steps, h, s)


# ------------------------------------------------------------------------------------------------- the drift

SETTLED_RELAXATIONS = 3.0   # a lag counts as settled after 3 relaxation times 1/α_eff at the constant LR (5 % left)
CURVATURE_GRID = 41         # log-spaced drift curvatures h_d scanned over the range the data allow


@dataclasses.dataclass(frozen=True)
class DriftBounds:
    """What the calibration says about the drift c·τ² of D(τ) (loss/step², compare/pairs.py): the fitted c and its
    s.e., the range of c (±2 s.e., clipped at 0), the curvature h_d the prediction assumes and the range of h_d the
    data allow (1/LR units; module docstring, :func:`drift_bounds`)."""
    c: float
    c_se: float
    c_range: tuple[float, float]
    curvature: float
    curvature_range: tuple[float, float]
    assumption: str

    def to_dict(self) -> dict:
        return {"c": self.c, "c_se": self.c_se, "c_range": list(self.c_range), "curvature": self.curvature,
                "curvature_range": list(self.curvature_range), "assumption": self.assumption}


def drift_bounds(cal: Calibration, settled_for: int, curvature: str | float = "slowest") -> DriftBounds | None:
    """The drift's c and the curvatures h_d it may lie along (theory.md §3.12); None when the calibration has no
    D(τ) fit or ``curvature`` is ``"none"``.

    D(τ) fixes c = h_d r² only. The h_d the data allow: the lag behind the optimum must have settled during the
    ``settled_for`` steps the parent ran at its constant LR before the branch (α_eff·settled_for ≥ 3, else D(τ)
    would not rise as c τ²), and its cost c/(2α_eff²) may not exceed the floor the calibration leaves (the observed
    raw loss less the noise excess, + 2 s.e.); above, the stability edge α < 2(1 + μ). ``curvature``: ``"slowest"``
    (the slowest calibrated scale, clipped into that range) or a number (1/LR units).
    """
    if isinstance(curvature, str) and curvature not in ("slowest", "none") or not isinstance(curvature, str) and not (
            np.isfinite(curvature) and curvature > 0):
        raise ValueError(f"--drift-curvature {curvature!r}: give slowest, none or a curvature h_d > 0")
    fit = cal.fit
    if fit is None or curvature == "none":
        return None
    c, c_se = float(fit.drift), float(fit.drift_se)
    spread = 2.0 * c_se if np.isfinite(c_se) else 0.0
    c_lo, c_hi = max(0.0, c - spread), max(0.0, c + spread)
    lam, mu = cal.lr, cal.momentum
    h_max = 0.99 * stationary.max_stable_alpha(mu) / lam
    alpha_min = SETTLED_RELAXATIONS / max(int(settled_for), 1)
    room = cal.floor + 2.0 * (cal.floor_se if np.isfinite(cal.floor_se) else 0.0)   # loss the lag may cost
    if c_hi > 0 and np.isfinite(room):      # a floor of 0 leaves no room: only the stiffest h_d is allowed
        alpha_min = max(alpha_min, np.sqrt(c_hi / (2.0 * room)) if room > 0 else np.inf)
    h_min = min(alpha_min * (1.0 - mu) / lam, h_max)
    if curvature == "slowest":
        h_d, how = float(np.clip(np.min(cal.h), h_min, h_max)), "along the slowest calibrated scale"
    else:
        h_d, how = float(curvature), "along the curvature given"
    return DriftBounds(c, c_se, (c_lo, c_hi), h_d, (float(h_min), float(h_max)), how)


def drift_excess(cal: Calibration, lr_schedule, t0: int, steps: np.ndarray, h_d, c: float) -> np.ndarray:
    """The lag's cost ½h_d m_t² at ``steps`` ≥ t0 (loss units; one column per h_d): settled at the parent's LR
    before t0, then the LR ``lr_schedule(step)`` for the update at each step from t0 (theory.drift.lag_excess)."""
    lrs = lr_schedule(np.arange(t0, int(steps.max())))
    return lag.lag_excess(cal.lr, lrs, np.atleast_1d(h_d), c, cal.momentum)[np.asarray(steps) - t0]


def branch_drift(cal: Calibration, br: PlannedBranch, t0: int, steps: np.ndarray, bounds: DriftBounds) -> dict:
    """The drift's share of the branch gain: its curves and gain at the assumed h_d, the s.e. c's s.e. carries, and
    the range over every (h_d, c) the data allow (loss units). The cost is linear in c, so it is computed per unit c."""
    sched = BranchSchedule.parse(br.schedule).lr_schedule(cal.lr, cal.momentum, t0)
    grid = np.append(np.geomspace(*bounds.curvature_range, CURVATURE_GRID), bounds.curvature)
    # the parent stays at its LR, so its lag stays settled: c/(2α_eff²) at every step (theory.md §3.12)
    parent = np.broadcast_to(lag.stationary_lag_excess(cal.lr, grid, 1.0, cal.momentum), (len(steps), grid.size))
    branch = drift_excess(cal, sched.lr_at, t0, steps, grid, 1.0)
    per_c = np.mean(parent - branch, axis=0)          # the drift's gain per unit c, per h_d
    c = max(bounds.c, 0.0)
    ends = np.concatenate([per_c * bounds.c_range[0], per_c * bounds.c_range[1]])
    return {"parent": c * parent[:, -1], "branch": c * branch[:, -1], "gain": float(c * per_c[-1]),
            "gain_se": float(abs(per_c[-1]) * bounds.c_se) if np.isfinite(bounds.c_se) else 0.0,
            "gain_range": [float(ends.min()) + 0.0, float(ends.max()) + 0.0]}      # + 0.0: no "−0" when c may be 0


def predict_branch(cal: Calibration, br: PlannedBranch, t0: int, until: int, parents: list | None = None,
                   drift: DriftBounds | None = None) -> dict:
    """The prediction of one branch over steps t0..until: per-step curves, the gain and their s.e. (a quarter of
    the range over the parameter sets the D(τ) data allow, compare.checks, with the s.e. c carries in quadrature).
    ``parents``: the parent's curve for each of checks.parameter_sets(cal), if already computed (it is the same for
    every branch); ``drift``: :func:`drift_bounds` (None: the drift is left out)."""
    steps = np.arange(t0, until + 1)
    sets = checks.parameter_sets(cal)
    if parents is None:
        parents = [parent_excess(cal, t0, steps, h, s) for h, s in sets]
    band = np.array([branch_excess(cal, br, t0, steps, h, s) for h, s in sets])
    parent, branch = parents[0], band[0]
    gain_se = checks.quarter_range([np.mean(p - b) for p, b in zip(parents, band)])
    moved = branch_drift(cal, br, t0, steps, drift) if drift is not None else None
    noise_only_se = gain_se
    if moved is not None:
        parent, branch = parent + moved["parent"], branch + moved["branch"]
        gain_se = float(np.hypot(gain_se, moved["gain_se"]))
    fit = cal.fit
    return {"kind": prediction_file.KIND, "schema_version": SCHEMA_VERSION, "label": br.label,
            "schedule": br.schedule, "equivalent_of": br.equivalent_of, "match": br.match,
            "branch_step": int(t0), "compared_on": [int(t0), int(until)], "split": cal.split,
            "calibration": {"calibrated_on": [int(cal.window[0]), int(cal.window[1])], "lr": cal.lr,
                            "momentum": cal.momentum, "h": cal.h.tolist(), "noise_mass": cal.s.tolist(),
                            "floor": cal.floor, "floor_se": cal.floor_se, "source": cal.source,
                            "identified": bool(np.all(fit.identified())) if fit is not None else False,
                            "parameter_sets": len(sets),
                            "drift": fit.drift if fit is not None else 0.0,
                            "drift_se": fit.drift_se if fit is not None else float("nan"),
                            "drift_identified": bool(fit.drift_identified()) if fit is not None else False},
            "drift": None if moved is None else {
                **drift.to_dict(), "gain": moved["gain"], "gain_se": moved["gain_se"],
                "gain_range": moved["gain_range"], "gain_pred_se_without": float(noise_only_se),
                "sensitive": bool(moved["gain_range"][1] - moved["gain_range"][0] > 2.0 * gain_se),
                "gain_per_step": (moved["parent"] - moved["branch"]).tolist()},
            "steps": steps.tolist(), "parent_raw_excess": parent.tolist(), "branch_excess": branch.tolist(),
            "branch_excess_se": checks.quarter_range(band, axis=0).tolist(),
            "gain_pred": float(np.mean(parent - branch)), "gain_pred_se": float(gain_se)}


def write_predictions(dirs: list[str], fit_window: tuple[int, int], t0: int, out: Path,
                      labels: list[str] | None = None, until: int | None = None, split: str = "test",
                      scales: int | None = None, drift_curvature: str | float = "slowest") -> dict:
    """Calibrate on ``fit_window`` (≤ t0) of the parent runs ``dirs`` (one setup), write one prediction file per
    (parent, branch) and out/plan.json; returns the plan. ``drift_curvature``: :func:`drift_bounds`. ValueError
    (one line) on a bad range or label."""
    a, b = fit_window
    if not 0 <= a < b <= t0:
        raise ValueError(f"--calibrate {a}:{b} --branch-at {t0}: need A < B ≤ T0 (nothing after the branch step may "
                         f"enter the calibration)")
    setups = group_runs(load_runs(dirs))
    if len(setups) != 1 or not setups[0].base or setups[0].branches:
        raise ValueError("give the base runs of one setup (the parents), no branch runs")
    setup = setups[0]
    end = until if until is not None else constant_phase(setup.base[0])[1]
    if not t0 < end:
        raise ValueError(f"--branch-at {t0} --until {end}: the comparison needs T0 < D (D defaults to the end of "
                         f"the parents' constant-LR phase)")
    cal = calibrate(setup, scales=scales, split=split, window_steps=(a, b))
    drift = drift_bounds(cal, t0 - constant_phase(setup.base[0])[0], drift_curvature)
    branches = [plan_branch(x, cal, setup, t0, end) for x in (labels or default_labels(setup))]
    # labels that resolve to the same schedule (e.g. every average matched to one λ_b) share one prediction and one
    # branch run: the file lists every label and the average each stands in for
    groups: dict[str, list[PlannedBranch]] = {}
    for br in branches:
        groups.setdefault(br.schedule, []).append(br)
    steps = np.arange(t0, end + 1)
    parents = [parent_excess(cal, t0, steps, h, s) for h, s in checks.parameter_sets(cal)]   # shared by every branch
    rows = []
    for sched, same in groups.items():
        doc = predict_branch(cal, same[0], t0, end, parents, drift)
        doc.update({"labels": [br.label for br in same],
                    "stands_in_for": {br.label: br.equivalent_of for br in same},
                    "matches": {br.label: br.match for br in same if br.match}})
        for run in setup.base:
            seed = run.config.get("config", {}).get("seed")
            path = out / f"{run.path.name}--{same[0].label.replace(':', '-')}.json"
            atomic_write_json(path, {**doc, "parent": str(run.path), "parent_seed": seed})
            rows.append({"parent": str(run.path), "seed": seed, "label": same[0].label, "labels": doc["labels"],
                         "schedule": sched, "equivalent_of": same[0].equivalent_of, "file": str(path),
                         "sha256": prediction_file.sha256_of(path), "gain_pred": doc["gain_pred"],
                         "gain_pred_se": doc["gain_pred_se"], "drift": doc["drift"],
                         "match": {k: same[0].match[k] for k in ("exists", "lr_branch", "reached_fraction",
                                                                 "unreachable_share", "lr_eq_stationary", "gain")}
                         if same[0].match else None})
    plan = {"calibrated_on": [a, b], "branch_step": t0, "compared_on": [t0, end], "split": split,
            "drift": drift.to_dict() if drift is not None else None, "branches": rows}
    atomic_write_json(out / "plan.json", plan)
    return plan


# ------------------------------------------------------------------------------------------ judging the runs

def resolve_path(path: str, run_dir) -> Path:
    """A branch's recorded prediction path: as recorded (absolute, empirical.run resolves it), else relative to the
    branch's run directory."""
    p = Path(path)
    return p if p.is_file() or p.is_absolute() else Path(run_dir) / p


def branch_cells(setup: Setup, run, split: str = "test") -> list[dict]:
    """One branch run against the prediction it recorded (None: it recorded none). The observed gain is the window
    mean of L_parent-raw − L_branch at the evaluation steps both runs share in the predicted range, with its block
    s.e.; the predicted gain is the mean of the predicted curves at those same steps. One cell per label the
    prediction was written for (labels that resolved to one schedule share a run); [] without a prediction."""
    cfg = run.config.get("config", {})
    if not cfg.get("prediction"):
        return []
    cell = {"run": str(run.path), "schedule": cfg.get("branch_schedule"), "prediction": cfg["prediction"]}
    path = resolve_path(cfg["prediction"], run.path)
    try:
        if prediction_file.sha256_of(path) != cfg.get("prediction_sha256"):
            return [{**cell, "not_compared": f"{path} changed after the branch ran (SHA-256 differs from the run's "
                                             f"prediction_sha256)"}]
        doc = prediction_file.read_prediction(path)
    except (OSError, RunDirError) as e:
        return [{**cell, "not_compared": f"prediction file unreadable: {e}"}]
    seed = cfg.get("seed")
    parents = [r for r in setup.base if r.config.get("config", {}).get("seed") == seed]
    cell.update({"label": doc["label"], "equivalent_of": doc.get("equivalent_of"), "match": doc.get("match")})
    if not parents:
        return [{**cell, "not_compared": f"no parent run with seed {seed} was given"}]
    c, d = doc["compared_on"]
    st_p, st_b = np.asarray(parents[0].trajectory["eval/step"]), np.asarray(run.trajectory["eval/step"])
    common = np.intersect1d(st_p[(st_p >= c) & (st_p <= d)], st_b)
    _, lp = stack([parents[0]], f"eval/{split}_loss_raw", common)
    _, lb = stack([run], f"eval/{split}_loss_raw", common)
    ok = np.isfinite(lp[0]) & np.isfinite(lb[0])
    if ok.sum() < 2:
        return [{**cell, "not_compared": f"fewer than 2 shared evaluation steps in {c}..{d}"}]
    steps = common[ok]
    obs, obs_se = block_mean_se((lp[0] - lb[0])[ok])
    i = steps - int(doc["steps"][0])
    pred = float(np.mean(np.asarray(doc["parent_raw_excess"])[i] - np.asarray(doc["branch_excess"])[i]))
    cell.update({"gain_pred": pred, "gain_pred_se": float(doc["gain_pred_se"]), "gain_obs": obs,
                 "gain_obs_se": obs_se, "n_steps": int(steps.size), "compared_on": [int(steps[0]), int(steps[-1])]})
    moved = doc.get("drift")
    if moved:          # the drift's share of gain_pred and the range the data allow it (files before it: absent)
        cell.update({"gain_pred_drift": float(np.mean(np.asarray(moved["gain_per_step"])[i])),
                     "gain_pred_se_without_drift": moved["gain_pred_se_without"],
                     "gain_pred_drift_range": moved["gain_range"], "drift_sensitive": moved["sensitive"]})
    out = []
    for label in doc.get("labels", [doc["label"]]):
        eq = doc.get("stands_in_for", {}).get(label, doc.get("equivalent_of"))
        one = {**cell, "label": label, "equivalent_of": eq,
               "match": doc.get("matches", {}).get(label, doc.get("match"))}
        key = f"eval/{split}_loss_{eq}" if eq else None
        if key and key in parents[0].trajectory:   # what the branch stands in for: the parent average's gain there
            _, la = stack([parents[0]], key, steps)
            one["average_gain_obs"], one["average_gain_obs_se"] = block_mean_se(lp[0][ok] - la[0])
        out.append(one)
    return out


def judge(setup: Setup, split: str = "test") -> dict:
    """Every branch run that recorded a prediction, per seed, scored by compare.verdicts per label:
    {"per_branch": [cells], "by_label": {label: score}, "not_compared": [cells]}."""
    cells = [c for r in setup.branches for c in branch_cells(setup, r, split)]
    judged = [c for c in cells if "not_compared" not in c]
    scores = {}
    for label in sorted({c["label"] for c in judged}):
        mine = [c for c in judged if c["label"] == label]
        sc = verdicts.score(mine, key="label")
        for c, ok in zip(mine, sc.pop("agree", [])):
            c["agrees"] = bool(ok)
        scores[label] = sc
    return {"per_branch": judged, "by_label": scores, "not_compared": [c for c in cells if "not_compared" in c]}


def per_branch_text(res: dict) -> list[str]:
    """report.md lines: one per label (score beside the nulls), then one per branch run."""
    if not res or not (res.get("per_branch") or res.get("not_compared")):
        return []
    L = ["Branches predicted before they ran (compare/branch_prediction.py; rule: " + verdicts.RULE + "):", ""]
    for label, sc in res["by_label"].items():
        nulls = ", ".join(f"{k} {v:.0%}" for k, v in sc["null"].items())
        mine = [c for c in res["per_branch"] if c["label"] == label]
        sensitive = sum(bool(c.get("drift_sensitive")) for c in mine)
        drift = (f"; {sensitive} of {len(mine)} drift-sensitive (the drift the data allow could move the "
                 f"prediction by more than its 2 s.e.)" if sensitive else "")
        other = "".join(f"; {k}: {v:.0%}" for k, v in sc.get("alternatives", {}).items())
        L.append(f"* `{label}`: {sc['share']:.0%} of {sc['n_cells']} cells agree (nulls: {nulls}{other}); median "
                 f"2·s.e./|obs| {sc['median_2se_rel']:.2f} → **{sc['verdict']}**{drift}")
    L.append("")
    for c in res["per_branch"]:
        extra = (f"; the parent's {c['equivalent_of']} gains {c['average_gain_obs']:.4g} ± "
                 f"{c['average_gain_obs_se']:.2g}" if "average_gain_obs" in c else "")
        if "gain_pred_drift" in c:
            lo, hi = c["gain_pred_drift_range"]
            extra += f"; drift {c['gain_pred_drift']:.2g} of it (the data allow {lo:.2g} to {hi:.2g})"
        L.append(f"  * `{Path(c['run']).name}` ({c['schedule']}): gain L_raw − L_branch predicted "
                 f"{c['gain_pred']:.4g} ± {c['gain_pred_se']:.2g}, observed {c['gain_obs']:.4g} ± "
                 f"{c['gain_obs_se']:.2g} over steps {c['compared_on'][0]}–{c['compared_on'][1]}"
                 f" ({'agrees' if c.get('agrees') else 'disagrees'}){extra}")
    for c in res.get("not_compared", []):
        L.append(f"  * `{Path(c['run']).name}`: not compared: {c['not_compared']}")
    return L


# ------------------------------------------------------------------------------------------------------- CLI

def _range(text: str, flag: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: write two steps A:B, e.g. {flag} 1050:1400") from None
    return a, b


def build_parser() -> argparse.ArgumentParser:
    # DefaultsFormatter: "(default: X)" once per option, none for None/False (the convention of every CLI here)
    p = OneLineParser(prog="python -m compare.branch_prediction", description=__doc__.split("\n\n")[0],
                      epilog=command_note("compare.branch_prediction"), formatter_class=DefaultsFormatter)
    p.add_argument("runs", nargs="+", help="the parent (base) run directories: the seeds of one setup")
    p.add_argument("--calibrate", required=True, metavar="A:B", help="calibrate on steps A..B (B ≤ the branch step)")
    p.add_argument("--branch-at", type=int, default=None, metavar="T0",
                   help="the branch step (default B): the branches start from RUN/checkpoints/step_T0.pt")
    p.add_argument("--until", type=int, default=None, metavar="D",
                   help="predict up to step D (default: the end of the parents' constant-LR phase)")
    p.add_argument("--branch", action="append", default=None, metavar="LABEL",
                   help="a branch to predict (repeatable): a --branch-schedule text, swa or ema:GAMMA without H, or "
                        "match:VARIANT (default: half, match:<each EMA>, match:swa, swa)")
    p.add_argument("--out", required=True, help="folder for the prediction files and plan.json (new or empty)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="which evaluation split to predict")
    p.add_argument("--scales", type=int, default=None, help="curvature scales of the D(τ) fit (default: chosen)")
    p.add_argument("--drift-curvature", default="slowest", metavar="H",
                   help="the curvature h_d (1/LR units) the fitted drift c = h_d r² moves along: slowest (the "
                        "slowest calibrated scale), a number, or none to leave the drift out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"compare.branch_prediction: --out {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        a, b = _range(args.calibrate, "--calibrate")
        t0 = b if args.branch_at is None else args.branch_at
        curvature = args.drift_curvature
        if curvature not in ("slowest", "none"):
            try:
                curvature = float(curvature)
            except ValueError:
                raise ValueError(f"--drift-curvature {curvature!r}: give slowest, none or a number > 0") from None
        plan = write_predictions(args.runs, (a, b), t0, out, args.branch, args.until, args.split, args.scales,
                                 curvature)
    except (RunDirError, ValueError, KeyError) as e:
        print(f"compare.branch_prediction: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"compare.branch_prediction: cannot write {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    seen = set()
    for r in plan["branches"]:
        if r["label"] in seen:
            continue
        seen.add(r["label"])
        m = r["match"]
        how = ("" if not m else f" (λ_b matches {r['equivalent_of']}" + ("" if m["exists"] else
               f"; no exact match: the best λ_b reaches {m['reached_fraction']:.2f} of its gain") + ")")
        print(f"{', '.join(r['labels'])}: --branch-schedule {r['schedule']}{how}; predicted gain L_raw − L_branch "
              f"over {plan['compared_on'][0]}–{plan['compared_on'][1]}: {r['gain_pred']:.4g} ± "
              f"{r['gain_pred_se']:.2g}" + _drift_text(r["drift"]))
    print(out / "plan.json")
    return 0


def _drift_text(d: dict | None) -> str:
    if not d:
        return " (drift left out)"
    lo, hi = d["gain_range"]
    return (f" (drift {d['gain']:.2g} of it at h_d {d['curvature']:.3g}; the data allow {lo:.2g} to {hi:.2g}"
            + ("; drift-sensitive" if d["sensitive"] else "") + ")")


def cli(argv: list[str] | None = None) -> int:
    """The command avglr-predict-branch and ``python -m compare.branch_prediction``: :func:`main` with a pipe-safe
    stdout."""
    with pipe_safe_stdout():
        return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
