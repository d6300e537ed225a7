"""One rule for every predicted-vs-observed cell, and the null predictors it must beat.

A cell is one (seed, variant) — or (seed, branch) — window-mean gain, predicted with s.e. ``pred_se`` and observed
with block s.e. ``obs_se``. It agrees when

    |pred − obs| ≤ max(CELL_REL_TOL·|obs|, CELL_SE·√(pred_se² + obs_se²)).

The same rule scores predictors that know nothing of the model: zero gain; the mean gain of the other seeds (no
model at all); for the pair identity, the identity without its drift term; and for a forecast (compare/forecast.py),
the gain the cell had where the model was calibrated. A branch prediction's reading without its drift term is the
same model with one term less, not a null: it is scored beside the model (``alternatives``) and does not enter the
verdict, so the runs show whether the drift term helped. A claim is reproduced only when at
least CELL_SHARE of the cells agree AND the model's share beats the best null's by NULL_MARGIN; a model that agrees
no more often than a null "is not distinguishable from" it. Where the median of CELL_SE·s.e./|obs| exceeds
TEST_POWER_MAX the tolerance is set by the noise, not by the 15 % claim, and the report says the run cannot test it.
"""

from __future__ import annotations

import numpy as np

CELL_REL_TOL = 0.15        # relative tolerance of one cell
CELL_SE = 2.0              # ... or this many combined standard errors
CELL_SHARE = 0.8           # share of cells that must agree
NULL_MARGIN = 0.30         # the model's share must exceed the best null's by this much
TEST_POWER_MAX = 0.5       # median CELL_SE·s.e./|obs| above this: the run cannot test a CELL_REL_TOL claim

NULL_ZERO = "zero gain"
NULL_OTHER_SEEDS = "mean of the other seeds"
NULL_NO_DRIFT = "identity without its drift term"
BRANCH_NO_DRIFT = "the prediction without its drift term"
NULL_PERSISTENCE = "the gain where calibrated"    # a forecast's null: the gain observed over the calibration range

RULE = (f"|pred − obs| ≤ max({CELL_REL_TOL:g}·|obs|, {CELL_SE:g}·√(se_pred² + se_obs²)) on ≥ {CELL_SHARE:.0%} of "
        f"cells, and a share at least {NULL_MARGIN:.0%} above the best null predictor's")


def _f(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return x


def cell_agrees(pred: float, pred_se: float, obs: float, obs_se: float) -> bool:
    """The rule for one cell (a NaN s.e. counts as 0)."""
    pred, obs = _f(pred), _f(obs)
    se = np.hypot(np.nan_to_num(_f(pred_se)), np.nan_to_num(_f(obs_se)))
    tol = max(CELL_REL_TOL * abs(obs), CELL_SE * se)
    return bool(np.isfinite(pred) and np.isfinite(obs) and abs(pred - obs) <= tol)


def null_predictions(cells: list[dict], key: str = "variant") -> dict[str, list[tuple[float, float]]]:
    """(pred, pred_se) of each null predictor for each cell, in the order of ``cells``. A cell is a dict with
    gain_obs, gain_obs_se, ``key`` (what groups cells across seeds) and, where the identity's drift term is known,
    gain_pred, gain_pred_se and ``drift``."""
    out = {NULL_ZERO: [(0.0, 0.0) for _ in cells], NULL_OTHER_SEEDS: []}
    for i, c in enumerate(cells):
        others = np.array([_f(o["gain_obs"]) for j, o in enumerate(cells) if j != i and o.get(key) == c.get(key)])
        others = others[np.isfinite(others)]
        if others.size == 0:
            out[NULL_OTHER_SEEDS].append((float("nan"), float("nan")))
        else:
            se = others.std(ddof=1) / np.sqrt(others.size) if others.size > 1 else float("nan")
            out[NULL_OTHER_SEEDS].append((float(others.mean()), float(se)))
    if cells and all("gain_calibration" in c for c in cells):
        out[NULL_PERSISTENCE] = [(_f(c["gain_calibration"]), _f(c.get("gain_calibration_se"))) for c in cells]
    if cells and all("drift" in c for c in cells):
        out[NULL_NO_DRIFT] = [(_f(c["gain_pred"]) - _f(c["drift"]), _f(c.get("gain_pred_se"))) for c in cells]
    return out


def alternative_predictions(cells: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(pred, pred_se) of the model's other readings for each cell: a branch prediction without its drift term
    (cells with gain_pred_drift and gain_pred_se_without_drift)."""
    if cells and all("gain_pred_drift" in c for c in cells):
        return {BRANCH_NO_DRIFT: [(_f(c["gain_pred"]) - _f(c["gain_pred_drift"]),
                                   _f(c.get("gain_pred_se_without_drift"))) for c in cells]}
    return {}


def _shares(predictors: dict[str, list[tuple[float, float]]], cells: list[dict]) -> dict[str, float]:
    """{predictor: share of ``cells`` its (pred, pred_se) agree with by the rule}."""
    return {name: float(np.mean([cell_agrees(p, s, c["gain_obs"], c.get("gain_obs_se"))
                                 for (p, s), c in zip(preds, cells)]))
            for name, preds in predictors.items()}


def score(cells: list[dict], key: str = "variant") -> dict:
    """Shares of agreeing cells for the model, every null and every alternative reading of the model, the median
    CELL_SE·s.e./|obs|, and the verdict text: "reproduced", "not distinguishable from <null>" or "not reproduced"
    (plus why)."""
    if not cells:
        return {"n_cells": 0, "share": float("nan"), "null": {}, "median_2se_rel": float("nan"), "verdict": None}
    agree = [cell_agrees(c["gain_pred"], c.get("gain_pred_se"), c["gain_obs"], c.get("gain_obs_se")) for c in cells]
    share = float(np.mean(agree))
    nulls, alternatives = _shares(null_predictions(cells, key), cells), _shares(alternative_predictions(cells), cells)
    se = np.array([np.hypot(np.nan_to_num(_f(c.get("gain_pred_se"))), np.nan_to_num(_f(c.get("gain_obs_se"))))
                   for c in cells])
    obs = np.abs(np.array([_f(c["gain_obs"]) for c in cells]))
    with np.errstate(divide="ignore", invalid="ignore"):
        power = float(np.nanmedian(np.where(obs > 0, CELL_SE * se / obs, np.inf)))
    best = max(nulls, key=nulls.get) if nulls else None
    if share < CELL_SHARE:
        verdict = "not reproduced"
    elif best is not None and share - nulls[best] < NULL_MARGIN:
        verdict = f"not distinguishable from {best}"
    else:
        verdict = "reproduced"
    return {"n_cells": len(cells), "agree": agree, "share": share, "null": nulls, "alternatives": alternatives,
            "best_null": best,
            "median_2se_rel": power, "can_test_15pct": bool(power <= TEST_POWER_MAX), "verdict": verdict}
