"""Theory-only grid (theory.md §3.3-§3.5, §2.6, §7.2 item 7), all curves passed in as data:
(a) EMA α_eq/α vs β/α, exact vs the harmonic rule 1/α_eq = 1/α + 1/β; (b) SWA Var_n vs n against the hyperbolic
cooldown's variance; (c) two-point Var/v∞ = (1 + a^k)/2 vs k; (d) heavy-ball v∞ vs plain SGD at α_eff = α/(1−μ).

data = {"ema": {"ratio"[M], "exact"[M], "harmonic"[M], "alpha": float},
        "swa": {"n"[M], "var_swa"[M], "var_hyperbolic"[M], "alpha": float},
        "two_point": {"k"[M], "var_ratio"[M], "alpha": float},
        "momentum": {"alpha_eff"[M], "heavy_ball"[M], "plain"[M], "mu": float}}
"""

from __future__ import annotations

from common import style


@style.styled
def plot(data: dict):
    """Four axes, two lines each except two-point (one line)."""
    fig, axes = style.new_figure(ncols=2, nrows=2, width=3.2, height=2.4)
    (a, b), (c, d) = axes
    e = data["ema"]
    a.plot(e["ratio"], e["exact"], color=style.EMA_BLUES[2], label="exact", **style.THEORY_STYLE)
    a.plot(e["ratio"], e["harmonic"], color=style.EMA_BLUES[0], linestyle="--", label="harmonic 1/α+1/β")
    a.set(xscale="log", yscale="log", xlabel="β/α", ylabel="α_eq/α", title=f"EMA (α={e['alpha']:g})")
    s = data["swa"]
    b.plot(s["n"], s["var_swa"], color=style.SWA, label="SWA window n", **style.THEORY_STYLE)
    b.plot(s["n"], s["var_hyperbolic"], color=style.SWA, linestyle="--", label="λ/(1+λhn) cooldown")
    b.set(xscale="log", yscale="log", xlabel="n (steps since start)", ylabel="Var / σ²", title=f"SWA (α={s['alpha']:g})")
    t = data["two_point"]
    c.plot(t["k"], t["var_ratio"], color=style.TWO_POINT_ORANGES[1], label="(1 + a^k)/2", **style.THEORY_STYLE)
    c.set(xscale="log", xlabel="gap k (steps)", ylabel="Var(z)/v∞", title=f"two-point (α={t['alpha']:g})")
    m = data["momentum"]
    d.plot(m["alpha_eff"], m["heavy_ball"], color=style.THEORY, label=f"heavy ball μ={m['mu']:g}", **style.THEORY_STYLE)
    d.plot(m["alpha_eff"], m["plain"], color=style.RAW, linestyle="--", label="plain SGD at α_eff")
    d.set(xscale="log", yscale="log", xlabel="α_eff = λh/(1−μ)", ylabel="v∞ / σ²", title="momentum mapping")
    for ax in (a, b, c, d):
        style.legend(ax)
    return fig
