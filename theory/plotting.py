"""Quick-look figures of one theory.predict run (matplotlib imported lazily: never on the --json path).

Drawn with matplotlib's object API (``Figure``, no pyplot): saving a PNG needs no backend, so neither the backend
nor any global rcParams are touched (matplotlib's defaults apply, or whatever the caller set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.rundir import atomic_write_bytes


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_prediction(series: dict, cfg: dict, path: Path) -> Path:
    """Predicted excess loss ½Σh(m²+v) of the raw iterate, the average and its equivalent-LR run (theory.md §3.3-3.5)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    s = series["nqm/step"]
    ax.plot(s, series["nqm/loss_raw"], color="0.5", label="raw iterate")
    ax.plot(s, series["nqm/loss_avg"], color="tab:blue", label=cfg["avg_label"])
    ax.plot(s, series["nqm/loss_equiv"], color="k", ls="--", label="equivalent LR (per direction)")
    if cfg["directions"] > 1:
        ax.plot(s, series["nqm/loss_equiv_scalar"], color="tab:red", ls=":", label="equivalent scalar LR")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("expected excess loss")
    ax.set_title(f"NQM, lr={cfg['lr']:g}, μ={cfg['momentum']:g}, {cfg['directions']} direction(s)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_inverse(series: dict, cfg: dict, path: Path) -> Path:
    """Weights over constant-LR iterates that reproduce a schedule's noise kernel (theory.md §3.6)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 4.2))
    a1, a2 = fig.subplots(2, 1, sharex=True)
    s = series["inverse/step"]
    a1.plot(s, series["inverse/lr"], color="k")
    a1.set_ylabel("scheduled LR")
    w = np.asarray(series["inverse/weight"])
    a2.plot(s, w, color="tab:blue")
    a2.axhline(0, color="0.7", lw=0.8)
    a2.set_ylabel("weight of θ_t")
    a2.set_xlabel("step t of the constant-LR run")
    a1.set_title(f"{cfg['schedule']} emulated by averaging constant-LR ({cfg['lr']:g}) iterates", fontsize=9)
    return _save(fig, path)
