"""Predict what an averaging does, and which LR schedule it is equivalent to, in the noisy-quadratic model.

    python -m theory.predict --avg ema --lr 0.05 --decay 0.995                    # one curvature h = 1
    python -m theory.predict --avg swa --lr 0.05 --window 400 --start 2000
    python -m theory.predict --avg two-point --gap 200 --lr 0.05 --json
    python -m theory.predict --avg ema --lr 0.5 --decay 0.999 --spectrum logspace:1e-4:1:10000 --steps 100000 --json
    python -m theory.predict --schedule cosine:start=5000 --lr 0.05 --steps 10000 --inverse   # schedule -> averaging

Glue only (design.md §3.2): parse -> specs -> pure functions of theory.stationary / equivalence / inverse -> a run
directory (theory/rundir.py). ``main(argv)`` returns the run directory. Human output is a table plus a figure;
``--json`` prints exactly one JSON object and keeps matplotlib and sympy off the path (speed target: well under a
second for 10,000 directions and 100,000 steps, see scripts/bench_theory.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from theory import rundir, spec
from theory.cli import OneLineParser, keep_freed_memory, pipe_safe_stdout

AVG_CHOICES = ("none", "ema", "swa", "two-point", "points")
N_OUTPUT_POINTS = 200  # trajectory points written and printed (the engine's cost grows with these, not with steps)


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ parsing

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m theory.predict", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model (theory.md §2)")
    g.add_argument("--curvature", type=float, default=1.0, help="one curvature h (1/LR units); α = λh")
    g.add_argument("--spectrum", default=None,
                   help="curvatures instead of --curvature: logspace:LO:HI:D, linspace:LO:HI:D or a .npy file")
    g.add_argument("--noise", type=float, default=1.0, help="σ², variance of the batch minima per direction (param²)")
    g.add_argument("--offset", type=float, default=0.0,
                   help="initial mean offset E[x_0] per direction (param units); 0 = start at the minimum")
    g.add_argument("--init", choices=("stationary", "zero"), default="stationary",
                   help="initial variance: the stationary one at the starting LR, or 0")
    g = p.add_argument_group("optimiser")
    g.add_argument("--lr", type=float, default=0.05, help="learning rate λ (LR units)")
    g.add_argument("--momentum", type=float, default=0.0, help="heavy-ball μ in [0, 1) (PyTorch convention)")
    g.add_argument("--schedule", default="constant",
                   help="NAME[:key=value,...]; NAME in constant, step, cosine, linear, wsd, hyperbolic, piecewise; "
                        "lists use '+', e.g. step:milestones=3000+6000,factor=0.1 or cosine:start=5000,final_lr=0. "
                        "lr defaults to --lr and total to --steps")
    g.add_argument("--steps", type=int, default=4000, help="number of optimiser steps T")
    g = p.add_argument_group("averaging")
    g.add_argument("--avg", choices=AVG_CHOICES, default="ema", help="which average of the iterates")
    g.add_argument("--start", type=int, default=None, help="step at which EMA/SWA starts (default T/2)")
    g.add_argument("--decay", type=float, default=0.995, help="EMA decay γ per optimiser step, in [0, 1)")
    g.add_argument("--window", type=int, default=None, help="SWA window n in iterates (default: start..T)")
    g.add_argument("--every", type=int, default=1, help="EMA/SWA update period c in steps")
    g.add_argument("--gap", type=int, default=200, help="two-point / N-point gap k in steps")
    g.add_argument("--points", type=int, default=4, help="N for --avg points")
    g = p.add_argument_group("output")
    g.add_argument("--inverse", action="store_true",
                   help="schedule -> averaging: weights over constant-LR (--lr) iterates that emulate --schedule")
    g.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout (no figure)")
    g.add_argument("--out", default=None, help="run directory (default runs/theory/<stamp>-...)")
    return p


def parse_spectrum(text: str) -> np.ndarray:
    """'logspace:LO:HI:D', 'linspace:LO:HI:D' or a path to a .npy file of eigenvalues (all > 0)."""
    kind = text.split(":", 1)[0]
    if kind in ("logspace", "linspace"):
        parts = text.split(":")
        if len(parts) != 4:
            raise UsageError(f"--spectrum {text!r}: expected {kind}:LO:HI:D, e.g. {kind}:1e-4:1:100")
        try:
            lo, hi, d = float(parts[1]), float(parts[2]), int(parts[3])
        except ValueError:
            raise UsageError(f"--spectrum {text!r}: LO and HI must be numbers and D an integer") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi and d >= 1):
            raise UsageError(f"--spectrum {text!r}: need 0 < LO <= HI (finite) and D >= 1")
        return np.logspace(np.log10(lo), np.log10(hi), d) if kind == "logspace" else np.linspace(lo, hi, d)
    path = Path(text)
    if path.suffix != ".npy":
        raise UsageError(f"--spectrum {text!r}: use logspace:LO:HI:D, linspace:LO:HI:D or a .npy file")
    try:
        h = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--spectrum {text}: cannot read a .npy array ({e})") from None
    h = np.asarray(h, dtype=float).ravel() if np.issubdtype(np.asarray(h).dtype, np.number) else None
    if h is None or h.size == 0 or not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise UsageError(f"--spectrum {text}: must hold a non-empty array of finite eigenvalues > 0")
    return h


def _parse_value(v: str):
    if "+" in v and not v.lower().startswith(("+", "1e+")):
        return tuple(_parse_value(x) for x in v.split("+"))
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def parse_schedule(text: str, lr: float, steps: int) -> spec.Schedule:
    """NAME[:key=value,...] -> spec schedule; lr defaults to --lr, total to --steps."""
    name, _, rest = text.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--schedule {text!r}: parameters are key=value pairs separated by ','")
        params[key.strip()] = _parse_value(val.strip())
    params.setdefault("lr", lr)
    if name in ("cosine", "linear"):
        params.setdefault("total", steps)
    if name == "wsd":
        params.setdefault("decay_start", int(0.8 * steps))
        params.setdefault("decay", max(1, steps - params["decay_start"]))
    if name == "hyperbolic":
        params.setdefault("start", steps // 2)
    return spec.make_schedule(name, **params)


def specs_from_args(args: argparse.Namespace):
    """Validated (NQM, SGD, averaging) from parsed flags; ValueError says what is wrong."""
    for flag in ("lr", "noise", "curvature", "offset", "decay", "momentum"):
        v = getattr(args, flag)
        if not np.isfinite(v):
            raise UsageError(f"--{flag} must be a finite number, got {v}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.noise < 0:
        raise UsageError(f"--noise (σ²) must be >= 0, got {args.noise}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    h = parse_spectrum(args.spectrum) if args.spectrum else np.array([args.curvature])
    start = args.steps // 2 if args.start is None else args.start
    if not 0 <= start <= args.steps:
        raise UsageError(f"--start must be in [0, --steps={args.steps}], got {start}")
    if args.avg in ("two-point", "points"):
        span = args.gap * (args.points - 1 if args.avg == "points" else 1)
        if span > args.steps:
            raise UsageError(f"--gap {args.gap} spans {span} steps, longer than the run (--steps {args.steps}); "
                             "use a smaller --gap or more --steps")
    schedule = parse_schedule(args.schedule, args.lr, args.steps)
    opt = spec.SGD(schedule, momentum=args.momentum)
    if args.avg == "none":
        avg = spec.NoAverage()
    elif args.avg == "ema":
        avg = spec.EMA(decay=args.decay, start=start, every=args.every)
    elif args.avg == "swa":
        window = args.window if args.window is not None else max(1, (args.steps - start) // args.every + 1)
        avg = spec.SWA(start=start, length=window, every=args.every)
    elif args.avg == "two-point":
        avg = spec.TwoPoint(gap=args.gap)
    else:
        avg = spec.NPoint(n=args.points, gap=args.gap)
    v0 = 0.0
    if args.init == "stationary":
        from theory import stationary
        alpha0 = float(schedule.lr_at(np.array([0]))[0]) * h
        v0 = np.where(alpha0 < stationary.max_stable_alpha(args.momentum),
                      stationary.iterate_variance(np.minimum(alpha0, 0.999 * stationary.max_stable_alpha(args.momentum)),
                                                  args.noise, args.momentum), 0.0)
    model = spec.NQM(h=h, sigma2=args.noise, m0=args.offset, v0=v0)
    return model, opt, avg


# ------------------------------------------------------------------------------------------------ computing

def _avg_label(avg) -> str:
    if isinstance(avg, spec.EMA):
        return f"ema(γ={avg.decay:g}/step, start={avg.start}{'' if avg.every == 1 else f', every={avg.every}'})"
    if isinstance(avg, spec.SWA):
        return f"swa(start={avg.start}, window={avg.length} iterates, every={avg.every})"
    if isinstance(avg, spec.TwoPoint):
        return f"two-point(gap={avg.gap} steps)"
    if isinstance(avg, spec.NPoint):
        return f"points(N={avg.n}, gap={avg.gap} steps)"
    return "none"


def _listify(x: np.ndarray, single: bool):
    """One direction -> a float; a spectrum -> a list. Non-finite values become None (strict JSON)."""
    x = np.asarray(x, dtype=float).ravel()
    if single:
        return float(x[0]) if np.isfinite(x[0]) else None
    return x  # serialised by rundir.to_json_text (non-finite -> null)


def output_steps(total: int, extra: list[int]) -> np.ndarray:
    from theory.moments import sorted_unique

    grid = np.round(np.linspace(0, total, N_OUTPUT_POINTS + 1)).astype(np.int64)
    return sorted_unique(np.concatenate([grid, np.asarray([e for e in extra if 0 <= e <= total], dtype=np.int64)]))


def forward(model: spec.NQM, opt: spec.SGD, avg, total: int) -> tuple[dict, dict]:
    """Stationary numbers (at the schedule's LR where the average acts) and trajectories -> (result, series)."""
    from theory import equivalence, stationary

    single = model.dim == 1
    mu = opt.momentum
    start = getattr(avg, "start", 0)
    lr_avg = float(opt.schedule.lr_at(np.array([min(start, max(total - 1, 0))]))[0])
    alpha = lr_avg * model.h
    diverges = bool(np.any(opt.schedule.lr_at(np.arange(total)).max() * model.h >= stationary.max_stable_alpha(mu)))
    result: dict = {"avg": _avg_label(avg), "lr": lr_avg, "momentum": mu, "diverges": diverges,
                    "max_stable_lr": _listify(stationary.max_stable_alpha(mu) / model.h, single)}
    if diverges:
        result["status"] = "diverges"
        return result, {}
    v_it = stationary.iterate_variance(alpha, model.sigma2, mu)
    result["iterate_variance"] = _listify(v_it, single)
    if not isinstance(avg, spec.NoAverage):
        v_avg = stationary.averaged_variance(alpha, avg, model.sigma2, mu)
        a_eq = stationary.equivalent_alpha(v_avg, model.sigma2, mu)
        a_apx = stationary.equivalent_alpha_approx(alpha, avg, mu)
        result.update(averaged_variance=_listify(v_avg, single), equivalent_lr=_listify(a_eq / model.h, single),
                      equivalent_lr_approx=_listify(a_apx / model.h, single))
    steps = output_steps(total, [start])
    eq = equivalence.equivalence(model, opt, avg, steps)
    result.update(
        status="ok",
        equivalent_schedule=eq.equivalent,
        equivalent_lr_scalar=float(eq.lr_eq_scalar) if np.isfinite(eq.lr_eq_scalar) else None,
        excess_loss={"raw": float(eq.loss_raw[-1]), "averaged": float(eq.loss_avg[-1]),
                     "equivalent": float(eq.loss_equiv[-1]), "equivalent_scalar": float(eq.loss_equiv_scalar[-1])},
        max_rel_err={"mean": float(eq.max_rel_err_mean), "variance": float(eq.max_rel_err_var),
                     "loss_scalar": float(eq.max_rel_err_loss_scalar)},
    )
    series = {"nqm/step": eq.steps, "nqm/lr": opt.schedule.lr_at(np.minimum(eq.steps, max(total - 1, 0))),
              "nqm/loss_raw": eq.loss_raw, "nqm/loss_avg": eq.loss_avg, "nqm/loss_equiv": eq.loss_equiv,
              "nqm/loss_equiv_scalar": eq.loss_equiv_scalar, "static/h": model.h}
    return result, series


def backward(model: spec.NQM, opt: spec.SGD, base_lr: float, total: int) -> tuple[dict, dict]:
    """Schedule -> weights over constant-LR iterates (theory.md §3.6)."""
    from theory import inverse

    inv = inverse.inverse(model, opt, base_lr, total)
    w = np.asarray(inv.weights)
    support = np.flatnonzero(np.abs(w) > 1e-12 * np.abs(w).max()) if w.size else np.array([0])
    result = {"schedule": opt.schedule.name, "base_lr": base_lr, "negative_weights": bool(inv.negative),
              "sum_weights": float(inv.sum_weights), "kernel_error": float(inv.kernel_error),
              "first_weighted_step": int(support[0]), "loss_average": float(inv.loss_average),
              "loss_schedule": float(inv.loss_schedule), "status": "ok"}
    series = {"inverse/step": np.arange(w.size, dtype=np.int64), "inverse/weight": w,
              "inverse/lr": opt.schedule.lr_at(np.minimum(np.arange(w.size), max(total - 1, 0)))}
    return result, series


# ------------------------------------------------------------------------------------------------ output

def _fmt(v) -> str:
    if v is None:
        return "diverges"
    if isinstance(v, (list, np.ndarray)):
        finite = np.asarray(v, dtype=float)
        finite = finite[np.isfinite(finite)]
        return f"{finite.min():.4e} .. {finite.max():.4e} ({len(v)} directions)" if finite.size else "diverges"
    return f"{v:.6e}" if isinstance(v, float) else str(v)


def print_human(result: dict, series: dict, cfg: dict) -> None:
    print(f"theory.predict  {cfg['avg_label']}  lr={cfg['lr']:g}  μ={cfg['momentum']:g}  "
          f"schedule={cfg['schedule']}  directions={cfg['directions']}  σ²={cfg['noise']:g}  steps={cfg['steps']}")
    if result.get("status") == "diverges":
        print(f"diverges: α = λh reaches 2(1+μ) (max stable LR {_fmt(result['max_stable_lr'])}); no prediction")
        return
    rows = [(k.replace("_", " "), result[k]) for k in (
        "iterate_variance", "averaged_variance", "equivalent_lr", "equivalent_lr_approx", "equivalent_lr_scalar",
        "negative_weights", "sum_weights", "kernel_error", "first_weighted_step", "loss_average", "loss_schedule")
        if k in result]
    if "equivalent_schedule" in result:
        rows.append(("equivalent schedule", result["equivalent_schedule"]))
    for name, v in rows:
        print(f"  {name:<28s} {_fmt(v)}")
    if "excess_loss" in result:
        e, m = result["excess_loss"], result["max_rel_err"]
        print(f"  final excess loss: raw {e['raw']:.4e} | averaged {e['averaged']:.4e} | "
              f"equivalent LR (per direction) {e['equivalent']:.4e} | scalar LR {e['equivalent_scalar']:.4e}")
        print(f"  largest relative error along the trajectory (average vs equivalent): mean {m['mean']:.2%}, "
              f"variance {m['variance']:.2%}; scalar-LR loss {m['loss_scalar']:.2%}")
        step = series["nqm/step"]
        print(f"  | {'step':>8s} | {'raw':>10s} | {'averaged':>10s} | {'equivalent':>10s} |")
        for i in np.unique(np.linspace(0, step.size - 1, 6).astype(int)):
            print(f"  | {step[i]:8d} | {series['nqm/loss_raw'][i]:10.4e} | {series['nqm/loss_avg'][i]:10.4e} | "
                  f"{series['nqm/loss_equiv'][i]:10.4e} |")


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    model, opt, avg = specs_from_args(args)
    if args.inverse:
        result, series = backward(model, opt, args.lr, args.steps)
        name = f"inverse-{opt.schedule.name}"
    else:
        result, series = forward(model, opt, avg, args.steps)
        name = f"nqm-{args.avg}"
    cfg = {"avg": args.avg, "avg_label": "inverse (schedule -> weights over constant-LR iterates)" if args.inverse
           else _avg_label(avg), "avg_params": getattr(avg, "__dict__", {}),
           "lr": args.lr, "momentum": args.momentum, "schedule": opt.schedule.name,
           "schedule_params": opt.schedule.params(), "steps": args.steps, "noise": args.noise,
           "directions": model.dim, "curvature": args.curvature, "spectrum": args.spectrum,
           "offset": args.offset, "init": args.init, "inverse": args.inverse}
    run = rundir.new_run_dir("theory", name, out=args.out)
    rundir.write_config(run, "theory", cfg, command=["python", "-m", "theory.predict", *(sys.argv[1:] if argv is None else argv)])
    rundir.write_env(run, packages=rundir.THEORY_PACKAGES)
    rundir.Trajectory({k: np.asarray(v) for k, v in series.items()} or {"nqm/step": np.zeros(0, np.int64)}).save(
        run / "trajectory.npz")
    status = "diverged" if result.get("status") == "diverges" else "ok"
    text = rundir.encoded(result)              # formatted once: a spectrum's 10,000-entry lists, for both outputs
    rundir.write_summary(run, status, args.steps, prediction=text if model.dim > 1 else result)  # 1 direction: indented
    result["run_dir"] = str(run)
    if args.json:                              # the prediction's members plus run_dir, as one object
        print(f'{text[:-1]}, "run_dir": {json.dumps(str(run))}}}')
    else:
        print_human(result, series, cfg)
        if series and "nqm/step" in series:
            from theory.plotting import plot_prediction
            fig_path = plot_prediction(series, cfg, run / "prediction.png")
            print(f"  figure: {fig_path}")
        elif series and "inverse/step" in series:
            from theory.plotting import plot_inverse
            print(f"  figure: {plot_inverse(series, cfg, run / 'inverse.png')}")
        print(run)
    return run


def cli(argv: list[str] | None = None) -> int:
    """Entry point with the error contract: bad input -> one line on stderr, exit 2, nothing written."""
    keep_freed_memory()
    try:
        with pipe_safe_stdout():   # `... | head`: the rest of the output (and the figure) is still written
            main(argv)
    except (UsageError, ValueError, rundir.RunDirError) as e:
        print(f"theory.predict: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
