"""F-a/F-b one-step probe (theory.md §3.1, §7.2 item 1): loss after one GD step of size η on a fixed training batch,
for that batch and a held-out batch, vs η/λ_eff (log). The y axis is fitted to the observed points up to OVERSHOOT×
the largest pre-step loss (the quadratic region); an inset (log y) shows every point, the overshooting large-η ones
included. Lines: the parabolas of the fitted probe moments (S, G, C) and, dashed, the prediction of the calibrated
NQM spectrum; one legend for both panels. Third panel: R² of the quadratic fits.

data = {"lam_eff": float, "n": int, "source": str,
        "rows": [{"step", "eta"[E], "loss_train"[E], "loss_heldout"[E], "loss0_train", "loss0_heldout",
                  "eta_line"[F], "pred_train"[F], "pred_heldout"[F]}, ...],   # optional: lines on a fine η grid
        "theory": {"S": float, "G": float, "C": float},       # gains: held-out Sη − Cη², training (S+G)η − Cη²
        "r2": {"step"[R], "train"[R], "heldout"[R]}}
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from common import style

OVERSHOOT = 2.5     # main axes show losses up to this multiple of the largest pre-step loss; the inset shows all


def _positive(y):
    y = np.asarray(y, float)
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)


@style.styled
def plot(data: dict):
    """Three axes: training-batch curves, held-out curves (one shared legend), R² vs step."""
    fig, axes = style.new_figure(ncols=3, height=2.7)
    ax_t, ax_h, ax_r = axes[0]
    lam, th = data["lam_eff"], data["theory"]
    shades = style.EMA_BLUES[1:]
    handles = []
    xs, ys, top = [], {"t": [], "h": []}, {"t": 0.0, "h": 0.0}
    insets = {"t": ax_t.inset_axes([0.12, 0.56, 0.36, 0.3]), "h": ax_h.inset_axes([0.12, 0.56, 0.36, 0.3])}
    for i, row in enumerate(data["rows"]):
        x = np.asarray(row["eta"], float) / lam
        eta = np.asarray(row.get("eta_line", row["eta"]), float)
        c = shades[min(i, len(shades) - 1)]
        fit_t = row["loss0_train"] - ((th["S"] + th["G"]) * eta - th["C"] * eta ** 2)
        fit_h = row["loss0_heldout"] - (th["S"] * eta - th["C"] * eta ** 2)
        for ax, key, obs, fit, pred in ((ax_t, "t", row["loss_train"], fit_t, row.get("pred_train")),
                                        (ax_h, "h", row["loss_heldout"], fit_h, row.get("pred_heldout"))):
            ax.plot(x, _positive(obs), color=c, **style.OBS_STYLE)
            insets[key].plot(x, _positive(obs), color=c, marker="o", markersize=1.5, linestyle="none")
            top[key] = max(top[key], row["loss0_train" if key == "t" else "loss0_heldout"])
            ax.plot(eta / lam, _positive(fit), color=c, **style.THEORY_STYLE)
            if pred is not None:
                ax.plot(eta / lam, _positive(pred), color=c, linestyle="--", linewidth=1.0)
            ys[key].append(_positive(obs))
        xs.append(x)
        handles.append(Line2D([], [], color=c, label=f"step {row['step']} (obs, n={data['n']} run)", **style.OBS_STYLE))
    handles += [Line2D([], [], color=style.THEORY, label="parabola of the probe moments S, G, C", **style.THEORY_STYLE),
                Line2D([], [], color=style.THEORY, linestyle="--", linewidth=1.0,
                       label=f"NQM, {data.get('source', 'calibrated')} spectrum"),
                Line2D([], [], color=style.THEORY, linewidth=0.6, linestyle=":", label="η = λ_eff")]
    x_all = np.concatenate(xs) if xs else np.array([1.0])
    x_all = x_all[np.isfinite(x_all) & (x_all > 0)]
    for ax, key, title in ((ax_t, "t", "training batch B"), (ax_h, "h", "held-out batch B′")):
        y_all = np.concatenate(ys[key]) if ys[key] else np.array([1.0])
        y_all = y_all[np.isfinite(y_all)]
        ax.set(xscale="log", xlabel="probe LR η / λ_eff", ylabel="loss after one step", title=title)
        ax.axvline(1.0, color=style.THEORY, linewidth=0.6, linestyle=":")
        ins = insets[key]
        ins.set(xscale="log", yscale="log")
        ins.tick_params(labelsize=5)
        cap = OVERSHOOT * top[key]
        x_in = np.concatenate([xx[np.asarray(yy) <= cap] for xx, yy in zip(xs, ys[key])]) if xs else x_all
        x_in = x_in[np.isfinite(x_in) & (x_in > 0)]
        if x_in.size:
            ax.set_xlim(x_in.min() / 1.5, x_in.max() * 1.5)
        inside = y_all[y_all <= cap]
        if inside.size:
            pad = 0.05 * (cap - inside.min() + 1e-12)
            ax.set_ylim(max(inside.min() - pad, 0.0), cap + pad)
        over = int(np.sum(y_all > cap))
        ins.set_title(f"all points, log y\n({over} beyond the main axes)" if over else "all points, log y",
                      fontsize=5.5, pad=1)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), frameon=False,
               fontsize=style.RC["legend.fontsize"])
    r2 = data["r2"]
    ax_r.plot(r2["step"], r2["train"], color=style.EMA_BLUES[2], label="training", **style.OBS_STYLE)
    if len(r2.get("heldout", [])):
        ax_r.plot(r2["step"], r2["heldout"], color=style.TWO_POINT_ORANGES[1], label="held-out", **style.OBS_STYLE)
    ax_r.set_xlabel("step")
    ax_r.set_ylabel("R² of quadratic fit in η")
    ax_r.set_title("quadratic-fit quality")
    style.legend(ax_r)
    return fig
