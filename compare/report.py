"""Calibrate the NQM on raw weights, predict the averaged weights and equivalent-LR branches, write a report.

    python -m compare.report RUN_DIR [RUN_DIR ...] [--out DIR] [--scales 1] [--floor model|min-avg] [--split test]

Several run directories = seeds (and branches) of one setup; they are grouped by config (compare/load.py).
Writes DIR/report.md (with its PNG figures), DIR/metrics.json and the PNGs; default DIR runs/compare/<stamp>-report.
Bad input: one line on stderr naming the problem and the fix, exit status 2, nothing written.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import numpy as np

from compare.analysis import Analysis, analyse
from compare.claims import THRESHOLDS, claim_table
from compare.load import group_runs, load_runs
from theory.cli import OneLineParser, pipe_safe_stdout
from theory.rundir import RunDirError, atomic_write_bytes, atomic_write_json


def _f(x, digits: int = 3) -> str:
    try:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"
    except TypeError:
        return str(x)


def calibration_json(a: Analysis) -> dict:
    c, pm = a.cal, a.cal.probes
    se = np.sqrt(np.clip(np.diag(np.nan_to_num(c.cov)), 0, None))
    J = c.h.size
    spread = lambda m: (m.std(axis=0, ddof=1).tolist() if m.ndim == 2 and m.shape[0] > 1 else None)  # noqa: E731
    return {"lr": c.lr, "momentum": c.momentum, "lam_eff": c.lam_eff, "window": list(c.window),
            "h": c.h.tolist(), "h_rel_se_fit": se[:J].tolist(), "h_seed_sd": spread(c.seed_h),
            "noise_mass": c.s.tolist(), "noise_rel_se_fit": se[J:].tolist(), "noise_seed_sd": spread(c.seed_s),
            "alpha_eff": c.alpha_eff.tolist(), "raw_excess_pred": c.raw_excess,
            "probe": {"S_sum_h2v": pm.S, "G_tr_H2Sigma": pm.G, "C_half_sum_h3": pm.C, "eta_star": pm.eta_star,
                      "heldout_root": pm.root, "taylor_curvature": pm.taylor_curv, "rows": pm.n_rows},
            "top_eig": list(c.top_eig), "fit": c.residuals, "floor": a.metrics["floor"]}


def metrics_json(analyses: list[Analysis], tables: list[list[dict]]) -> dict:
    out = {"schema_version": 1, "setups": []}
    for a, tab in zip(analyses, tables):
        out["setups"].append({
            "runs": [str(r.path) for r in a.setup.base], "branches": [str(r.path) for r in a.setup.branches],
            "n_seeds": len(a.setup.base), "calibration": calibration_json(a), "variants": a.metrics["variants"],
            "branch_results": [{k: v for k, v in b.items() if k != "curve"} for b in a.branches],
            "claims": tab, "thresholds": THRESHOLDS})
    return out


FLOOR_NOTE = ("Excess loss = loss − floor. The floor is a modelling choice: by default (`model`) it is the mean raw "
              "eval loss over the quasi-stationary window minus the calibrated model's raw stationary excess, so it "
              "uses raw weights only; `--floor min-avg` uses the lowest window-mean loss of any averaged variant. "
              "Because small excesses make relative errors explode, the floor-free averaging gain L_raw − L_avg is "
              "reported beside every excess error.")


def report_md(analyses: list[Analysis], tables: list[list[dict]], figures: list[Path], command: list[str]) -> str:
    L = ["# NQM comparison report", "", f"Command: `{' '.join(command)}`", ""]
    for i, (a, tab) in enumerate(zip(analyses, tables)):
        c, pm = a.cal, a.cal.probes
        cj = calibration_json(a)
        L += [f"## Setup {i + 1}: {len(a.setup.base)} seed run(s), {len(a.setup.branches)} branch run(s)", "",
              "Runs: " + ", ".join(f"`{r.path}`" for r in (*a.setup.base, *a.setup.branches)), "",
              "### Calibration (raw weights only)", "",
              f"* λ = {_f(c.lr)}, μ = {_f(c.momentum)}, λ_eff = λ/(1−μ) = {_f(c.lam_eff)}; quasi-stationary window: "
              f"steps {c.window[0]}–{c.window[1]} (last half of the constant-LR phase).",
              f"* One-step probes ({pm.n_rows} rows): training optimum η* = {_f(pm.eta_star[0])} ± {_f(pm.eta_star[1], 2)} "
              f"(= {_f(pm.eta_star[0] / c.lam_eff)} λ_eff); held-out gain root = {_f(pm.root[0])} ± {_f(pm.root[1], 2)}; "
              f"Σh²v = {_f(pm.S[0])} ± {_f(pm.S[1], 2)}; tr(H²Σ) = {_f(pm.G[0])} ± {_f(pm.G[1], 2)}; "
              f"Taylor curvature gᵀHg/‖g‖² = {_f(pm.taylor_curv[0])}; top Hessian eigenvalue = {_f(c.top_eig[0])}.",
              f"* Fitted scales (J = {c.h.size}): h = {', '.join(_f(x) for x in c.h)} (fit rel. s.e. "
              f"{', '.join(_f(x, 2) for x in cj['h_rel_se_fit'])}; seed s.d. {cj['h_seed_sd'] or 'n/a (one seed)'}); "
              f"noise mass = {', '.join(_f(x) for x in c.s)} (rel. s.e. {', '.join(_f(x, 2) for x in cj['noise_rel_se_fit'])}); "
              f"α_eff = {', '.join(_f(x) for x in c.alpha_eff)}; χ² = {_f(c.residuals['chi2'])} on {c.residuals['dof']} dof"
              + (f"; left out of the fit: {'; '.join(c.residuals['excluded'])}." if c.residuals.get("excluded") else "."),
              f"* Floor ({a.floor_mode}) = {_f(a.floor, 5)}; model floor {_f(c.floor, 5)} ± {_f(c.floor_se, 2)}; "
              f"min-avg floor {_f(a.metrics['floor']['min_avg_floor'], 5)}. {FLOOR_NOTE}", "",
              "### Predicted vs observed (averaged weights, never used in the fit)", "",
              "| variant | n | excess pred (final) | excess obs (final ± sd) | rel. err final | mean abs rel. err (window) "
              "| gain pred | gain obs ± sd | gain rel. err | 2sd band coverage | λ_eq |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in a.metrics["variants"].items():
            if not m.get("n_seeds"):
                L.append(f"| {name} | – | {m.get('why', '')} | | | | | | | | |")
                continue
            L.append(f"| {name} | {m['n_seeds']} | {_f(m['excess_pred_final'])} | {_f(m['excess_obs_final'])} ± "
                     f"{_f(m['excess_obs_final_sd'], 2)} | {_f(m['rel_err_final'], 2)} | {_f(m['rel_err_window_mean_abs'], 2)} "
                     f"| {_f(m['gain_pred_window'])} | {_f(m['gain_obs_window'])} ± {_f(m['gain_obs_window_sd'], 2)} | "
                     f"{_f(m['gain_rel_err'], 2)} | {_f(m['band_coverage_2sd'], 2)} | {_f(m['equivalent_lr'])} |")
        L += ["", "### Branches", ""]
        if not a.branches:
            L.append("No branch run given: the equivalent-LR claims are not testable here.")
        for b in a.branches:
            L.append(f"* `{b['path']}`: {b['kind']} branch from step {b['t0']}, λ_b = {_f(b['lr'])} ({_f(b['lr_ratio'])} λ); "
                     f"equivalent run of: {b['matches'] or 'no variant'} (matched by {b.get('matched_by', 'equivalent LR')}); predicted-vs-observed excess mean abs rel. err "
                     f"{_f(b.get('rel_err_pred_window_mean_abs'), 2)} (floor-free gain L_raw − L_branch: rel. err "
                     f"{_f(b.get('branch_gain_rel_err_pred'), 2)}); gain captured {_f(b.get('gain_capture'), 2)}; "
                     f"avg − branch {_f(b.get('avg_minus_branch_mean'), 3)}; path distance "
                     f"{_f(b.get('path_distance_first'))} → {_f(b.get('path_distance_last'))}"
                     + (f"; not compared with its average: {b['not_compared']}" if b.get("not_compared") else ""))
        L += ["", "### Claims (theory.md §5)", "", "| claim | measurement | value | threshold | verdict | note |",
              "|---|---|---|---|---|---|"]
        esc = lambda x: str(x).replace("|", "\\|")   # noqa: E731  (a literal | would split the table cell)
        L += [f"| {esc(r['claim'])} | {esc(r['measurement'])} | {esc(r['value'])} | {esc(r['threshold'])} | "
              f"**{r['verdict']}** | {esc(r['note'])} |" for r in tab]
        L.append("")
    L += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m compare.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (seeds and/or branches)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare/<stamp>-report)")
    p.add_argument("--scales", type=int, default=1, choices=(1, 2, 3), help="curvature scales J in the fit")
    p.add_argument("--floor", choices=("model", "min-avg"), default="model", help="loss-floor estimate (see report)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which eval loss is compared")
    p.add_argument("--no-figures", action="store_true", help="skip the PNGs (faster)")
    args = p.parse_args(argv)
    argv_used = argv if argv is not None else sys.argv[1:]
    try:
        setups = group_runs(load_runs(args.runs))
        analyses = [analyse(s, scales=args.scales, split=args.split, floor=args.floor) for s in setups]
        tables = [claim_table(a) for a in analyses]
    except (RunDirError, ValueError, KeyError) as e:
        print(f"compare.report: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs/compare") / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-report"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"compare.report: --out {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    command = ["python", "-m", "compare.report", *argv_used]
    figs = []
    try:
        if not args.no_figures:
            from figures.build import render
            figs = render(analyses, out, command)
        atomic_write_json(out / "metrics.json", metrics_json(analyses, tables))
        atomic_write_bytes(out / "report.md", report_md(analyses, tables, figs, command).encode())
    except OSError as e:   # every file is written atomically: none is left half written
        print(f"compare.report: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    with pipe_safe_stdout():   # `... | head`: every file is still written, no BrokenPipeError traceback
        code = main()
    sys.exit(code)
