"""F-e two-point averaging vs the distance k between the points (theory.md §3.5, §7.2 item 5): window-mean eval loss
of ½(θ_t + θ_{t−k}) vs k (log); NQM line (Var ∝ (1 + autocorrelation(k))/2); horizontal lines for the raw baseline
and, if given, the λ/2 branch.

data = {"n": int, "gaps"[G], "obs"[n, G], "theory": {"gaps"[M], "loss"[M]}, "baseline": float,
        "baseline_pred": float, "half_lr": float | None, "ylabel": str}
"""

from __future__ import annotations

import numpy as np

from common import style


@style.styled
def plot(data: dict):
    """One axis: observed points with seed band, the NQM curve, baseline and λ/2 lines."""
    fig, axes = style.new_figure(width=3.8)
    ax = axes[0, 0]
    style.observed(ax, data["gaps"], data["obs"], style.TWO_POINT_ORANGES[1], "two-point")
    if data.get("theory"):
        style.theory(ax, data["theory"]["gaps"], data["theory"]["loss"], style.TWO_POINT_ORANGES[2], "two-point")
    ax.axhline(data["baseline"], color=style.RAW, linewidth=1.0, label="raw baseline (obs)")
    if data.get("half_lr") is not None and np.isfinite(data["half_lr"]):
        ax.axhline(data["half_lr"], color=style.TWO_POINT_ORANGES[3], label="λ/2 branch (obs)", **style.BRANCH_STYLE)
    ax.set_xscale("log")
    ax.set_xlabel("distance k between the two points (steps)")
    ax.set_ylabel(data.get("ylabel", "window-mean eval loss"))
    ax.set_title(f"two-point average vs distance (n={data['n']} seeds)")
    style.legend(ax)
    return fig
