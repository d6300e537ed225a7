"""F-f the stationary ellipsoid (theory.md §2.5, §7.2 item 6). Left: the stationary NQM at the calibrated sharpest and
flattest scales (each axis in units of that scale's √v∞, so the raw iterate's 1-s.d. ellipse is the unit circle):
iterate samples, the λ/2 ellipse and the 1-s.d. ellipse of each of the run's own averages (its EMA decays, SWA,
two-point lags, N-point, as configured) at the end of the fit window. Right: observed ‖θ_avg − θ_raw‖ along the run.

data = {"iterates"[N, 2], "averages": {name: (a1, a2)}, "axes_half": (a1, a2), "step": int,
        "scales": [{"h", "alpha_eff"}, {"h", "alpha_eff"}], "single_scale": bool,
        "dist": {"steps"[T], "series": {name: [n, T]}, "n": int} | None}
"""

from __future__ import annotations

import numpy as np

from common import style

LIM = 1.5           # the left axes span ±LIM √v∞ (samples beyond are cut; every ellipse lies inside the unit circle)


@style.styled
def plot(data: dict):
    """Two axes (one if no distance series): the NQM ellipses of the run's variants and the observed distances."""
    has_dist = bool(data.get("dist") and data["dist"]["series"])
    fig, axes = style.new_figure(ncols=2 if has_dist else 1, width=3.6, height=3.0)
    ax = axes[0, 0]
    names = list(data["averages"]) + [n for n in ((data.get("dist") or {}).get("series") or {})
                                      if n not in data["averages"]]
    cols = style.variant_colours(names)
    it = np.asarray(data["iterates"])
    ax.plot(it[:, 0], it[:, 1], color=style.RAW, marker=".", markersize=1.5, linestyle="none", alpha=0.5,
            label="iterates θ_t (NQM samples)")
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color=style.THEORY, linewidth=1.0, label="iterate at λ (1 s.d.)")
    a1, a2 = data["axes_half"]
    ax.plot(a1 * np.cos(t), a2 * np.sin(t), color=style.THEORY, linewidth=1.0, linestyle="--", label="iterate at λ/2")
    for name, (a1, a2) in data["averages"].items():
        ax.plot(a1 * np.cos(t), a2 * np.sin(t), color=cols[name], linewidth=1.2, label=name)
    ax.set_xlim(-LIM, LIM)
    ax.set_ylim(-LIM, LIM)
    ax.set_aspect("equal")
    sc = data["scales"]
    ax.set_xlabel(f"sharp scale h={sc[0]['h']:.3g} (α_eff={sc[0]['alpha_eff']:.2g}), units of √v∞")
    ax.set_ylabel(f"{'same' if data.get('single_scale') else 'flat'} scale h={sc[1]['h']:.3g} "
                  f"(α_eff={sc[1]['alpha_eff']:.2g})")
    ax.set_title(f"calibrated NQM, step {data['step']}: 1-s.d. ellipses")
    if has_dist:
        ax2 = axes[0, 1]
        d = data["dist"]
        for name, ys in d["series"].items():
            style.observed(ax2, d["steps"], ys, cols[name], name)
        ax2.set_xlabel("step")
        ax2.set_ylabel("‖θ_avg − θ_raw‖₂")
        ax2.set_title(f"observed distance from the iterate (n={d['n']} seeds)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False,
               fontsize=style.RC["legend.fontsize"], title="the run's variants (both panels)",
               title_fontsize=style.RC["legend.fontsize"])
    return fig
