"""Reproduce the paper's claims on `digits` and `mnist`: one documented command.

    python scripts/reproduce.py                 # full: digits + mnist, 3 seeds, branches, report, figures
    python scripts/reproduce.py --quick         # CI: digits only, 1 seed, a few hundred steps (minutes on CPU)
    python scripts/reproduce.py --dry-run       # print the plan and the expected cost, run nothing

Stages, per dataset (everything is a subprocess, so this script never imports torch):
  1. base runs `python -m empirical.run PRESET --seed S` (constant-LR phase, EMA decays, SWA, two-point gaps),
     keeping the checkpoint at the branch step T0 (= the SWA start, inside the constant phase);
  2. calibrate the NQM on the raw weights of the base runs (compare.calibrate) to get the curvature h;
  3. equivalent-LR branches from each seed's T0 checkpoint (same data order): `half` (two-point ⇔ λ/2),
     `ema:GAMMA:h` per EMA decay (harmonic rule, theory.md §3.3), `swa:h` (1/t cooldown, theory.md §3.4);
  4. `python -m compare.report` on base + branch runs, and `python -m figures.build`.
Output: OUT/<preset>/{s<seed>, s<seed>-<branch>, report/, figures/}; default OUT = runs/reproduce/<stamp>.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Per-run wall-clock estimates on 2 CPU cores (minutes), from the presets' step counts; GPU is several times faster.
MINUTES_PER_RUN = {"digits": 1.5, "mnist": 8.0}
QUICK = {"digits": ["--steps", "400", "--decay-start", "320", "--ema-start", "40", "--ema-decays", "0.9,0.98",
                    "--swa-start", "160", "--two-point-gaps", "10,80", "--eval-every", "20", "--probe-every", "20",
                    "--bank-every", "5", "--align-every", "20", "--curv-every", "80"]}
FULL_T0 = {"digits": 600, "mnist": 1200}     # = the presets' swa_start: inside the constant-LR phase
QUICK_T0 = {"digits": 160}


def plan(quick: bool, seeds: list[int], out: Path) -> list[dict]:
    """One entry per dataset: its base commands (branches need the calibration, so they are built later)."""
    entries = []
    for preset in (["digits"] if quick else ["digits", "mnist"]):
        t0 = (QUICK_T0 if quick else FULL_T0)[preset]
        extra = QUICK.get(preset, []) if quick else []
        base = []
        for s in seeds:
            d = out / preset / f"s{s}"
            base.append({"seed": s, "dir": d, "cmd": [sys.executable, "-m", "empirical.run", preset, "--out", str(d),
                                                      "--seed", str(s), "--checkpoint-every", str(t0),
                                                      "--checkpoint-keep-every", str(t0), *extra]})
        entries.append({"preset": preset, "t0": t0, "extra": extra, "base": base, "root": out / preset})
    return entries


def branch_commands(entry: dict, h: float, ema_decays: list[float]) -> list[dict]:
    specs = ["half", f"swa:{h:.6g}"] + [f"ema:{g:g}:{h:.6g}" for g in ema_decays]
    out = []
    for b in entry["base"]:
        ckpt = b["dir"] / "checkpoints" / f"step_{entry['t0']:09d}.pt"
        for sp in specs:
            d = entry["root"] / f"s{b['seed']}-{sp.split(':')[0]}{'-' + sp.split(':')[1] if sp.startswith('ema') else ''}"
            out.append({"dir": d, "cmd": [sys.executable, "-m", "empirical.run", entry["preset"], "--out", str(d),
                                          "--seed", str(b["seed"]), "--branch-from", str(ckpt),
                                          "--branch-schedule", sp, *entry["extra"]]})
    return out


def calibrated_h(dirs: list[Path]) -> tuple[float, list[float]]:
    """Curvature h₀ of the one-scale NQM fitted to the base runs' raw weights, and the runs' EMA decays."""
    from compare.calibrate import calibrate
    from compare.load import group_runs, load_runs
    setup = group_runs(load_runs(dirs))[0]
    cal = calibrate(setup)
    return float(cal.h[0]), [float(g) for g in setup.config.get("ema_decays", [])]


def expected_cost(entries: list[dict], seeds: list[int], quick: bool) -> str:
    lines, total = [], 0.0
    for e in entries:
        n_runs = len(seeds) * (1 + 2 + 2)           # base + half + swa + 2 EMA branches
        per = MINUTES_PER_RUN[e["preset"]] * (0.3 if quick else 1.0)
        total += n_runs * per
        lines.append(f"  {e['preset']}: {n_runs} runs × ~{per:.1f} min")
    return "expected cost (2 CPU cores; GPU faster):\n" + "\n".join(lines) + f"\n  total ≈ {total:.0f} min + report/figures ≈ 1 min"


def _run(cmd: list[str], runner) -> None:
    print("+ " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
    r = runner(cmd, cwd=str(ROOT))
    if r.returncode != 0:
        raise SystemExit(f"reproduce: command failed with exit {r.returncode}: {' '.join(cmd)}")


def main(argv: list[str] | None = None, runner=subprocess.run) -> int:
    p = argparse.ArgumentParser(prog="python scripts/reproduce.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits only, one seed, few hundred steps (CI)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per dataset (full mode; ≥ 3 for seed bands)")
    p.add_argument("--out", default=None, help="output root (default runs/reproduce/<stamp>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the cost, run nothing")
    args = p.parse_args(argv)
    seeds = [0] if args.quick else list(range(max(args.seeds, 1)))
    out = Path(args.out) if args.out else ROOT / "runs" / "reproduce" / f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
    entries = plan(args.quick, seeds, out)
    print(expected_cost(entries, seeds, args.quick), flush=True)
    if args.dry_run:
        for e in entries:
            for b in e["base"]:
                print("+ " + " ".join(b["cmd"][1:]))
            print(f"  then branches from step {e['t0']}: half, swa:<h>, ema:<γ>:<h> (h from the calibration)")
        return 0
    for e in entries:
        for b in e["base"]:
            _run(b["cmd"], runner)
        h, decays = calibrated_h([b["dir"] for b in e["base"]])
        print(f"calibrated curvature h₀ = {h:.4g} (1/LR units) for {e['preset']}", flush=True)
        branches = branch_commands(e, h, decays)
        for b in branches:
            _run(b["cmd"], runner)
        dirs = [str(b["dir"]) for b in e["base"]] + [str(b["dir"]) for b in branches]
        _run([sys.executable, "-m", "compare.report", *dirs, "--out", str(e["root"] / "report")], runner)
        _run([sys.executable, "-m", "figures.build", *dirs, "--out", str(e["root"] / "figures")], runner)
        print(f"report: {e['root'] / 'report' / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
