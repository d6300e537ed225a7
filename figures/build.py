"""Regenerate every figure that the given run directories allow (design.md §3.8).

    python -m figures.build RUN_DIR [RUN_DIR ...] [--out figures/out]
    python -m figures.build                     # theory-only figures (nqm_equivalence_grid)

Each figure is ``<name>.png`` (dpi ~110) plus ``<name>.json`` (provenance: run dirs, their git sha, the command).
The figure modules only draw; the data they draw is prepared here from run directories (via compare.analysis)
and from theory/ closed forms. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from figures import (ellipsoid, ema_equivalence, fixed_batch_along_trajectory, gradient_alignment,
                     nqm_equivalence_grid, one_step_probe, style, swa_equivalence, two_point_vs_distance)
from theory.cli import OneLineParser, pipe_safe_stdout

FIGURES = {"one_step_probe": one_step_probe.plot, "fixed_batch_along_trajectory": fixed_batch_along_trajectory.plot,
           "ema_equivalence": ema_equivalence.plot, "swa_equivalence": swa_equivalence.plot,
           "two_point_vs_distance": two_point_vs_distance.plot, "ellipsoid": ellipsoid.plot,
           "nqm_equivalence_grid": nqm_equivalence_grid.plot, "gradient_alignment": gradient_alignment.plot}
DEFAULT_OUT = Path("figures/out")
ELLIPSE_SEED = 0            # fixed seed of the 2-direction NQM illustration samples (figure is deterministic)


# ------------------------------------------------------------------------------------------------- data prep

def theory_grid() -> dict:
    """Data of nqm_equivalence_grid from theory.stationary closed forms (theory.md §3.3-§3.5, §2.6)."""
    from theory import spec, stationary
    alpha = 0.05
    ratio = np.logspace(-3, np.log10(0.99 / alpha), 60)     # β = ratio·α < 1
    beta = ratio * alpha
    var = np.array([float(stationary.ema_variance(alpha, float(1 - b), 1.0, 0.0)) for b in beta])
    exact = stationary.equivalent_alpha(var, 1.0, 0.0) / alpha
    harmonic = 1.0 / (1.0 + alpha / beta)
    n = np.unique(np.logspace(0, 3.5, 40).astype(int))
    v_swa = np.array([float(stationary.swa_variance(alpha, int(k), 1.0, 0.0)) for k in n])
    from theory import moments
    model = spec.NQM(h=[1.0], sigma2=1.0, v0=float(stationary.iterate_variance(alpha, 1.0, 0.0)))
    sched = spec.Hyperbolic(lr=alpha, start=0, tau=1.0 / alpha)
    v_hyp = moments.moments(model, spec.SGD(sched), spec.NoAverage(), n).var_x[:, 0]
    k = np.unique(np.logspace(0, 3, 40).astype(int))
    v_tp = np.array([float(stationary.two_point_variance(alpha, int(g), 1.0, 0.0)) for g in k])
    v_tp = v_tp / float(stationary.iterate_variance(alpha, 1.0, 0.0))
    mu = 0.9
    a_eff = np.logspace(-3, 0, 40)
    hb = stationary.iterate_variance(a_eff * (1 - mu), 1.0, mu)
    plain = stationary.iterate_variance(a_eff, 1.0, 0.0)
    return {"ema": {"ratio": ratio, "exact": exact, "harmonic": harmonic, "alpha": alpha},
            "swa": {"n": n, "var_swa": v_swa, "var_hyperbolic": v_hyp, "alpha": alpha},
            "two_point": {"k": k, "var_ratio": v_tp, "alpha": alpha},
            "momentum": {"alpha_eff": a_eff, "heavy_ball": hb, "plain": plain, "mu": mu}}


def _probe_data(a) -> dict | None:
    r = a.setup.base[0]
    tr = r.trajectory
    if "probe/step" not in tr:
        return None
    st = tr["probe/step"]
    lo, hi = a.cal.window
    idx = np.flatnonzero((st >= lo) & (st <= hi))
    pick = idx[np.linspace(0, idx.size - 1, min(3, idx.size)).astype(int)] if idx.size else []
    rows = [{"step": int(st[i]), "eta": tr["probe/eta"][i], "loss_train": tr["probe/loss_train"][i],
             "loss_heldout": tr["probe/loss_heldout"][i], "loss0_train": float(tr["probe/loss0_train"][i]),
             "loss0_heldout": float(tr["probe/loss0_heldout"][i])} for i in pick]
    pm = a.cal.probes
    r2 = {"step": st, "train": tr["probe/fit_r2"] if "probe/fit_r2" in tr else np.full(st.size, np.nan),
          "heldout": tr["probe/fit_r2_heldout"] if "probe/fit_r2_heldout" in tr else []}
    return {"lam_eff": a.cal.lam_eff, "n": len(a.setup.base), "rows": rows,
            "theory": {"S": pm.S[0], "G": pm.G[0], "C": pm.C[0]}, "r2": r2}


def _bank_data(a) -> dict | None:
    from compare.synthetic import impulse
    tr = a.setup.base[0].trajectory
    if "bank/step" not in tr or "static/bank_used_at" not in tr:
        return None
    st, used = tr["bank/step"], tr["static/bank_used_at"]
    held = np.nanmean(tr["bank/heldout_loss"], axis=1) if "bank/heldout_loss" in tr else 0.0
    batches = [{"lag": st - s, "rel_loss": tr["bank/train_loss"][:, j] - held, "used_at": int(s)}
               for j, s in enumerate(used) if s >= 0][:4]
    if not batches:
        return None
    lag = np.arange(-50, int(max(b["lag"].max() for b in batches)) + 1)
    pred = np.zeros(lag.size)
    for h, s in zip(a.cal.h, a.cal.s):   # −Σ h s r(lag): theory.md §3.2 with the heavy-ball impulse response
        r = impulse(a.cal.lr * h, a.cal.momentum, int(lag.max()) + 2)
        pred -= np.where(lag > 0, h * s * r[np.clip(lag, 0, None)], 0.0)
    return {"n": 1, "batches": batches, "theory": {"lag": lag, "rel_loss": pred}}


def _equiv_data(a, kinds: tuple[str, ...]) -> dict | None:
    names = [n for n, v in a.variants.items() if v.kind in kinds]
    if not names:
        return None
    curves = [{"name": n, "steps": a.curves[n].steps, "obs": a.curves[n].obs, "pred": a.curves[n].pred}
              for n in ["raw", *names]]
    br = [{"label": f"branch λ={b['lr']:.3g} ({b['kind']})", "matches": b["matches"], "steps": b["curve"].steps,
           "obs": b["curve"].obs, "pred": b["curve"].pred} for b in a.branches if b.get("matches") in names]
    return {"n": len(a.setup.base), "window": a.cal.window, "curves": curves, "branches": br,
            "ylabel": f"eval {a.cal.split} loss"}


def _two_point_data(a) -> dict | None:
    from compare import predict
    from compare.load import Variant
    names = sorted([n for n, v in a.variants.items() if v.kind == "two_point"], key=lambda n: a.variants[n].gap)
    if not names:
        return None
    lo, hi = a.cal.window

    def wmean(c):
        m = (c.steps >= lo) & (c.steps <= hi)
        return np.nanmean(c.obs[:, m], axis=1)
    obs = np.column_stack([wmean(a.curves[n]) for n in names])
    gaps = np.array([a.variants[n].gap for n in names])
    kk = np.unique(np.logspace(0, np.log10(max(gaps.max(), 10) * 3), 30).astype(int))
    probe_step = np.array([hi])
    th = [float(predict.variant_excess(a.cal, Variant(f"two_point_k{k}", "two_point", gap=int(k)), a.setup.config,
                                       probe_step)[0]) + a.floor if k <= hi else np.nan for k in kk]
    half = [b for b in a.branches if b.get("matches") in names and abs(b.get("lr_ratio", 0) - 0.5) < 0.2]
    half_v = float(np.nanmean([np.nanmean(b["curve"].obs[0, b["curve"].steps >= b["settle_step"]]) for b in half])) \
        if half else None
    base = float(np.nanmean(wmean(a.curves["raw"])))
    return {"n": len(a.setup.base), "gaps": gaps, "obs": obs, "theory": {"gaps": kk, "loss": np.array(th)},
            "baseline": base, "half_lr": half_v, "ylabel": f"window-mean eval {a.cal.split} loss"}


def _ellipsoid_data(a) -> dict:
    from theory import stationary
    rng = np.random.default_rng(ELLIPSE_SEED)
    h = np.array([1.0, 0.25])       # two illustrative curvatures, 1/LR units; α = 0.1·h
    lr, T, k = 0.1, 4000, 400
    x = np.zeros((T, 2))
    for t in range(1, T):           # plain SGD x ← (1 − α)x + αε (theory.md §2.2), the sample cloud only
        x[t] = (1 - lr * h) * x[t - 1] + lr * h * rng.normal(0, 1, 2)
    x = x[1000:]
    ema = np.zeros_like(x)
    ema[0] = x[0]
    for t in range(1, len(x)):
        ema[t] = 0.99 * ema[t - 1] + 0.01 * x[t]
    two = 0.5 * (x[k:] + x[:-k])
    v = stationary.iterate_variance(lr * h, 1.0, 0.0)
    v2 = stationary.iterate_variance(0.5 * lr * h, 1.0, 0.0)
    dist = None
    d_names = [k2[len("dist/"):] for k2 in a.setup.base[0].trajectory.series if k2.startswith("dist/") and k2 != "dist/step"]
    if d_names:
        from compare.load import stack
        ser = {}
        steps = a.setup.base[0].trajectory["dist/step"]
        for nm in sorted(d_names):
            _, ser[nm] = stack(a.setup.base, f"dist/{nm}", steps)
        dist = {"steps": steps, "series": ser, "n": len(a.setup.base)}
    return {"iterates": x[::10], "averages": {"ema_0.99": ema[::10], f"two_point_k{k}": two[::10]},
            "axes_lr": tuple(2 * np.sqrt(v)), "axes_half": tuple(2 * np.sqrt(v2)), "dist": dist}


def _alignment_data(analyses) -> dict | None:
    from compare.load import stack
    runs = []
    for a in analyses:
        if "align/cos" not in a.setup.base[0].trajectory:
            continue
        steps, cos = stack(a.setup.base, "align/cos")
        lo, hi = a.cal.window
        m = (steps >= lo) & (steps <= hi)
        per = np.nanmean(cos[:, m], axis=1)
        runs.append({"label": f"λ={a.cal.lr:g}", "steps": steps, "cos": cos, "n": len(a.setup.base),
                     "alpha_eff": float(np.sum(a.cal.h ** 3 * a.cal.s) / np.sum(a.cal.h ** 2 * a.cal.s)) * a.cal.lam_eff,
                     "cos_mean": float(np.nanmean(per)), "cos_sd": float(np.nanstd(per, ddof=1)) if per.size > 1 else np.nan})
    if not runs:
        return None
    ae = np.logspace(-3, 0, 40)
    return {"runs": runs, "theory": {"alpha_eff": ae, "cos": np.sqrt(ae / 2)}}


def figure_data(analyses: list) -> dict[str, dict]:
    """{figure name: data} for every figure the analyses allow (theory grid always)."""
    out: dict[str, dict] = {"nqm_equivalence_grid": theory_grid()}
    if analyses:
        a = analyses[0]
        for name, d in (("one_step_probe", _probe_data(a)), ("fixed_batch_along_trajectory", _bank_data(a)),
                        ("ema_equivalence", _equiv_data(a, ("ema",))), ("swa_equivalence", _equiv_data(a, ("swa",))),
                        ("two_point_vs_distance", _two_point_data(a)), ("ellipsoid", _ellipsoid_data(a)),
                        ("gradient_alignment", _alignment_data(analyses))):
            if d is not None:
                out[name] = d
    return out


# ------------------------------------------------------------------------------------------------- rendering

def render(analyses: list, out: Path, command: list[str]) -> list[Path]:
    """Plot and write every available figure as PNG + provenance JSON into ``out``. Returns the PNG paths."""
    from theory.rundir import atomic_write_bytes, atomic_write_json
    runs = [r for a in analyses for r in (*a.setup.base, *a.setup.branches)]
    prov_runs = [{"path": str(r.path), "git_sha": (r.env.get("git") or {}).get("sha"),
                  "git_dirty": (r.env.get("git") or {}).get("dirty")} for r in runs]
    written = []
    for name, data in figure_data(analyses).items():
        fig = FIGURES[name](data)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=style.DPI)
        png = atomic_write_bytes(Path(out) / f"{name}.png", buf.getvalue())
        atomic_write_json(Path(out) / f"{name}.json", {"figure": name, "runs": prov_runs if name != "nqm_equivalence_grid" else [],
                                                       "command": command, "module": f"figures.{name}"})
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m figures.build", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run directories (seeds and branches of one or more setups)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default figures/out/)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which eval loss to compare")
    args = p.parse_args(argv)
    from compare.analysis import analyse
    from compare.load import group_runs, load_runs
    from theory.rundir import RunDirError
    try:
        analyses = [analyse(s, split=args.split) for s in group_runs(load_runs(args.runs))] if args.runs else []
    except (RunDirError, ValueError, KeyError) as e:
        print(f"figures.build: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"figures.build: --out {out} is a file; give a folder for the PNGs", file=sys.stderr)
        return 2
    try:
        paths = render(analyses, out, ["python", "-m", "figures.build", *(argv if argv is not None else sys.argv[1:])])
    except OSError as e:   # each figure is written atomically: the ones before the failure are complete
        print(f"figures.build: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    with pipe_safe_stdout():   # `... | head`: every file is still written, no BrokenPipeError traceback
        code = main()
    sys.exit(code)
