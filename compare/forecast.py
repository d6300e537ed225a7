"""Predict the rest of a run from the start of its constant phase: calibrate the NQM on steps A–B only, then predict
(1) every average's window-mean gain over steps C–D and (2) the loss of the raw weights and of every average at the
run's last evaluation, after its cooldown — through the run's own recorded LR (``train/lr``), with the exact
moments of theory/ (theory.md §2, §3.3-3.5). ``python -m compare.report RUN... --calibrate A:B --window C:D``.

Nothing observed after B enters a prediction. Each (seed, average) cell is judged by compare.verdicts' rule beside its
nulls, plus the one a forecast must beat: "the gain it had where calibrated" (the observed A–B gain, persistence).
A final loss is one realisation: its s.e. is the seeds' s.d. of that loss. The final losses need the model's floor (calibrate.Calibration.floor, the observed raw loss minus the predicted
excess over A–B); when that floor is not physical (below 0 by more than 2 s.e., or undefined) they are reported as
not testable.
"""
from __future__ import annotations

import numpy as np

from compare import checks, predict, verdicts
from compare.calibrate import Calibration, calibrate
from compare.load import Setup, stack
from compare.pairs import block_mean_se
from theory import moments as nqm_moments
from theory import spec

FORECAST_KINDS = (spec.EMA, spec.SWA, spec.NPoint)   # averages with a defined start and a prediction of their own


def lr_phases(cal: Calibration, run, burn_in: int, end: int, h: np.ndarray) -> list:
    """The α phases [(start, stop, α per direction)] of ``run``'s recorded LR (train/lr at every logged update,
    held until the next record), after ``burn_in`` steps at the calibration's LR (the stationary start)."""
    tr = run.trajectory
    steps = np.asarray(tr["train/step"], np.int64)
    lrs = np.asarray(tr["train/lr"], float)
    phases = [(0, burn_in, cal.lr * h)]
    cut = np.flatnonzero(np.diff(lrs) != 0) + 1
    starts = np.concatenate([[0], cut])
    for i, s in enumerate(starts):
        a = burn_in + (0 if i == 0 else int(steps[s]))
        b = burn_in + (int(steps[starts[i + 1]]) if i + 1 < starts.size else end)
        b = min(b, burn_in + end)
        if b > a:
            phases.append((a, b, lrs[s] * h))
    return phases


def excess_along_run(cal: Calibration, avg: spec.Averaging, run, steps: np.ndarray, h=None, s=None) -> np.ndarray:
    """Predicted excess loss of the run's average ``avg`` (spec.NoAverage: the iterate) at run ``steps`` under the
    run's own LR, loss units; NaN before the average is defined (``avg.defined_from``)."""
    steps = np.asarray(steps, np.int64)
    out = np.full(steps.size, np.nan)
    ok = steps >= avg.defined_from
    if not ok.any():
        return out
    B = predict.burn_in_steps(cal)
    model = predict.nqm_of(cal, h, s)
    end = int(steps[ok].max()) + 1
    mom = nqm_moments.moments_from_alpha(model, cal.momentum, predict.shifted(avg, B),
                                         lr_phases(cal, run, B, end, model.h), B + steps[ok])
    out[ok] = nqm_moments.excess_loss(model, mom.mean_avg, mom.var_avg)
    return out


def _observed_gain(run, name: str, split: str, lo: int, hi: int) -> tuple[float, float, np.ndarray]:
    st = np.asarray(run.trajectory["eval/step"])
    _, raw = stack([run], f"eval/{split}_loss_raw", st)
    _, avg = stack([run], f"eval/{split}_loss_{name}", st)
    m = (st >= lo) & (st <= hi) & np.isfinite(raw[0]) & np.isfinite(avg[0])
    mean, se = block_mean_se((raw[0] - avg[0])[m])
    return mean, se, st[m]


def forecast(setup: Setup, fit_window: tuple[int, int], pred_window: tuple[int, int], split: str = "test",
             scales: int | None = None) -> dict:
    """The forecast of a setup (module docstring): {"calibrated_on", "predicted_on", "calibration", "cells",
    <verdicts.score of the gain cells>, "final": {"cells", "share", "null_share", "testable"}}."""
    (a, b), (c, d) = fit_window, pred_window
    if not (0 <= a < b and 0 <= c < d):
        raise ValueError(f"--calibrate {a}:{b} / --window {c}:{d}: give two ranges of steps A < B and C < D")
    try:
        cal = calibrate(setup, scales=scales, split=split, window_steps=(a, b))
    except ValueError as e:     # too few steps or lags in A–B: a result to report, not a failed report
        return {"calibrated_on": [a, b], "predicted_on": [c, d], "not_testable": f"calibration on {a}–{b}: {e}",
                "n_cells": 0, "cells": [], "final": {"cells": [], "testable": False, "why": str(e)}}
    averages = {n: avg for n, avg in setup.averages(split).items() if isinstance(avg, FORECAST_KINDS)}
    cells, finals = [], []
    raw_memo: dict = {}

    def raw_excess(run, steps, h, s):   # the iterate's excess: shared by every average of the run
        key = (id(run), steps.tobytes(), np.asarray(h).tobytes(), np.asarray(s).tobytes())
        if key not in raw_memo:
            raw_memo[key] = excess_along_run(cal, spec.NoAverage(), run, steps, h, s)
        return raw_memo[key]

    for run in setup.base:
        if "train/lr" not in run.trajectory:
            continue
        st_all = np.asarray(run.trajectory["eval/step"])
        last = int(st_all.max())
        for name, avg in averages.items():
            obs, obs_se, steps = _observed_gain(run, name, split, c, d)
            before, before_se, _ = _observed_gain(run, name, split, a, b)
            if steps.size == 0:
                continue

            def gain(h, s, steps=steps, avg=avg):
                return float(np.nanmean(raw_excess(run, steps, h, s) - excess_along_run(cal, avg, run, steps, h, s)))

            cells.append({"run": str(run.path), "variant": name, "gain_pred": gain(cal.h, cal.s),
                          "gain_pred_se": checks.spread_se(gain, cal), "gain_obs": obs, "gain_obs_se": obs_se,
                          "gain_calibration": before, "gain_calibration_se": before_se})
        for name, avg in {"raw": spec.NoAverage(), **averages}.items():
            key = f"eval/{split}_loss_{name}"
            if key not in run.trajectory:
                continue
            ls = np.asarray(run.trajectory[key], float)
            i = int(np.flatnonzero(st_all == last)[0])
            at_b = ls[(st_all >= a) & (st_all <= b) & np.isfinite(ls)]

            def final(h, s, avg=avg):
                return float(excess_along_run(cal, avg, run, np.array([last]), h, s)[0])

            finals.append({"run": str(run.path), "variant": name, "step": last,
                           "loss_pred": cal.floor + final(cal.h, cal.s), "loss_pred_se": checks.spread_se(final, cal),
                           "loss_obs": float(ls[i]), "loss_end_of_calibration": float(at_b[-1]) if at_b.size
                           else float("nan")})
    sc = verdicts.score(cells)
    for cell, ok in zip(cells, sc.get("agree", [])):
        cell["agrees"] = bool(ok)
    # the floor (observed raw loss − predicted excess) is physical when not below 0 by more than 2 s.e.
    testable = bool(np.isfinite(cal.floor) and cal.floor >= -2.0 * np.nan_to_num(cal.floor_se))
    for f in finals:   # one run's final loss scatters around its expectation by the seeds' s.d. (NaN with one seed)
        same = np.array([g["loss_obs"] for g in finals if g["variant"] == f["variant"]], float)
        f["loss_obs_se"] = float(same.std(ddof=1)) if same.size > 1 else float("nan")
        f["agrees"] = testable and verdicts.cell_agrees(f["loss_pred"], f["loss_pred_se"], f["loss_obs"],
                                                        f["loss_obs_se"])
        f["null_agrees"] = verdicts.cell_agrees(f["loss_end_of_calibration"], 0.0, f["loss_obs"], f["loss_obs_se"])
    return {"calibrated_on": [a, b], "predicted_on": [c, d],
            "calibration": {"h": cal.h.tolist(), "noise_mass": cal.s.tolist(), "floor": cal.floor,
                            "identified": bool(np.all(cal.fit.identified())) if cal.fit is not None else False},
            "cells": cells, **{k: v for k, v in sc.items() if k != "agree"},
            "final": {"cells": finals, "testable": testable,
                      "why": "" if testable else f"the calibration's floor {cal.floor:.3g} ± {cal.floor_se:.2g} is not physical",
                      "share": float(np.mean([f["agrees"] for f in finals])) if finals else float("nan"),
                      "null": "the loss at the end of the calibration range",
                      "null_share": float(np.mean([f["null_agrees"] for f in finals])) if finals else float("nan")}}
