"""Reproduce the paper's claims on `digits` and `mnist`: one documented command.

    python scripts/reproduce.py                 # full: digits (10 seeds) + mnist (3 seeds), branches, report, figures
    python scripts/reproduce.py --quick         # CI: digits only, 1 seed, 600 steps (~2 min on CPU)
    python scripts/reproduce.py --dry-run       # print the plan and the expected cost, run nothing

Stages, per dataset (everything is a subprocess, so this script never imports torch):
  1. base runs `python -m empirical.run PRESET --seed S` (constant-LR phase, EMA decays, SWA from the branch step
     T0, two-point gaps), keeping the checkpoint at T0, a third of the way into the quasi-stationary window;
  2. predictions before any branch runs: `python -m compare.branch_prediction` calibrates the NQM on the base runs'
     raw trajectory from the window's start to T0 only and writes, per seed and branch, the predicted branch
     trajectory and gain over T0 to the end of the constant phase, and OUT/<preset>/predictions/plan.json;
  3. the branches of the plan from each seed's T0 checkpoint (same data order), each recording its prediction's
     SHA-256 (`--prediction`): `half` (λ/2: two points far apart, theory.md §3.5 — for a constant-LR parent also
     the plain LR halving), `match:<average>` per EMA and for the SWA (the constant LR λ_b the model says matches
     that average over the window, theory.md §3.10), `swa` (the 1/t cooldown, §3.4); each runs to the end of the
     parent's constant-LR phase (`--max-steps`), where the predictions end;
  3b. (digits) the post-hoc average of each seed's kept constant-LR checkpoints that emulates the cooldown branch
     (`python -m empirical.posthoc`, theory.md §3.6a): the base runs keep a checkpoint every POSTHOC_EVERY steps;
  4. `python -m compare.report` on base + branch + post-hoc runs (each branch judged against its prediction; the
     forecast calibrated on the same first third of the window, the rest predicted), and `python -m figures.build`.
Output: OUT/<preset>/{s<seed>, s<seed>-<branch>, s<seed>-posthoc-swa, report/, figures/}; default OUT =
runs/reproduce/<stamp>.
Interrupted? Run the same command with the same --out: started runs resume from their last checkpoint, finished ones
are skipped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from empirical import flags  # noqa: E402  (parses and validates a command line without importing torch)

# Wall-clock minutes of one (base, branch) run with --jobs 2 on 2 CPU cores (1 thread per run): digits measured on
# the 10-seed reproduction of docs/results.md (base ≈ 2.5 min, a 700-step branch ≈ 1.5 min, two at a time, other jobs
# on the machine); mnist an estimate scaled from 1.3 s/step on 1,500-step runs two at a time, before the dense
# evaluation every 25 steps (more evaluations: expect longer). Branches run from T0 to the end of the constant phase.
MINUTES_PER_RUN = {"digits": (2.5, 1.5), "mnist": (46.0, 20.0)}
# Full mode: digits runs its preset as is (constant LR to 2,100, window 1,050-2,100, lags up to 300). mnist is
# shortened to a 2,100-step timeline (constant LR to 1,800; window 900-1,800 = 3 × the longest lag, 300): evaluations
# dominate the cost of these runs on a CPU (each variant recomputes BN and passes the test split), so the test split
# is evaluated every 25 steps from 850 (lags 25-300: the branch prediction calibrates on 900-1,200, lags up to 100),
# BN recomputed on 4 batches and the training split evaluated on 1,000 images; the measurements keep the preset's
# cadences.
FULL = {"digits": ["--swa-start", "1400"],
        "mnist": ["--steps", "2100", "--decay-start", "1800", "--ema-start", "200", "--swa-start", "1200",
                  "--eval-every", "100", "--eval-dense-every", "25", "--eval-dense-from", "850", "--bn-batches", "4",
                  "--train-eval-size", "1000", "--two-point-gaps", "25,50,75,100,150,200,300"]}
# Quick mode (CI): digits, 900 steps, constant LR to 720 (window 360-720), branches from 480 (the calibration sees
# 360-480: lags 10-40); a few minutes on 2 cores.
QUICK = {"digits": ["--steps", "900", "--decay-start", "720", "--ema-start", "120", "--ema-decays", "0.95,0.99",
                    "--swa-start", "480", "--two-point-gaps", "10,20,30,40,80,120", "--eval-every", "60",
                    "--eval-dense-every", "10", "--eval-dense-from", "300", "--probe-every", "60",
                    "--bank-every", "10", "--align-every", "60", "--curv-every", "180"]}
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
# The quasi-stationary window compare/ calibrates on (the last half of the constant phase, compare.calibrate.window)
# starts at WINDOW_START; the branches start a third of the way in, at T0 (= the runs' swa_start, so the SWA cooldown
# branch and the SWA average start together): the model is calibrated on WINDOW_START–T0 only and predicts every
# branch before it runs, over T0 to the end of the constant phase.
WINDOW_START = {"digits": 1050, "mnist": 900}
FULL_T0 = {"digits": 1400, "mnist": 1200}
QUICK_WINDOW_START = {"digits": 360}
QUICK_T0 = {"digits": 480}


def plan(quick: bool, seeds: list[int] | None, out: Path,
         presets: tuple[str, ...] = ("digits", "mnist"), branches: bool = True) -> list[dict]:
    """One entry per dataset: its base commands (branches need the calibration, so they are built later).
    ``seeds`` None: the per-dataset default (SEEDS; one seed in quick mode). Without ``branches`` no post-hoc
    average is made either (it is compared with a branch), so the base runs keep only the T0 checkpoint."""
    entries = []
    for preset in (["digits"] if quick else presets):
        seeds_here = seeds if seeds is not None else ([0] if quick else list(range(SEEDS[preset])))
        t0 = (QUICK_T0 if quick else FULL_T0)[preset]
        start = (QUICK_WINDOW_START if quick else WINDOW_START)[preset]
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
        entries.append({"preset": preset, "t0": t0, "window_start": start, "end": end, "extra": extra, "base": base, "root": out / preset,
                        "branches": branches,
                        "posthoc": branches and preset in (QUICK_POSTHOC_EVERY if quick else POSTHOC_EVERY)})
    return entries


def forecast_flags(entry: dict) -> list[str]:
    """compare.report's forecast: calibrated on the first third of the window (its start to the branch step T0)
    only, the rest of the window and the end of the run predicted (compare/forecast.py)."""
    a, t0, end = entry["window_start"], entry["t0"], entry["end"]
    return ["--calibrate", f"{a}:{t0}", "--window", f"{t0}:{end}"] if a < t0 < end else []   # [] : no window


def prediction_command(entry: dict) -> list[str]:
    """Predict every branch before it runs (compare/branch_prediction.py): calibrate on the base runs' raw trajectory
    from the window's start to the branch step T0 only; one file per (seed, branch) and OUT/<preset>/predictions/
    plan.json with the resolved schedules (λ/2, the matched constant-LR switch per average, the SWA cooldown)."""
    return [sys.executable, "-m", "compare.branch_prediction", *[str(b["dir"]) for b in entry["base"]],
            "--calibrate", f"{entry['window_start']}:{entry['t0']}", "--branch-at", str(entry["t0"]),
            "--until", str(entry["end"]), "--out", str(entry["root"] / "predictions")]


def branch_commands(entry: dict, plan: dict) -> list[dict]:
    """One branch run per row of the prediction plan, from its seed's T0 checkpoint, recording the prediction's hash
    (--prediction); each stops at the end of the parent's constant phase, where the predictions end."""
    out = []
    for row in plan["branches"]:
        b = next(x for x in entry["base"] if str(x["dir"]) == row["parent"])
        ckpt = b["dir"] / "checkpoints" / f"step_{entry['t0']:09d}.pt"
        d = entry["root"] / f"s{b['seed']}-{row['label'].replace(':', '-')}"
        stop = ["--max-steps", str(entry["end"])]
        out.append({"dir": d, "stop": stop,
                    "cmd": [sys.executable, "-m", "empirical.run", entry["preset"], "--out", str(d),
                            "--seed", str(b["seed"]), "--branch-from", str(ckpt), "--branch-schedule", row["schedule"],
                            "--prediction", row["file"], *entry["extra"], *stop]})
    return out


def posthoc_commands(entry: dict, plan: dict) -> list[dict]:
    """Per seed: the post-hoc average of the base run's kept checkpoints whose noise kernel is the SWA cooldown
    branch's (same schedule text and branch point, so compare.report pairs them); [] where the preset keeps no
    checkpoint grid or the plan has no cooldown."""
    spec = next((r["schedule"] for r in plan["branches"] if r["label"] == POSTHOC_TARGET), None)
    if not entry.get("posthoc") or spec is None:
        return []
    return [{"dir": entry["root"] / f"s{b['seed']}-posthoc-{POSTHOC_TARGET}",
             "cmd": [sys.executable, "-m", "empirical.posthoc", str(b["dir"]), "--schedule", spec,
                     "--from", str(entry["t0"]), "--out", str(entry["root"] / f"s{b['seed']}-posthoc-{POSTHOC_TARGET}")]}
            for b in entry["base"]]


def expected_cost(entries: list[dict], quick: bool) -> str:
    """Wall-clock estimate for --jobs 2 on 2 CPU cores (runs two at a time); fewer cores or --jobs 1 take longer."""
    lines, total = [], 0.0
    for e in entries:
        base, branch = (m * (0.4 if quick else 1.0) for m in MINUTES_PER_RUN[e["preset"]])
        n = len(e["base"])                           # branches: half, match:<2 EMAs>, match:swa, swa per seed
        nb = 5 * n if e.get("branches", True) else 0
        wall = (n * base + nb * branch) / 2
        total += wall
        lines.append(f"  {e['preset']}: {n} base run(s) × ~{base:.1f} min + up to {nb} branches × ~{branch:.1f} min "
                     f"(labels whose schedules coincide share a run), two at a time ≤ {wall:.0f} min"
                     + (f" + {n} post-hoc average(s) × ~0.2 min" if e.get("posthoc") else ""))
    return ("expected cost (--jobs 2 on 2 CPU cores; GPU faster):\n" + "\n".join(lines)
            + f"\n  total ≤ {total:.0f} min + report/figures ≈ 1 min per dataset")


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
            print(f"  then: {' '.join(prediction_command(e)[1:])}")
            print(f"  then one branch per row of {e['root'] / 'predictions' / 'plan.json'} from step {e['t0']} "
                  f"(half, match:<each EMA>, match:swa, swa), each with --prediction FILE")
            if e.get("posthoc"):
                print(f"  then per seed: python -m empirical.posthoc s<seed> --schedule {POSTHOC_TARGET}:<h> --from "
                      f"{e['t0']} (the kept checkpoints' average that emulates the {POSTHOC_TARGET} branch)")
        return 0
    if args.jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    for e in entries:
        _run_all(e["base"], runner, args.jobs)
        branches, averages = [], []
        if not args.no_branches:
            plan_file = e["root"] / "predictions" / "plan.json"
            if not plan_file.is_file():      # written once: a resumed reproduction keeps the first predictions
                _run(prediction_command(e), runner)
            predicted = json.loads(plan_file.read_text())
            branches = branch_commands(e, predicted)
            _run_all(branches, runner, args.jobs)
            averages = posthoc_commands(e, predicted)
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
