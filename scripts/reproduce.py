"""Reproduce the paper's claims on `digits` and `mnist`: one documented command.

    python scripts/reproduce.py                 # full: digits (10 seeds) + mnist (3 seeds), branches, report, figures
    python scripts/reproduce.py --quick         # CI: digits only, 1 seed, 600 steps (~2 min on CPU)
    python scripts/reproduce.py --dry-run       # print the plan and the expected cost, run nothing

Stages, per dataset (everything is a subprocess, so this script never imports torch):
  1. base runs `python -m empirical.run PRESET --seed S` (constant-LR phase, EMA decays, SWA, two-point gaps),
     keeping the checkpoint at the branch step T0 (= the SWA start, inside the constant phase);
  2. calibrate the NQM on the raw weights of the base runs (compare.calibrate) to get the curvature h;
  3. equivalent-LR branches from each seed's T0 checkpoint (same data order): `half` (two-point ⇔ λ/2),
     `ema:GAMMA:h` per EMA decay (harmonic rule, theory.md §3.3), `swa:h` (1/t cooldown, theory.md §3.4); each
     runs to the end of the parent's constant-LR phase (`--max-steps`), where compare.report's comparisons end;
  3b. (digits) the post-hoc average of each seed's kept constant-LR checkpoints that emulates the `swa:h` branch
     (`python -m empirical.posthoc`, theory.md §3.6a): the base runs keep a checkpoint every POSTHOC_EVERY steps;
  4. `python -m compare.report` on base + branch + post-hoc runs (with the forecast: calibrated on the first third of
     the window only, the rest predicted), and `python -m figures.build`.
Output: OUT/<preset>/{s<seed>, s<seed>-<branch>, s<seed>-posthoc-swa, report/, figures/}; default OUT =
runs/reproduce/<stamp>.
Interrupted? Run the same command with the same --out: started runs resume from their last checkpoint, finished ones
are skipped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from empirical import flags  # noqa: E402  (parses and validates a command line without importing torch)

# Wall-clock minutes of one (base, branch) run with --jobs 2 on 2 CPU cores (1 thread per run), estimates: digits
# from the run times of the 2,400-step preset (REPRODUCE in docs/results.md gives the measured ones); mnist scaled from
# 1.3 s/step measured on 1,500-step runs, two at a time. Branches run from T0 to the end of the constant phase.
MINUTES_PER_RUN = {"digits": (6.0, 2.5), "mnist": (46.0, 20.0)}
# Full mode: digits runs its preset as is (constant LR to 2,100, window 1,050-2,100, lags up to 300). mnist is
# shortened to a 2,100-step timeline (constant LR to 1,800; window 900-1,800 = 3 × the longest lag, 300): evaluations
# dominate the cost of these runs on a CPU (each variant recomputes BN and passes the test split), so the test split
# is evaluated every 50 steps from 850 (lags 50-300), BN recomputed on 4 batches and the training split evaluated on
# 1,000 images.
FULL = {"digits": [],
        "mnist": ["--steps", "2100", "--decay-start", "1800", "--ema-start", "200", "--swa-start", "900",
                  "--eval-every", "100", "--eval-dense-every", "50", "--eval-dense-from", "850", "--bn-batches", "4",
                  "--train-eval-size", "1000", "--two-point-gaps", "50,100,150,200,300", "--probe-every", "50",
                  "--bank-every", "10",
                  "--align-every", "50", "--curv-every", "300"]}
# Quick mode (CI): digits, 600 steps, constant LR to 480, branches from 240; ~2 min on 2 cores.
QUICK = {"digits": ["--steps", "600", "--decay-start", "480", "--ema-start", "80", "--ema-decays", "0.95,0.99",
                    "--swa-start", "240", "--two-point-gaps", "10,20,40,80,120", "--eval-every", "40",
                    "--eval-dense-every", "10", "--eval-dense-from", "120", "--probe-every", "40",
                    "--bank-every", "10", "--align-every", "40", "--curv-every", "120"]}
SEEDS = {"digits": 10, "mnist": 3}           # default seeds per dataset in full mode
# Post-hoc averaging (digits only): the base runs keep a checkpoint every K steps and the average of those that
# emulates the swa:h branch is compared with it. Why swa:h: its inverse-map weights are non-negative and flat (a
# uniform average from T0 plus a lump on the last iterate, theory.md §3.6a), so a coarse grid loses little; the λ/2
# (`half`) weights decay over 2/α_eff steps, a few steps at the sharp curvatures, which no checkpoint grid follows.
# K: 50 steps in full mode (22 checkpoints over steps 1,050–2,100; a digits checkpoint holds the lag-grid snapshots,
# ~25 MB), 20 in quick mode (13 over 240–480). Each must divide T0.
POSTHOC_EVERY = {"digits": 50}
QUICK_POSTHOC_EVERY = {"digits": 20}
POSTHOC_TARGET = "swa"                       # the branch schedule the post-hoc average emulates
FULL_T0 = {"digits": 1050, "mnist": 900}     # = the runs' swa_start: the window's start, inside the constant phase
QUICK_T0 = {"digits": 240}


def plan(quick: bool, seeds: list[int] | None, out: Path,
         presets: tuple[str, ...] = ("digits", "mnist"), branches: bool = True) -> list[dict]:
    """One entry per dataset: its base commands (branches need the calibration, so they are built later).
    ``seeds`` None: the per-dataset default (SEEDS; one seed in quick mode). Without ``branches`` no post-hoc
    average is made either (it is compared with a branch), so the base runs keep only the T0 checkpoint."""
    entries = []
    for preset in (["digits"] if quick else presets):
        seeds_here = seeds if seeds is not None else ([0] if quick else list(range(SEEDS[preset])))
        t0 = (QUICK_T0 if quick else FULL_T0)[preset]
        extra = QUICK[preset] if quick else FULL[preset]
        keep = (QUICK_POSTHOC_EVERY if quick else POSTHOC_EVERY).get(preset, t0) if branches else t0   # divides t0
        base = []
        for s in seeds_here:
            d = out / preset / f"s{s}"
            base.append({"seed": s, "dir": d, "cmd": [sys.executable, "-m", "empirical.run", preset, "--out", str(d),
                                                      "--seed", str(s), "--checkpoint-every", str(keep),
                                                      "--checkpoint-keep-every", str(keep), *extra]})
        # branches stop where the parent's constant-LR phase ends: compare.report compares a branch with the
        # parent's average only up to there (compare/analysis.py), so the cooldown after it would cost a third
        # of every branch for nothing
        end = flags.from_cli([preset, *extra]).decay_start
        entries.append({"preset": preset, "t0": t0, "end": end, "extra": extra, "base": base, "root": out / preset,
                        "branches": branches,
                        "posthoc": branches and preset in (QUICK_POSTHOC_EVERY if quick else POSTHOC_EVERY)})
    return entries


def forecast_flags(entry: dict) -> list[str]:
    """compare.report's forecast: calibrated on the first third of the window (T0 to the decay start) only, the rest
    of the window and the end of the run predicted (compare/forecast.py)."""
    t0, end = entry["t0"], entry["end"]
    b = t0 + (end - t0) // 3
    return ["--calibrate", f"{t0}:{b}", "--window", f"{b}:{end}"] if t0 < b < end else []   # [] : no window


def branch_commands(entry: dict, h_swa: float, h_ema: dict[float, float]) -> list[dict]:
    """Branches from each seed's T0 checkpoint: half, swa:H, ema:GAMMA:H with the curvatures the calibration gives
    (one per EMA decay: the H for which the harmonic rule returns the spectrum's equivalent LR, ``calibrated_h``)."""
    specs = ["half", f"swa:{h_swa:.6g}"] + [f"ema:{g:g}:{h:.6g}" for g, h in h_ema.items()]
    out = []
    for b in entry["base"]:
        ckpt = b["dir"] / "checkpoints" / f"step_{entry['t0']:09d}.pt"
        for sp in specs:
            d = entry["root"] / f"s{b['seed']}-{sp.split(':')[0]}{'-' + sp.split(':')[1] if sp.startswith('ema') else ''}"
            stop = ["--max-steps", str(entry["end"])] if entry.get("end") and entry["end"] > entry["t0"] else []
            out.append({"dir": d, "stop": stop,
                        "cmd": [sys.executable, "-m", "empirical.run", entry["preset"], "--out", str(d),
                                "--seed", str(b["seed"]), "--branch-from", str(ckpt), "--branch-schedule", sp,
                                *entry["extra"], *stop]})
    return out


def posthoc_commands(entry: dict, h_swa: float) -> list[dict]:
    """Per seed: the post-hoc average of the base run's kept checkpoints whose noise kernel at curvature h_swa is the
    `swa:h_swa` branch's (same target text and branch point, so compare.report pairs them); [] where the preset keeps
    no checkpoint grid."""
    if not entry.get("posthoc"):
        return []
    spec = f"{POSTHOC_TARGET}:{h_swa:.6g}"
    return [{"dir": entry["root"] / f"s{b['seed']}-posthoc-{POSTHOC_TARGET}",
             "cmd": [sys.executable, "-m", "empirical.posthoc", str(b["dir"]), "--schedule", spec,
                     "--from", str(entry["t0"]), "--out", str(entry["root"] / f"s{b['seed']}-posthoc-{POSTHOC_TARGET}")]}
            for b in entry["base"]]


def calibrated_h(dirs: list[Path]) -> tuple[float, dict[float, float], str]:
    """Curvatures for the branch schedules from the NQM spectrum fitted to the base runs' raw trajectory (D(τ) of
    two-point averages of raw iterates, compare/calibrate.py; never the EMA or SWA the branches are compared with):

    * EMA γ: the H for which the branch's harmonic rule returns the spectrum's equivalent LR of the EMA
      (theory.stationary.ema_branch_curvature, theory.md §3.3);
    * SWA: H = 1/(λ_eff·τ) with τ the spectrum's cooldown constant (theory.stationary.swa_branch_curvature, §3.4).
    The same functions ``empirical.run --branch-schedule ema:GAMMA --from-report DIR`` uses.
    Returns (H_swa, {γ: H_ema}, a one-line description)."""
    from compare.calibrate import calibrate
    from compare.load import group_runs, load_runs
    from theory import stationary
    setup = group_runs(load_runs(dirs))[0]
    cal = calibrate(setup)
    every = int(setup.config.get("ema_every", 1) or 1)
    h_ema = {g: stationary.ema_branch_curvature(cal.lr, g, cal.h, cal.s, cal.momentum, every=every)
             for g in (float(x) for x in setup.config.get("ema_decays", []))}
    h_swa = stationary.swa_branch_curvature(cal.lr, cal.h, cal.s, cal.momentum)
    text = (f"calibration ({cal.source}): h = {', '.join(f'{x:.4g}' for x in cal.h)}; SWA cooldown H = {h_swa:.4g}; "
            + "; ".join(f"EMA {g:g}: H = {h:.4g}" for g, h in h_ema.items()))
    return h_swa, {g: h for g, h in h_ema.items() if h > 0 and h == h}, text


def expected_cost(entries: list[dict], quick: bool) -> str:
    """Wall-clock estimate for --jobs 2 on 2 CPU cores (runs two at a time); fewer cores or --jobs 1 take longer."""
    lines, total = [], 0.0
    for e in entries:
        base, branch = (m * (0.4 if quick else 1.0) for m in MINUTES_PER_RUN[e["preset"]])
        n = len(e["base"])                           # branches: half + swa + 2 EMA decays per seed
        nb = 4 * n if e.get("branches", True) else 0
        wall = (n * base + nb * branch) / 2
        total += wall
        lines.append(f"  {e['preset']}: {n} base run(s) × ~{base:.1f} min + {nb} branches × ~{branch:.1f} min, "
                     f"two at a time ≈ {wall:.0f} min" + (f" + {n} post-hoc average(s) × ~0.2 min" if e.get("posthoc")
                                                           else ""))
    return ("expected cost (--jobs 2 on 2 CPU cores; GPU faster):\n" + "\n".join(lines)
            + f"\n  total ≈ {total:.0f} min + report/figures ≈ 1 min per dataset")


def _run(cmd: list[str], runner, log: Path | None = None) -> None:
    """Run one stage; a training run's output goes to ``log`` (runs in parallel would interleave on a terminal)."""
    shown = " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)
    if log is None:
        print("+ " + shown, flush=True)
        r = runner(cmd, cwd=str(ROOT))
    else:
        print(f"+ {shown}  > {log}", flush=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            r = runner(cmd, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"reproduce: command failed with exit {r.returncode}: {shown}"
                         + (f" (see {log})" if log else ""))


def resumable(run: dict) -> list[str]:
    """The run's command, or `--resume` of its directory if an earlier (interrupted) reproduction started it:
    re-running the same reproduce command continues from the last checkpoint and skips finished runs."""
    if (run["dir"] / "config.json").is_file():      # a branch keeps its --max-steps: it ends with the constant phase
        return [sys.executable, "-m", "empirical.run", "--out", str(run["dir"]), "--resume", *run.get("stop", [])]
    return run["cmd"]


def _run_all(runs: list[dict], runner, jobs: int) -> None:
    """Independent training runs, ``jobs`` at a time (each child gets cores/jobs intra-op threads); each run's
    output goes to OUT/<preset>/logs/<run name>.log (appended to when a run is resumed)."""
    logs = [r["dir"].parent / "logs" / f"{r['dir'].name}.log" for r in runs]
    with ThreadPoolExecutor(max(jobs, 1)) as pool:
        for f in [pool.submit(_run, resumable(r), runner, lg) for r, lg in zip(runs, logs)]:
            f.result()


def main(argv: list[str] | None = None, runner=subprocess.run) -> int:
    p = argparse.ArgumentParser(prog="python scripts/reproduce.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits only, one seed, 600 steps (CI)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per dataset in full mode (default: digits 10, mnist 3)")
    p.add_argument("--presets", default="digits,mnist", help="comma-separated datasets for full mode")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once (CPU: cores/jobs threads each)")
    p.add_argument("--out", default=None, help="output root (default runs/reproduce/<stamp>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the cost, run nothing")
    p.add_argument("--no-branches", action="store_true", help="base runs, report and figures only (no branches)")
    args = p.parse_args(argv)
    presets = tuple(x for x in args.presets.split(",") if x)
    if args.jobs < 1 or (args.seeds is not None and args.seeds < 1) or not presets or any(x not in FULL for x in presets):
        p.error(f"--jobs and --seeds must be ≥ 1 and --presets a subset of {','.join(FULL)}")
    seeds = None if args.seeds is None else list(range(args.seeds))
    out = Path(args.out) if args.out else ROOT / "runs" / "reproduce" / f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
    entries = plan(args.quick, seeds, out, presets, branches=not args.no_branches)
    print(expected_cost(entries, args.quick), flush=True)
    if args.dry_run:
        for e in entries:
            for b in e["base"]:
                print("+ " + " ".join(b["cmd"][1:]))
            print(f"  then branches from step {e['t0']}: half, swa:<h>, ema:<γ>:<h> (h from the calibration)")
            if e.get("posthoc"):
                print(f"  then per seed: python -m empirical.posthoc s<seed> --schedule {POSTHOC_TARGET}:<h> --from "
                      f"{e['t0']} (the kept checkpoints' average that emulates the {POSTHOC_TARGET} branch)")
        return 0
    if args.jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    for e in entries:
        _run_all(e["base"], runner, args.jobs)
        h_swa, h_ema, text = calibrated_h([b["dir"] for b in e["base"]])
        print(f"{e['preset']}: {text}", flush=True)
        branches = branch_commands(e, h_swa, h_ema) if not args.no_branches else []
        _run_all(branches, runner, args.jobs)
        averages = posthoc_commands(e, h_swa)
        for ph in averages:          # seconds each; skipped when an earlier reproduction already wrote it
            if not (ph["dir"] / "summary.json").is_file():
                _run(ph["cmd"], runner, ph["dir"].parent / "logs" / f"{ph['dir'].name}.log")
        dirs = [str(b["dir"]) for b in e["base"]] + [str(b["dir"]) for b in branches]
        _run([sys.executable, "-m", "compare.report", *dirs, *[str(ph["dir"]) for ph in averages], "--out",
              str(e["root"] / "report"), *forecast_flags(e)], runner)
        _run([sys.executable, "-m", "figures.build", *dirs, "--out", str(e["root"] / "figures")], runner)
        print(f"report: {e['root'] / 'report' / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
