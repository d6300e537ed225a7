"""F-h gradient alignment (theory.md §3.7, §7.2 item 8): cos(g_B, ĝ) along the run, and its window mean vs the
effective step fraction α_eff = λ_eff·h with the NQM line √(α_eff/2).

data = {"runs": [{"label", "steps"[T], "cos"[n, T], "alpha_eff": float, "cos_mean": float, "cos_sd": float, "n"}],
        "theory": {"alpha_eff"[M], "cos"[M]}}
"""

from __future__ import annotations

import numpy as np

from figures import style


def plot(data: dict):
    """Two axes: cos along the trajectory per setup; window mean vs α_eff with the √(α_eff/2) line."""
    fig, axes = style.new_figure(ncols=2)
    ax1, ax2 = axes[0]
    for i, r in enumerate(data["runs"]):
        col = style.EMA_BLUES[min(i + 1, 3)]
        style.observed(ax1, r["steps"], r["cos"], col, r["label"])
        ax2.errorbar([r["alpha_eff"]], [r["cos_mean"]], yerr=[0 if not np.isfinite(r["cos_sd"]) else r["cos_sd"]],
                     color=col, marker="o", markersize=4, linestyle="none", label=f"{r['label']} (obs, n={r['n']})")
    style.theory(ax2, data["theory"]["alpha_eff"], data["theory"]["cos"], style.THEORY, "√(α_eff/2)")
    ax1.set(xlabel="step", ylabel="cos(g_B, ĝ)", title="alignment along the run")
    ax2.set(xscale="log", xlabel="α_eff = λh/(1−μ)", ylabel="cos(g_B, ĝ)", title="window mean vs α_eff")
    style.legend(ax1)
    style.legend(ax2)
    return fig
