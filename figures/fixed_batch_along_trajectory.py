"""F-E2 fixed-batch loss along the trajectory (theory.md §3.2, §7.2 item 2): ℓ_B(θ_t) of a training-bank batch minus
the mean held-out bank loss, vs t − s (s = the step at which B was used); NQM prediction −Σ_j h_j s_j r_j(t − s)
(r the heavy-ball impulse response: dip of Σhα_effσ², recovery in 1/(λ_eff h)).

data = {"n": int, "batches": [{"lag"[L], "rel_loss"[L], "used_at": int}], "theory": {"lag"[M], "rel_loss"[M]}}
"""

from __future__ import annotations

from figures import style


def plot(data: dict):
    """One axis: observed batches (markers) and the NQM curve (line)."""
    fig, axes = style.new_figure(width=4.0)
    ax = axes[0, 0]
    for i, b in enumerate(data["batches"]):
        ax.plot(b["lag"], b["rel_loss"], color=style.EMA_BLUES[min(i, 3)], label=f"batch used at {b['used_at']}",
                **style.OBS_STYLE)
    if data.get("theory"):
        style.theory(ax, data["theory"]["lag"], data["theory"]["rel_loss"], style.THEORY, "prediction")
    ax.axvline(0, color=style.RAW, linewidth=0.6, linestyle=":")
    ax.set_xlabel("t − s (steps since the batch was used)")
    ax.set_ylabel("ℓ_B(θ_t) − mean held-out loss")
    ax.set_title(f"fixed training batch along the trajectory (n={data['n']} run)")
    style.legend(ax)
    return fig
