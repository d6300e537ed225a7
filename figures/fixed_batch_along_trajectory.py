"""F-E2 fixed-batch loss along the trajectory (theory.md §3.2, §7.2 item 2): ℓ_B(θ_t) of the training-bank batches
minus the mean held-out bank loss at t, aligned on x = t − s (s = the step that trained on B) and averaged over the
batches and seeds (markers, ±1 s.e. band); the held-out bank mean is the zero line. NQM line: the predicted dip
(seen − unseen batch: Σhασ² right after the step, deepening over ~1/(1−μ) steps with momentum) and its recovery over
1/(λ_eff h), anchored at the observed pre-use level. Left: every aligned step; right: zoom on the use step.

data = {"n": int (runs), "n_curves": int, "lag"[L], "mean"[L], "se"[L], "count"[L], "pre_level": float,
        "every": int, "reference": bool, "theory": {"lag"[M], "rel_loss"[M], "dip": float} | None}
"""

from __future__ import annotations

import numpy as np

from common import style

ZOOM = (-10, 40)    # the zoom panel spans these many bank intervals around the use step


@style.styled
def plot(data: dict):
    """Two axes (full range, zoom on the use step), each with the aligned mean (markers, s.e. band), the held-out
    reference, the pre-use level and the NQM line; one legend below."""
    fig, axes = style.new_figure(ncols=2, width=3.2, height=2.8)
    x, y, se = np.asarray(data["lag"]), np.asarray(data["mean"]), np.asarray(data["se"])
    col = style.EMA_BLUES[2]
    th = data.get("theory")
    every = max(int(data.get("every", 1)), 1)
    for ax in axes[0]:
        ax.plot(x, y, color=col, label=f"training-bank batches (obs, {data['n_curves']} curves, n={data['n']} runs)",
                **style.OBS_STYLE)
        if np.isfinite(se).any():
            ax.fill_between(x, y - se, y + se, color=col, alpha=0.25, linewidth=0)
        if data.get("reference", True):
            ax.axhline(0.0, color=style.RAW, linewidth=1.0, label="held-out bank mean (reference)")
        ax.axhline(data["pre_level"], color=col, linewidth=0.6, linestyle=":", label="pre-use level (obs)")
        if th:
            rel = np.asarray(th["rel_loss"]) - data["pre_level"]
            k = int(np.nanargmin(rel))
            style.theory(ax, th["lag"], th["rel_loss"], style.THEORY,
                         f"Σhασ²={th['dip']:.2g} at t−s=1, deepest {-rel[k]:.2g} at t−s={int(th['lag'][k])}")
        ax.axvline(0, color=style.RAW, linewidth=0.6, linestyle=":")
        ax.set_xlabel("t − s (steps since the batch was trained on)")
    ax1, ax2 = axes[0]
    lo, hi = ZOOM[0] * every, ZOOM[1] * every
    ax2.set_xlim(lo, hi)
    zoom = (x >= lo) & (x <= hi)
    vals = [y[zoom] - np.nan_to_num(se[zoom]), y[zoom] + np.nan_to_num(se[zoom]), [0.0]]
    if th:
        zt = (np.asarray(th["lag"]) >= lo) & (np.asarray(th["lag"]) <= hi)
        vals.append(np.asarray(th["rel_loss"])[zt])
    v = np.concatenate([np.ravel(a) for a in vals])
    v = v[np.isfinite(v)]
    if v.size:
        pad = 0.08 * (v.max() - v.min() + 1e-12)
        ax2.set_ylim(v.min() - pad, v.max() + pad)
    ax1.set_ylabel("ℓ_B(θ_t) − mean held-out bank loss" if data.get("reference", True) else "ℓ_B(θ_t)")
    ax1.set_title("aligned on the use step s (all steps)")
    ax2.set_title(f"zoom: {ZOOM[0]} to {ZOOM[1]} bank intervals around s")
    fig.suptitle("fixed training batch along the trajectory", fontsize=style.RC["axes.titlesize"])
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False,
               fontsize=style.RC["legend.fontsize"])
    return fig
