"""Shared body of the EMA and SWA equivalence figures (theory.md §3.3, §3.4, §7.2 items 3-4).

data = {"n": int, "window": (lo, hi), "ylabel": str,
        "curves": [{"name", "steps"[T], "obs"[n, T], "pred"[T]}],            # raw first, then the averages
        "branches": [{"label", "matches", "t0", "steps"[T], "obs"[1, T], "pred"[T] or [P], "predicted_before",
                      optional "pred_steps"[P], "pred_se"[P]}]}   # from the branch step t0

A branch predicted before it ran (compare/branch_prediction.py) is drawn as that prediction with a ±2 s.e. band
beside its observed mean; one without such a prediction with the report's NQM line, labelled as fitted afterwards.
Without a branch run the title names no comparison and a note in the axis says that none is drawn.
"""

from __future__ import annotations

import numpy as np

from common import style


def _from_branch_step(x: dict) -> dict:
    """A branch entry cut to its branch step t0 on: observed series on ``steps``, the prediction on ``pred_steps``
    (its own grid, when predicted before the run) or on ``steps``."""
    m = np.asarray(x["steps"]) >= x["t0"]
    out = dict(x, steps=np.asarray(x["steps"])[m], obs=np.atleast_2d(x["obs"])[:, m])
    ps = np.asarray(x.get("pred_steps", x["steps"]))
    k = ps >= x["t0"]
    out["pred"] = np.asarray(x["pred"])[k]
    if "pred_steps" in x:
        out["pred_steps"] = ps[k]
    if "pred_se" in x:
        out["pred_se"] = np.asarray(x["pred_se"])[k]
    return out


@style.styled
def plot_equivalence(data: dict, title: str, plain_title: str, missing: str):
    """``title`` names the comparison (used when a branch is drawn); ``plain_title`` and the note ``missing`` are
    used when there is no branch run."""
    fig, axes = style.new_figure(width=6.8, height=3.0)
    ax = axes[0, 0]
    shade = {}
    for c in data["curves"]:
        i = shade.setdefault(c["name"].split("_")[0], -1) + 1
        shade[c["name"].split("_")[0]] = i
        col = style.colour(c["name"], i)
        style.observed(ax, c["steps"], c["obs"], col, c["name"])
        if np.any(np.isfinite(c["pred"])):
            style.theory(ax, c["steps"], c["pred"], col, c["name"])
    groups: dict[str, list[dict]] = {}   # the same branch of several seeds: one mean curve
    for b in data["branches"]:
        groups.setdefault(b["label"], []).append(b)
    for label, bs in groups.items():
        b = bs[0]
        if b.get("t0") is not None:    # a branch exists from its branch step on
            bs = [_from_branch_step(x) for x in bs]
            b = bs[0]
        col = next((style.colour(c["name"], k) for k, c in enumerate(data["curves"]) if c["name"] == b["matches"]),
                   style.RAW)
        obs = np.vstack([np.atleast_2d(x["obs"]) for x in bs if len(x["steps"]) == len(b["steps"])])
        ax.plot(b["steps"], np.nanmean(obs, axis=0), color=col, label=f"{label} (obs, n={obs.shape[0]})",
                **style.BRANCH_STYLE)
        ps = np.asarray(b.get("pred_steps", b["steps"]))
        if np.any(np.isfinite(b["pred"])):
            what = "predicted before it ran" if b.get("predicted_before") else "NQM, fitted after it ran"
            ax.plot(ps, b["pred"], color=col, linestyle=":", linewidth=1.2, label=f"{label} ({what})")
            if "pred_se" in b:
                ax.fill_between(ps, b["pred"] - 2 * b["pred_se"], b["pred"] + 2 * b["pred_se"], color=col,
                                alpha=0.15, linewidth=0)
    lo, hi = data["window"]
    ax.axvspan(lo, hi, color="#000000", alpha=0.04, linewidth=0)
    # the y range of the seed-mean curves from the window on (single-seed spikes would flatten the comparison)
    means = [np.nanmean(np.atleast_2d(c["obs"])[:, c["steps"] >= lo], axis=0) for c in data["curves"]
             if np.any(c["steps"] >= lo) and np.any(np.isfinite(c["obs"]))]
    means = [m[np.isfinite(m)] for m in means if np.any(np.isfinite(m))]
    if means:
        bottom, top = min(m.min() for m in means), max(m.max() for m in means)
        pad = 0.15 * (top - bottom + 1e-12)
        ax.set_ylim(bottom - pad, top + pad)
    if data["branches"]:   # the comparison lives in the window: show it, not the early descent
        ax.set_xlim(lo - 0.05 * (hi - lo), max(float(np.max(c["steps"])) for c in data["curves"]))
    ax.set_xlabel("step")
    ax.set_ylabel(data.get("ylabel", "eval loss"))
    if data["branches"]:
        ax.set_title(f"{title}\n(n={data['n']} seeds; shaded: fit window)")
    else:
        ax.set_title(f"{plain_title}\n(n={data['n']} seeds; shaded: fit window)")
        ax.text(0.02, 0.97, missing, transform=ax.transAxes, ha="left", va="top", fontsize=7, color="#b22222",
                wrap=True)
    style.legend(ax, outside=True)
    return fig
