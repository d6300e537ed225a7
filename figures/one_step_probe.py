"""F-a/F-b one-step probe (theory.md §3.1, §7.2 item 1): loss after one GD step of size η on a fixed training batch,
for that batch and a held-out batch, vs η/λ_eff; calibrated NQM parabolas as lines; R² of the quadratic fits.

data = {"lam_eff": float, "n": int,
        "rows": [{"step", "eta"[E], "loss_train"[E], "loss_heldout"[E], "loss0_train", "loss0_heldout"}, ...],
        "theory": {"S": float, "G": float, "C": float},       # gains: held-out Sη − Cη², training (S+G)η − Cη²
        "r2": {"step"[R], "train"[R], "heldout"[R]}}
"""

from __future__ import annotations

import numpy as np

from figures import style


def plot(data: dict):
    """Three axes: training-batch curves, held-out curves, R² vs step."""
    fig, axes = style.new_figure(ncols=3)
    ax_t, ax_h, ax_r = axes[0]
    lam, th = data["lam_eff"], data["theory"]
    shades = style.EMA_BLUES
    for i, row in enumerate(data["rows"]):
        x = np.asarray(row["eta"], float) / lam
        c = shades[min(i, len(shades) - 1)]
        ax_t.plot(x, row["loss_train"], color=c, label=f"step {row['step']} (obs)", **style.OBS_STYLE)
        ax_h.plot(x, row["loss_heldout"], color=c, label=f"step {row['step']} (obs)", **style.OBS_STYLE)
        eta = np.asarray(row["eta"], float)
        ax_t.plot(x, row["loss0_train"] - ((th["S"] + th["G"]) * eta - th["C"] * eta ** 2), color=c, **style.THEORY_STYLE)
        ax_h.plot(x, row["loss0_heldout"] - (th["S"] * eta - th["C"] * eta ** 2), color=c, **style.THEORY_STYLE)
    for ax, title in ((ax_t, "training batch B"), (ax_h, "held-out batch B′")):
        ax.set_xscale("log")
        ax.set_xlabel("probe LR η / λ_eff")
        ax.set_ylabel("loss after one step")
        ax.set_title(f"{title}: obs (markers), NQM (lines), n={data['n']}")
        ax.axvline(1.0, color=style.THEORY, linewidth=0.6, linestyle=":")
    lo = min(np.nanmin(r["loss_train"]) for r in data["rows"]) if data["rows"] else 0
    hi = max(max(r["loss0_train"], r["loss0_heldout"]) for r in data["rows"]) * 2.0 if data["rows"] else 1
    for ax in (ax_t, ax_h):
        ax.set_ylim(min(lo, 0) - 0.02 * hi, hi)
    style.legend(ax_t)
    r2 = data["r2"]
    ax_r.plot(r2["step"], r2["train"], color=style.EMA_BLUES[2], label="training", **style.OBS_STYLE)
    if len(r2.get("heldout", [])):
        ax_r.plot(r2["step"], r2["heldout"], color=style.TWO_POINT_ORANGES[1], label="held-out", **style.OBS_STYLE)
    ax_r.set_xlabel("step")
    ax_r.set_ylabel("R² of quadratic fit in η")
    ax_r.set_title("quadratic-fit quality")
    style.legend(ax_r)
    return fig
