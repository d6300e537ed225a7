"""Predict what an averaging does, and which LR schedule it is equivalent to, in the noisy-quadratic model.

    python -m theory.predict --avg ema --lr 0.05 --decay 0.995                    # one curvature h = 1
    python -m theory.predict --avg swa --lr 0.05 --window 400 --start 2000
    python -m theory.predict --avg two-point --gap 200 --lr 0.05 --json
    python -m theory.predict --avg ema --lr 0.5 --decay 0.999 --spectrum logspace:1e-4:1:10000 --steps 100000 --json
    python -m theory.predict --schedule cosine:start=5000 --lr 0.05 --steps 10000 --inverse   # schedule -> averaging
    python -m theory.predict --avg ema --decay 0.99,0.995,0.999 --from-report runs/compare/REPORT   # fitted h, σ²
    python -m theory.predict --avg ema --target-lr 0.001 --lr 0.05          # which decay acts like LR 0.001?
    python -m theory.predict --avg ema --batch-scale 4 --lr 0.05 --decay 0.999   # batch ×4: which LR and decay?

Glue only: parse -> specs -> pure functions of theory.stationary / equivalence / inverse -> a run
directory (common/rundir.py). ``main(argv)`` returns the run directory. Human output is a table plus a figure;
``--json`` prints exactly one JSON object and keeps matplotlib and sympy off the path (speed target: well under a
second for 10,000 directions and 100,000 steps, see scripts/bench_theory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from common import rundir
from theory import schedtext, spec
from common.cli import DefaultsFormatter, OneLineParser, command_note, keep_freed_memory, pipe_safe_stdout

AVG_CHOICES = ("none", "ema", "swa", "two-point", "points")
N_OUTPUT_POINTS = 200  # trajectory points written and printed (the engine's cost grows with these, not with steps)
# Size limits, refused up front. Memory no longer grows with the steps (theory/segments.py), but a decaying
# schedule costs ~5-50 µs per step per 10^4 directions: 10^9 steps are hours. The outputs are [points, D] per
# block of directions and per-direction lists in the JSON: 10^6 directions are ~100 MB of text.
MAX_STEPS = 10 ** 9
MAX_DIRECTIONS = 10 ** 6


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ parsing

def build_parser() -> argparse.ArgumentParser:
    # DefaultsFormatter: "(default: X)" once; none for None/False (common/cli.py)
    p = OneLineParser(prog="python -m theory.predict", description=__doc__.split("\n\n")[0],
                      epilog=command_note("theory.predict"), formatter_class=DefaultsFormatter)
    g = p.add_argument_group("model (theory.md §2)")
    g.add_argument("--curvature", type=float, default=1.0,
                   help="one curvature h > 0 (1/LR units); α = λh. Equivalent LRs scale like 1/h: the header and "
                        "the JSON ('curvature') say which h the answer assumes")
    g.add_argument("--spectrum", default=None,
                   help=f"curvatures instead of --curvature: logspace:LO:HI:D, linspace:LO:HI:D (D <= "
                        f"{MAX_DIRECTIONS:,}) or a .npy file")
    g.add_argument("--from-report", default=None, metavar="DIR",
                   help="take the calibrated curvatures h, noise σ², LR and momentum from a compare.report "
                        "directory (its metrics.json); --lr / --momentum given explicitly still win")
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
                        "lists use '+', e.g. step:milestones=3000+6000,factor=0.1 or cosine:start=5000,final_lr=0; "
                        "warmup=N adds a linear warmup of N steps (theory/schedtext.py). "
                        "lr defaults to --lr and total to --steps")
    g.add_argument("--steps", type=int, default=4000, help=f"number of optimiser steps T (<= {MAX_STEPS:,})")
    g.add_argument("--batch-scale", type=float, default=None, metavar="KAPPA",
                   help="batch size ×KAPPA: the LR and EMA decay that keep the trajectory per sample seen (rules "
                        "λ×κ, γ→γ^κ next to the exact NQM values, the rules' error, where they break)")
    g = p.add_argument_group("averaging")
    g.add_argument("--avg", choices=AVG_CHOICES, default="ema", help="which average of the iterates")
    g.add_argument("--start", type=int, default=None, help="step at which EMA/SWA starts (default: T/2)")
    g.add_argument("--decay", default="0.995",
                   help="EMA decay γ per optimiser step, in [0, 1); a comma list (0.99,0.995,0.999) prints one row "
                        "per decay")
    g.add_argument("--target-lr", type=float, default=None,
                   help="the inverse question: which EMA decay (--avg ema) or SWA window (--avg swa) acts like "
                        "this LR (LR units)")
    g.add_argument("--match-window", default=None, metavar="A:B",
                   help="which constant-LR switch gives the raw weights the average's window-mean loss over steps "
                        "A..B (theory.md §3.10); with --avg ema, swa, two-point or points")
    g.add_argument("--switch-at", type=int, default=None, metavar="S",
                   help="step of that switch, 0 <= S <= A (default: A, the window start)")
    g.add_argument("--window", type=int, default=None, help="SWA window n in iterates (default: start..T)")
    g.add_argument("--every", type=int, default=1, help="EMA/SWA update period c in steps")
    g.add_argument("--gap", type=int, default=200, help="two-point / N-point gap k in steps")
    g.add_argument("--points", type=int, default=4, help="N for --avg points")
    g = p.add_argument_group("output")
    g.add_argument("--inverse", action="store_true",
                   help="schedule -> averaging: weights over constant-LR (--lr) iterates that emulate --schedule")
    g.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout (no figure); the run directory is still written "
                        "(--out, or runs/theory/<stamp>-... under the current folder) and named in 'run_dir'")
    g.add_argument("--out", default=None, help="run directory (default: runs/theory/<stamp>-... under the current "
                                                "folder; written with or without --json)")
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
        if d > MAX_DIRECTIONS:
            raise UsageError(f"--spectrum {text!r}: D = {d:,} directions is more than the limit of "
                             f"{MAX_DIRECTIONS:,}")
        return np.logspace(np.log10(lo), np.log10(hi), d) if kind == "logspace" else np.linspace(lo, hi, d)
    path = Path(text)
    if path.suffix != ".npy":
        raise UsageError(f"--spectrum {text!r}: use logspace:LO:HI:D, linspace:LO:HI:D or a .npy file")
    try:
        h = np.load(path, allow_pickle=False, mmap_mode="r")       # the shape first, without reading the data
        if h.size <= MAX_DIRECTIONS:
            h = np.array(h)
    except (OSError, ValueError) as e:
        raise UsageError(f"--spectrum {text}: cannot read a .npy array ({e})") from None
    if h.size > MAX_DIRECTIONS:
        raise UsageError(f"--spectrum {text}: {h.size:,} eigenvalues is more than the limit of {MAX_DIRECTIONS:,}")
    h = np.asarray(h, dtype=float).ravel() if np.issubdtype(np.asarray(h).dtype, np.number) else None
    if h is None or h.size == 0 or not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise UsageError(f"--spectrum {text}: must hold a non-empty array of finite eigenvalues > 0")
    return h


def parse_schedule(text: str, lr: float, steps: int) -> spec.Schedule:
    """NAME[:key=value,...] -> spec schedule (theory/schedtext.py); lr defaults to --lr, total to --steps."""
    try:
        return schedtext.parse_schedule(text, lr, steps)
    except ValueError as e:
        raise UsageError(str(e)) from None


def parse_decays(text) -> list[float]:
    """'0.99,0.995' -> [0.99, 0.995]; each in [0, 1) per optimiser step."""
    out = []
    for part in str(text).split(","):
        try:
            g = float(part)
        except ValueError:
            raise UsageError(f"--decay {text!r}: give numbers in [0, 1) separated by ',', e.g. 0.99,0.999") from None
        try:
            spec.check_ema_decay(g)
        except ValueError:
            raise UsageError(f"--decay {text!r}: each decay must be in [0, 1) per optimiser step, got {part}") from None
        out.append(g)
    if not out:
        raise UsageError("--decay: give at least one decay")
    return out


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def parse_match_window(args: argparse.Namespace) -> tuple[int, int] | None:
    """--match-window A:B (integers, 0 <= A < B <= --steps) and --switch-at S (0 <= S <= A), or None."""
    text = args.match_window
    if text is None:
        if args.switch_at is not None:
            raise UsageError("--switch-at needs --match-window A:B (the window the switch is matched over)")
        return None
    if args.inverse or args.avg == "none":
        raise UsageError("--match-window matches an average: use it with --avg ema, swa, two-point or points "
                         "(not --avg none or --inverse)")
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise UsageError(f"--match-window {text!r}: give the first and last step as two integers A:B, e.g. 900:1200")
    a, b = int(parts[0]), int(parts[1])
    if a >= b:
        raise UsageError(f"--match-window {text}: A must be before B (A < B), e.g. {min(a, b)}:{max(a, b) + (a == b)}")
    if b > args.steps:
        raise UsageError(f"--match-window {text}: the window ends after the run (--steps {args.steps}); end it at "
                         f"or before {args.steps} or give more --steps")
    if args.switch_at is not None and not 0 <= args.switch_at <= a:
        raise UsageError(f"--switch-at {args.switch_at}: the switch must be in [0, A = {a}], at or before the window "
                         "start")
    return a, b


def match(model: spec.NQM, opt: spec.SGD, avg, window: tuple[int, int], switch_at, total: int) -> dict:
    """The constant-LR switch matching the average over the window (theory.matching.match_switch, §3.10)."""
    from theory import matching

    try:
        return matching.match_switch(model, opt, avg, window, switch_at, total=total).to_dict()
    except ValueError as e:
        raise UsageError(f"--match-window {window[0]}:{window[1]}: {e}") from None


def read_report(path: str) -> dict:
    """The calibration of a compare.report (common.rundir.read_calibration), bad input as a UsageError."""
    try:
        return rundir.read_calibration(path)
    except rundir.RunDirError as e:
        raise UsageError(f"--from-report {e}") from None


def specs_from_args(args: argparse.Namespace):
    """Validated (NQM, SGD, averaging) from parsed flags; ValueError says what is wrong."""
    for flag in ("lr", "noise", "curvature", "offset", "momentum"):
        v = getattr(args, flag)
        if not np.isfinite(v):
            raise UsageError(f"--{flag.replace('_', '-')} must be a finite number, got {v}")
    decays = parse_decays(args.decay)
    if args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.noise < 0:
        raise UsageError(f"--noise (σ²) must be >= 0, got {args.noise}")
    if args.curvature <= 0:
        raise UsageError(f"--curvature must be > 0 (a Hessian eigenvalue h, 1/LR units), got {args.curvature:g}")
    if not 0 <= args.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {args.momentum:g}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.steps > MAX_STEPS:
        raise UsageError(f"--steps {args.steps:,}: at most {MAX_STEPS:,} steps (a decaying schedule costs time per "
                         "step; see --help)")
    if args.batch_scale is not None and not (np.isfinite(args.batch_scale) and args.batch_scale > 0):
        raise UsageError(f"--batch-scale must be a finite factor > 0, got {args.batch_scale}")
    if args.target_lr is not None and not (np.isfinite(args.target_lr) and args.target_lr > 0):
        raise UsageError(f"--target-lr must be a finite LR > 0, got {args.target_lr}")
    if args.target_lr is not None and args.avg not in ("ema", "swa"):
        raise UsageError(f"--target-lr answers for --avg ema (a decay) or --avg swa (a window), not --avg {args.avg}")
    sigma2 = args.noise
    if args.from_report:
        rep = read_report(args.from_report)
        if args.spectrum or args.curvature != 1.0 or args.noise != 1.0:
            raise UsageError("--from-report gives the curvatures and the noise: drop --spectrum, --curvature and "
                             "--noise")
        h, sigma2 = rep["h"], rep["sigma2"]
    else:
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
        avg = spec.EMA(decay=decays[0], start=start, every=args.every)
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
                                                  sigma2, args.momentum), 0.0)
    model = spec.NQM(h=h, sigma2=sigma2, m0=args.offset, v0=v0)
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

    from theory.segments import peak_lr

    single = model.dim == 1
    mu = opt.momentum
    start = avg.defined_from          # where the average starts acting: EMA/SWA start, (N−1)·gap for points
    lr_avg = float(opt.schedule.lr_at(np.array([min(start, max(total - 1, 0))]))[0])
    alpha = lr_avg * model.h
    diverges = bool(np.any(peak_lr(opt.schedule, total) * model.h >= stationary.max_stable_alpha(mu)))
    result: dict = {"avg": _avg_label(avg), "lr": lr_avg, "momentum": mu, "diverges": diverges,
                    "curvature": curvature_summary(model),
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


def curvature_summary(model: spec.NQM):
    """The curvature the answer assumes: h itself (1/LR units) for one direction, else min / median / max / count."""
    h = model.h
    if h.size == 1:
        return float(h[0])
    return {"directions": int(h.size), "min": float(h.min()), "median": float(np.median(h)), "max": float(h.max())}


def _h_ref(model: spec.NQM) -> float:
    """Loss-dominant curvature Σh²σ²/Σhσ² (as theory.equivalence's scalar SWA schedule)."""
    hs2 = model.h * model.sigma2
    return float(np.sum(model.h * hs2) / np.sum(hs2)) if np.sum(hs2) > 0 else float(np.median(model.h))


def _bisect(f, lo: float, hi: float, integer: bool = False):
    """Root of a decreasing f on [lo, hi] (f(lo) >= 0 >= f(hi)) by bisection; the smallest integer with f <= 0 when
    ``integer``."""
    for _ in range(200):
        mid = (lo + hi) // 2 if integer else 0.5 * (lo + hi)
        if (integer and hi - lo <= 1) or (not integer and not lo < mid < hi):
            break
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi if integer else 0.5 * (lo + hi)


def target(model: spec.NQM, opt: spec.SGD, avg, total: int, lr_target: float) -> dict:
    """The EMA decay γ (or SWA window n) whose stationary averaged loss ½Σh Var_avg equals that of SGD at
    ``lr_target`` (theory.md §3.3, §3.4; exact per direction for one curvature), next to the small-rate rules
    1/α_t = 1/α + 1/β (EMA) and n = 2/α_t (SWA), α = λh/(1−μ) at the loss-dominant curvature."""
    from theory import stationary as st

    mu = opt.momentum
    start = int(getattr(avg, "start", 0))
    lr_avg = float(opt.schedule.lr_at(np.array([min(start, max(total - 1, 0))]))[0])
    alpha = lr_avg * model.h
    goal = float(np.sum(model.h * st.iterate_variance(lr_target * model.h, model.sigma2, mu)))
    out: dict = {"lr": lr_target, "lr_at_average_start": lr_avg}
    if not lr_target < lr_avg:
        out["note"] = ("averaging only lowers the equivalent LR: the target must be below the LR where the average "
                       f"starts ({lr_avg:g})")
        return out
    h = _h_ref(model)
    a_eff, t_eff = lr_avg * h / (1 - mu), lr_target * h / (1 - mu)
    every = int(getattr(avg, "every", 1))
    if isinstance(avg, spec.EMA):
        f = lambda g: float(np.sum(model.h * st.ema_variance(alpha, g, model.sigma2, mu, every=every))) - goal
        out["decay"] = _bisect(f, 0.0, 1.0 - 1e-15)
        out["decay_rule"] = 1.0 - 1.0 / (1.0 / t_eff - 1.0 / a_eff)
    else:
        f = lambda n: float(np.sum(model.h * st.swa_variance(alpha, int(n), model.sigma2, mu, every=every))) - goal
        hi = 1
        while f(hi) > 0 and hi < 10 ** 12:
            hi *= 2
        out["window"] = int(_bisect(f, max(1, hi // 2), hi, integer=True)) if f(1) > 0 else 1
        out["window_rule"] = 2.0 / t_eff
    return out


def decay_rows(model: spec.NQM, opt: spec.SGD, avg: spec.EMA, decays: list[float], total: int) -> list[dict]:
    """One row per EMA decay: equivalent LR (exact per direction, small-rate rule, scalar), averaged variance and
    the largest equivalence errors along the trajectory (theory.md §3.3)."""
    rows = []
    for g in decays:
        res, _ = forward(model, opt, spec.EMA(decay=g, start=avg.start, every=avg.every), total)
        rows.append({"decay": g, **{k: res.get(k) for k in ("equivalent_lr", "equivalent_lr_approx",
                                                             "equivalent_lr_scalar", "averaged_variance",
                                                             "max_rel_err", "status")}})
    return rows


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


def _curv_text(c) -> str:
    if isinstance(c, dict):
        return f"h={c['min']:.3g}..{c['max']:.3g} (median {c['median']:.3g}, 1/LR)"
    return f"h={c:g} (1/LR)"


def print_human(result: dict, series: dict, cfg: dict) -> None:
    noise = "from report" if cfg.get("from_report") else f"{cfg['noise']:g}"
    print(f"theory.predict  {cfg['avg_label']}  lr={cfg['lr']:g}  μ={cfg['momentum']:g}  "
          f"schedule={cfg['schedule']}  {_curv_text(cfg['curvature_used'])}  directions={cfg['directions']}  "
          f"σ²={noise}  steps={cfg['steps']}")
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
    if "decays" in result:
        print(f"  | {'decay γ':>9s} | {'equivalent lr':>24s} | {'scalar lr':>10s} | {'averaged variance':>24s} | "
              f"{'var err':>7s} |")
        for r in result["decays"]:
            err = (r.get("max_rel_err") or {}).get("variance")
            print(f"  | {r['decay']:9g} | {_fmt(r['equivalent_lr']):>24s} | {_fmt(r['equivalent_lr_scalar']):>10s} | "
                  f"{_fmt(r['averaged_variance']):>24s} | {'-' if err is None else f'{err:.2%}':>7s} |")
    if "target" in result:
        t = result["target"]
        if "note" in t:
            print(f"  target lr {t['lr']:g}: {t['note']}")
        elif "decay" in t:
            print(f"  target lr {t['lr']:g}: EMA decay γ = {t['decay']:.6f} per step (small-rate rule "
                  f"{t['decay_rule']:.6f})")
        else:
            print(f"  target lr {t['lr']:g}: SWA window n = {t['window']} iterates (small-rate rule "
                  f"{t['window_rule']:.1f})")
    if "match" in result:
        m = result["match"]
        print(f"  match over steps {m['window'][0]}..{m['window'][1]}: window-mean excess loss of the average "
              f"{m['target_loss']:.4e}, raw {m['raw_loss']:.4e}")
        if m["exists"]:
            print(f"    switch at step {m['switch_step']}: λ_b = {m['lr_branch']:.6g} gives the raw weights the "
                  "average's loss")
        else:
            reach = "n/a" if m["reached_fraction"] is None else f"{100 * m['reached_fraction']:.1f} %"
            print(f"    switch at step {m['switch_step']}: none exists; the best λ_b ({m['best_lr']:.6g}) reaches "
                  f"{reach} of the average's gain")
        share = "n/a" if m["unreachable_share"] is None else f"{100 * m['unreachable_share']:.1f} %"
        print(f"    share of the gain a scalar schedule cannot reach (per direction): {share}")
        lr_eq = m["lr_eq_stationary"]
        print(f"    stationary λ_eq (scalar), for comparison: {'n/a' if lr_eq is None else f'{lr_eq:.6g}'}")
    if "batch_scale" in result:
        b = result["batch_scale"]
        print(f"  batch ×{b['kappa']:g}: lr rule {b['lr_rule']:.6g}, exact (same stationary variance) "
              f"{_fmt(b['lr_exact_same_variance'])}; stable up to κ = {b['max_kappa_stable']:.4g}")
        if "decay_rule" in b:
            print(f"    EMA decay rule γ^κ = {b['decay_rule']:.6g}, exact {_fmt(b['decay_exact_same_variance'])}")
        print(f"    rule's stationary variance error {_fmt(b['rule_stationary_variance_error'])}"
              + ("; the rule DIVERGES (κλh >= 2(1+μ))" if b["rule_diverges"] else ""))
        if "rule_error_along_trajectory" in b:
            e = b["rule_error_along_trajectory"]
            print("    largest error along the trajectory per sample: " +
                  ", ".join(f"{k} {v:.2%}" for k, v in e.items()))


class OutputError(OSError):
    """The run directory cannot be written (read-only, under a file, a system folder): one line, exit status 1."""


def check_out(out: str | None) -> None:
    """Refuse an --out that cannot be used, before any work: an existing one must be an empty folder (as
    rundir.new_run_dir requires), a new one's nearest existing ancestor a writable folder."""
    if out is None:
        return
    rundir.refuse_used(out)
    p = Path(out).absolute()
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc != p and not anc.is_dir():
        raise OutputError(f"--out {out}: {anc} is a file, not a folder; choose a path under a folder")
    if not os.access(anc if anc != p else p.parent if not p.is_dir() else p, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: {anc} is not writable; choose a folder you can write to")


def main(argv: list[str] | None = None) -> Path:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.from_report:                           # the report's LR and momentum unless given explicitly
        rep_ = read_report(args.from_report)
        if not _given(argv_list, "--lr"):
            args.lr = rep_["lr"]
        if not _given(argv_list, "--momentum"):
            args.momentum = rep_["momentum"]
    model, opt, avg = specs_from_args(args)
    window = parse_match_window(args)
    decays = parse_decays(args.decay)
    if len(decays) > 1 and args.avg != "ema":
        raise UsageError(f"--decay {args.decay}: several decays need --avg ema")
    check_out(args.out)
    if args.inverse:
        result, series = backward(model, opt, args.lr, args.steps)
        name = f"inverse-{opt.schedule.name}"
    else:
        result, series = forward(model, opt, avg, args.steps)
        name = f"nqm-{args.avg}"
        if len(decays) > 1 and result.get("status") == "ok":
            result["decays"] = decay_rows(model, opt, avg, decays, args.steps)
        if args.target_lr is not None:
            result["target"] = target(model, opt, avg, args.steps, args.target_lr)
        if window is not None and result.get("status") == "ok":
            result["match"] = match(model, opt, avg, window, args.switch_at, args.steps)
        if args.batch_scale is not None:
            from theory import batchscale
            bs = batchscale.scaling(model, opt, avg, args.batch_scale, args.steps)
            result["batch_scale"] = {k: _listify(v, model.dim == 1) if isinstance(v, np.ndarray) else
                                     {kk: _listify(vv, model.dim == 1) for kk, vv in v.items()}
                                     if k == "rule_error_per_direction" else v for k, v in bs.items()}
    cfg = {"avg": args.avg, "avg_label": "inverse (schedule -> weights over constant-LR iterates)" if args.inverse
           else _avg_label(avg), "avg_params": getattr(avg, "__dict__", {}),
           "lr": args.lr, "momentum": args.momentum, "schedule": opt.schedule.name,
           "schedule_params": opt.schedule.params(), "steps": args.steps, "noise": args.noise,
           "directions": model.dim, "curvature": args.curvature, "spectrum": args.spectrum,
           "curvature_used": curvature_summary(model), "from_report": args.from_report,
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
    """Entry point with the error contract: bad input -> one line on stderr, exit 2, nothing written. The command
    avglr-predict and ``python -m theory.predict`` run this."""
    keep_freed_memory()
    try:
        with pipe_safe_stdout():   # `... | head`: the rest of the output (and the figure) is still written
            main(argv)
    except (UsageError, ValueError, rundir.RunDirError) as e:
        print(f"theory.predict: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:           # the run directory cannot be written: one line, exit 1 (as empirical.run)
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        msg = str(e) if isinstance(e, OutputError) else f"--out: cannot write the run directory{where}: {e.strerror or e}"
        print(f"theory.predict: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
