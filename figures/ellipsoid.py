"""F-f the stationary ellipsoid (theory.md §2.5, §7.2 item 6). Left: iterates of a 2-direction NQM (samples passed
in as data) on the λ-ellipse, their EMA / two-point averages inside it, the λ/2 ellipse. Right: observed distance
‖θ_avg − θ_raw‖ along the run for each variant.

data = {"iterates"[N, 2], "averages": {name: [M, 2]}, "axes_lr": (a1, a2), "axes_half": (a1, a2),
        "dist": {"steps"[T], "series": {name: [n, T]}, "n": int} | None}
"""

from __future__ import annotations

import numpy as np

from figures import style


def plot(data: dict):
    """Two axes (one if no distance series): the 2-D illustration and the observed distances."""
    has_dist = bool(data.get("dist") and data["dist"]["series"])
    fig, axes = style.new_figure(ncols=2 if has_dist else 1, width=3.2, height=3.0)
    ax = axes[0, 0]
    it = np.asarray(data["iterates"])
    ax.plot(it[:, 0], it[:, 1], color=style.RAW, label="iterates θ_t", marker=".", markersize=2, linestyle="none")
    for i, (name, pts) in enumerate(data["averages"].items()):
        pts = np.asarray(pts)
        ax.plot(pts[:, 0], pts[:, 1], color=style.colour(name, 2), label=name, marker=".", markersize=2, linestyle="none")
    t = np.linspace(0, 2 * np.pi, 200)
    for (a1, a2), lab, ls in ((data["axes_lr"], "λ ellipse", "-"), (data["axes_half"], "λ/2 ellipse", "--")):
        ax.plot(a1 * np.cos(t), a2 * np.sin(t), color=style.THEORY, linestyle=ls, linewidth=1.0, label=lab)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("u₁ᵀ(θ − θ*)")
    ax.set_ylabel("u₂ᵀ(θ − θ*)")
    ax.set_title("NQM illustration (2 directions, 2√v∞ ellipses)")
    style.legend(ax)
    if has_dist:
        ax2 = axes[0, 1]
        d = data["dist"]
        shade: dict[str, int] = {}
        for name, ys in d["series"].items():
            k = name.split("_")[0]
            shade[k] = shade.get(k, -1) + 1
            style.observed(ax2, d["steps"], ys, style.colour(name, shade[k]), name)
        ax2.set_xlabel("step")
        ax2.set_ylabel("‖θ_avg − θ_raw‖₂")
        ax2.set_title(f"distance of each average from the iterate (n={d['n']})")
        style.legend(ax2)
    return fig
