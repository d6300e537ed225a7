"""The calibration input (theory.md §3.5, §3.8a; compare/pairs.py): the structure function D(τ) = 8[½(L_t + L_{t−τ})
− L(½(θ_t + θ_{t−τ}))] of the raw trajectory, measured from the run's two-point averages of raw iterates over the
fit window, per seed (points, block s.e. bars) and pooled, with the NQM D(τ) of the fitted spectrum (line) from
τ = 1 to twice the largest lag; log τ.

data = {"n": int, "seeds": [{"label", "lags"[K], "D"[K], "se"[K]}], "pooled": {"lags"[K], "D"[K], "se"[K]},
        "model": {"tau"[M], "D"[M]}, "fit": {"h"[J], "s"[J], "alpha_eff"[J]}, "window": (lo, hi), "ylabel": str}
"""

from __future__ import annotations

import numpy as np

from common import style


@style.styled
def plot(data: dict):
    """One axis: per-seed points, pooled points with error bars, the fitted NQM line."""
    fig, axes = style.new_figure(width=4.4, height=2.8)
    ax = axes[0, 0]
    seeds = data["seeds"]
    shift = np.linspace(-0.04, 0.04, len(seeds)) if len(seeds) > 1 else [0.0]   # log-x offsets so bars do not overlap
    for i, s in enumerate(seeds if len(seeds) > 1 else []):   # one seed: its points are the pooled ones
        ax.errorbar(np.asarray(s["lags"]) * 10 ** shift[i], s["D"], yerr=np.nan_to_num(s["se"]), color=style.RAW,
                    alpha=0.6, marker="o", markersize=2.5, linestyle="none", elinewidth=0.6,
                    label="per seed (obs ± block s.e.)" if i == 0 else None)
    p = data["pooled"]
    ax.errorbar(p["lags"], p["D"], yerr=np.nan_to_num(p["se"]), color=style.TWO_POINT_ORANGES[2], marker="o",
                markersize=4, linestyle="none", capsize=2, label=f"pooled (obs, n={data['n']})")
    fit = data["fit"]
    scales = ", ".join(f"α_eff={a:.2g}" for a in fit["alpha_eff"])
    style.theory(ax, data["model"]["tau"], data["model"]["D"], style.THEORY, f"fitted: {scales}")
    ax.set_xscale("log")
    ax.set_xlabel("lag τ between the two raw iterates (steps)")
    ax.set_ylabel(data.get("ylabel", "D(τ)"))
    lo, hi = data["window"]
    ax.set_title(f"calibration input: D(τ) from two-point averages of raw iterates\n"
                 f"(fit window steps {lo}–{hi}; line: NQM D(τ) of the fitted spectrum)")
    style.legend(ax)
    return fig
