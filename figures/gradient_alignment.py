"""F-h gradient alignment (theory.md §3.7, §7.2 item 8): cos(g_B, ĝ) along the run, and its window mean vs the
effective step fraction α_eff = λ_eff·Σh³s/Σh²s of the calibrated spectrum (horizontal bar: the per-seed fits),
with the spectrum's own prediction (open marker) and the one-scale heavy-ball line √(v∞/(v∞ + σ²)) (≈ √(α_eff/2)
for small α_eff) drawn over a range that covers every measured α_eff.

data = {"runs": [{"label", "steps"[T], "cos"[n, T], "alpha_eff": float, "alpha_eff_seeds"[k], "cos_pred": float,
                  "cos_mean": float, "cos_sd": float, "n"}],
        "theory": {"alpha_eff"[M], "cos"[M], "mu": float}}
"""

from __future__ import annotations

import numpy as np

from common import style


@style.styled
def plot(data: dict):
    """Two axes: cos along the trajectory per setup; window mean vs α_eff with the NQM line."""
    fig, axes = style.new_figure(ncols=2)
    ax1, ax2 = axes[0]
    th = data["theory"]
    style.theory(ax2, th["alpha_eff"], th["cos"], style.THEORY, f"one scale, μ={th.get('mu', 0):g}")
    for i, r in enumerate(data["runs"]):
        col = style.EMA_BLUES[min(i + 1, 3)]
        style.observed(ax1, r["steps"], r["cos"], col, r["label"])
        seeds = np.asarray(r.get("alpha_eff_seeds", []), float)
        seeds = seeds[np.isfinite(seeds)]
        xerr = None
        if seeds.size:
            lo, hi = min(seeds.min(), r["alpha_eff"]), max(seeds.max(), r["alpha_eff"])
            xerr = [[r["alpha_eff"] - lo], [hi - r["alpha_eff"]]]
        ax2.errorbar([r["alpha_eff"]], [r["cos_mean"]], yerr=[0 if not np.isfinite(r["cos_sd"]) else r["cos_sd"]],
                     xerr=xerr, color=col, marker="o", markersize=4, linestyle="none",
                     label=f"{r['label']} (obs, n={r['n']})")
        if np.isfinite(r.get("cos_pred", np.nan)):
            ax2.plot([r["alpha_eff"]], [r["cos_pred"]], color=col, marker="o", markersize=6, markerfacecolor="none",
                     linestyle="none", label=f"{r['label']} (NQM, calibrated spectrum)")
    ax1.set(xlabel="step", ylabel="cos(g_B, ĝ)", title="alignment along the run")
    ax2.set(xscale="log", xlabel="α_eff = λ_eff·Σh³s/Σh²s", ylabel="cos(g_B, ĝ)",
            title="window mean vs α_eff (bar: per-seed fits)")
    style.legend(ax1)
    style.legend(ax2)
    return fig
