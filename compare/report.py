"""Calibrate the NQM on raw weights, predict the averaged weights and equivalent-LR branches, write a report.

    python -m compare.report RUN_DIR [RUN_DIR ...] [--out DIR] [--scales J] [--floor model|min-avg] [--split test]

Several run directories = seeds (and branches) of one setup; they are grouped by config (compare/load.py).
Writes DIR/report.md and DIR/metrics.json; default DIR runs/compare/<stamp>-report. The figures are drawn by
``python -m figures.build`` on the same runs (compare never imports figures; compare.figure_data prepares their data).
Bad input: one line on stderr naming the problem and the fix, exit status 2, nothing written.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import numpy as np

from compare import verdicts
from compare.analysis import Analysis, analyse
from compare.claims import THRESHOLDS, claim_table
from compare import branch_prediction
from compare.forecast import forecast
from compare.load import group_runs, load_runs
from common.cli import DefaultsFormatter, OneLineParser, command_note, pipe_safe_stdout
from common.rundir import RunDirError, atomic_write_bytes, atomic_write_json


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
    lag = lambda st: {"lags": st.lags.tolist(), "D": st.D.tolist(), "se": st.se.tolist(),  # noqa: E731
                      "pairs": st.pairs.tolist()}
    return {"source": c.source, "lr": c.lr, "momentum": c.momentum, "lam_eff": c.lam_eff, "window": list(c.window),
            "h": c.h.tolist(), "h_rel_se_fit": se[:J].tolist(), "h_seed_sd": spread(c.seed_h),
            "noise_mass": c.s.tolist(), "noise_rel_se_fit": se[J:].tolist(), "noise_seed_sd": spread(c.seed_s),
            "alpha_eff": c.alpha_eff.tolist(), "raw_excess_pred": c.raw_excess,
            "structure": lag(c.structure) if c.structure is not None else None,
            "structure_per_seed": [{"run": str(r.path), **lag(st)} for r, st in zip(a.setup.base, c.seed_structures)],
            "probe": None if pm is None else {
                "S_sum_h2v": pm.S, "G_tr_H2Sigma": pm.G, "C_half_sum_h3": pm.C, "eta_star": pm.eta_star,
                "heldout_root": pm.root, "taylor_curvature": pm.taylor_curv, "rows": pm.n_rows},
            "top_eig": list(c.top_eig), "fit": c.residuals, "floor": a.metrics["floor"]}


def forecast_text(fc: dict) -> str:
    """One paragraph on a forecast (compare/forecast.py): gains over C–D and final losses, model beside its nulls."""
    (a, b), (c, d) = fc["calibrated_on"], fc["predicted_on"]
    if fc.get("not_testable"):
        return f"Forecast (calibrate {a}–{b}, predict {c}–{d}): not testable ({fc['not_testable']})."
    fin = fc["final"]
    text = (f"Forecast (calibrated on steps {a}–{b} only; h = {', '.join(_f(x) for x in fc['calibration']['h'])}, "
            f"{'identified' if fc['calibration']['identified'] else 'NOT identified'}): ")
    if fc.get("n_cells"):
        text += (f"gains over {c}–{d}: {fc['share']:.0%} of {fc['n_cells']} cells agree; nulls "
                 + "; ".join(f"{k}: {v:.0%}" for k, v in fc["null"].items()) + f" → **{fc['verdict']}**. ")
    else:
        text += f"no average evaluated over {c}–{d}. "
    if fin["cells"]:
        text += ("Final losses: " + (f"{fin['share']:.0%} of {len(fin['cells'])} agree; null ({fin['null']}) "
                                     f"{fin['null_share']:.0%}." if fin["testable"] else f"not testable ({fin['why']})."))
    return text


def metrics_json(analyses: list[Analysis], tables: list[list[dict]]) -> dict:
    out = {"schema_version": 1, "setups": []}
    for a, tab in zip(analyses, tables):
        out["setups"].append({
            "runs": [str(r.path) for r in a.setup.base], "branches": [str(r.path) for r in a.setup.branches],
            "n_seeds": len(a.setup.base), "calibration": calibration_json(a), "variants": a.metrics["variants"],
            "bn_artefact": a.metrics.get("bn_artefact", []),
            "seed_spread": seed_spread(a),
            "branch_results": [{k: v for k, v in b.items() if k != "curve"} for b in a.branches],
            "posthoc": [str(r.path) for r in a.setup.posthoc], "posthoc_results": a.posthoc,
            "null": a.metrics.get("null", {}),
            "model_score": {k: v for k, v in a.metrics.get("model_score", {}).items() if k != "agree"},
            "physical_checks": a.metrics.get("physical_checks", []),
            "identification": a.metrics.get("identification", {}),
            "three_way": a.metrics.get("three_way", {}),
            "cross_fit": a.metrics.get("cross_fit", {}),
            "forecast": a.metrics.get("forecast"),
            "per_branch": (a.metrics.get("branches_predicted") or {}).get("per_branch", []),
            "branch_verdicts": {k: {x: y for x, y in v.items() if x != "agree"} for k, v in
                                ((a.metrics.get("branches_predicted") or {}).get("by_label") or {}).items()},
            "two_point_per_seed": a.metrics.get("two_point_per_seed", []),
            "branches_not_compared": (a.metrics.get("branches_predicted") or {}).get("not_compared", []),
            "truth": truth_json(a),
            "claims": tab, "thresholds": THRESHOLDS})
    return out


def truth_json(a: Analysis) -> dict | None:
    """Where the runs were made on a loss whose answer is known (the ``quadratic`` preset: config ``truth``), each
    true scale beside the fitted one it is closest to in h, and whether the fit's 2-s.e. interval holds it."""
    truth = a.setup.config.get("truth")
    ident = a.metrics.get("identification") or {}
    if not truth or not ident:
        return None
    rows = []
    for t in truth.get("scales", []):
        if not t.get("noise"):      # a scale without noise adds nothing to D(τ) but through the drift
            continue
        k = min(range(len(ident["scales"])), key=lambda i: abs(np.log(ident["scales"][i]["h"] / t["h"])))
        f = ident["scales"][k]
        rows.append({"h_true": t["h"], "noise_true": t["noise"], "h_fit": f["h"], "h_se": f["h_se"],
                     "noise_fit": f["noise"], "noise_se": f["noise_se"], "identified": f["identified"],
                     "h_range": f["h_range"], "noise_range": f["noise_range"],
                     "h_covered": bool(f["h_range"][0] <= t["h"] <= f["h_range"][1]),
                     "noise_covered": bool(f["noise_range"][0] <= t["noise"] <= f["noise_range"][1])})
    drift = truth.get("drift") or {}
    c_true = float(drift.get("D_coefficient", 0.0) or 0.0)
    d = ident["drift"]
    return {"scales": rows, "drift_true": c_true, "drift_fit": d["c"], "drift_se": d["c_se"],
            "drift_covered": bool(abs(d["c"] - c_true) <= 2 * d["c_se"]) if np.isfinite(d["c_se"]) else False}


def seed_spread(a: Analysis) -> dict:
    """Per predicted variant: across-seed mean, s.d. and s.e. of the observed window-mean gain, and what the number
    of seeds resolves: a difference between predicted and observed MEAN gains below 2 s.e. cannot be told apart."""
    out = {}
    for name, m in a.metrics["variants"].items():
        obs = np.array([c["gain_obs"] for c in m.get("per_seed", [])], float)
        if obs.size == 0:
            continue
        n = int(obs.size)
        sd = float(obs.std(ddof=1)) if n > 1 else float("nan")
        mean = float(obs.mean())
        out[name] = {"n_seeds": n, "gain_obs_mean": mean, "gain_obs_sd": sd,
                     "gain_obs_se_of_mean": sd / np.sqrt(n) if n > 1 else float("nan"),
                     "relative_sd": abs(sd / mean) if n > 1 and mean != 0 else float("nan")}
    return out


def _spread_text(a: Analysis) -> list[str]:
    sp = seed_spread(a)
    if not sp:
        return []
    L = ["Seed-to-seed spread of the observed window-mean gain (across seeds, not within a run):", ""]
    for name, x in sp.items():
        if x["n_seeds"] < 2:
            L.append(f"* {name}: one seed — no spread; a single run supports only a per-run statement.")
            continue
        L.append(f"* {name}: mean {_f(x['gain_obs_mean'])}, s.d. {_f(x['gain_obs_sd'], 2)} ({_f(100 * x['relative_sd'], 2)} % "
                 f"of the mean) over {x['n_seeds']} seeds; s.e. of the mean {_f(x['gain_obs_se_of_mean'], 2)}, so a "
                 f"predicted mean gain closer than {_f(2 * x['gain_obs_se_of_mean'], 2)} to the observed one cannot be "
                 f"told apart from it with these seeds.")
    L += ["", "What the number of seeds supports: the per-seed verdicts test the model run by run (each against its own "
          "block s.e.); a statement about the mean gain across seeds is limited by the spread above, and with fewer than "
          "about 5 seeds by the uncertainty of the spread itself (its relative s.e. is ≈ 1/√(2(n−1)))."]
    return L


def _per_seed_text(a: Analysis) -> list[str]:
    rows = [(name, c, t) for name, m in a.metrics["variants"].items()
            for c, t in zip(m.get("per_seed", []), m.get("per_seed_terms", []))]
    if not rows:
        return ["No per-seed prediction: the calibration is not from two-point averages (no lag grid recorded)."]
    L = ["| variant | run | gain pred ± s.e. | = drift + fluctuation + transient | gain obs ± block s.e. | agrees | "
         "plain identity (stationary D for every pair) | agrees |", "|---|---|---|---|---|---|---|---|"]
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    for name, c, t in rows:
        L.append(f"| {name} | `{Path(c['run']).name}` | {_f(c['gain_pred'])} ± {_f(c.get('gain_pred_se'), 2)} | "
                 f"{_f(t['drift'])} + {_f(t['fluctuation'])} + {_f(t['transient'])} | {_f(c['gain_obs'])} ± "
                 f"{_f(c['gain_obs_se'], 2)} | {yes(t['agrees'])} | {_f(t['gain_pred_plain'])} | "
                 f"{yes(t['agrees_plain'])} |")
    n, good, plain = len(rows), sum(t["agrees"] for _, _, t in rows), sum(t["agrees_plain"] for _, _, t in rows)
    L += ["", f"Cells that agree: {good} of {n} with the transient term, {plain} of {n} with the plain identity."]
    sc = a.metrics.get("model_score") or {}
    if sc.get("n_cells"):
        L += ["", "Null predictors under the same rule (they know nothing of the model): "
              + "; ".join(f"{k}: {v:.0%}" for k, v in sc["null"].items())
              + f". Model: {sc['share']:.0%} → **{sc['verdict']}**. Median 2·s.e./|obs| = {_f(sc['median_2se_rel'], 2)}"
              + ("" if sc["can_test_15pct"] else f" (> {verdicts.TEST_POWER_MAX}: the noise, not the 15 % claim, sets "
                                                 "the tolerance; this run cannot test a 15 % claim)") + "."]
    fc = a.metrics.get("forecast") or {}
    if fc:
        L += ["", forecast_text(fc)]
    cf = a.metrics.get("cross_fit") or {}
    if cf.get("n_cells"):
        L += ["", f"Cross-fit (D(τ) from one half of the window, gains predicted on the other, both ways): "
              f"{cf['share']:.0%} of {cf['n_cells']} cells agree; nulls "
              + "; ".join(f"{k}: {v:.0%}" for k, v in cf["null"].items()) + f" → **{cf['verdict']}**."]
    return L


def _identification_text(a: Analysis) -> list[str]:
    """What the data identify, the physical checks and the three-way consistency, as report lines."""
    m = a.metrics
    ident = m.get("identification") or {}
    L = []
    if ident:
        L += ["| scale | h (1/LR) ± s.e. | h the data allow (Δχ² ≤ 4) | noise mass ± s.e. | noise the data allow | "
              "relaxation (steps) | identified |", "|---|---|---|---|---|---|---|"]
        for k, x in enumerate(ident["scales"], 1):
            L.append(f"| {k} | {_f(x['h'])} ± {_f(x['h_se'], 2)} | {_f(x['h_range'][0])} – {_f(x['h_range'][1])} | "
                     f"{_f(x['noise'])} ± {_f(x['noise_se'], 2)} | {_f(x['noise_range'][0])} – "
                     f"{_f(x['noise_range'][1])} | {_f(x['relax_steps'])} | "
                     f"{'yes' if x['identified'] else '**no**' + (' (on the fit limit)' if x['at_bound'] else '')} |")
        d, r = ident["drift"], ident["derived_ranges"]
        L += ["", f"* Drift term c·τ² of D(τ): c = {_f(d['c'])} ± {_f(d['c_se'], 2)} loss/step² "
                  f"({'significant' if d['identified'] else 'not significant'}).",
              f"* Lags used (both iterates inside the window, lag ≤ window/3): {ident['lags_used']}; dropped: "
              + (", ".join(f"{k} ({why})" for k, why in ident["lags_dropped"]) or "none") + ".",
              f"* Over the parameter sets the data allow: floor {_f(r['floor'][0])} – {_f(r['floor'][1])}, raw excess "
              f"{_f(r['raw_excess'][0])} – {_f(r['raw_excess'][1])}, SWA cooldown τ {_f(r['swa_cooldown_tau'][0])} – "
              f"{_f(r['swa_cooldown_tau'][1])} steps"
              + ("" if ident["all_identified"] else " — a scale is not identified, so these are ranges, not numbers")
              + "."]
    pc = m.get("physical_checks") or []
    if pc:
        L += ["", "Physical checks (a failure lowers every model claim to \"not reproduced\"):", ""]
        L += [f"* {c['check']}: {_f(c['value'])}" + (f" ± {_f(c['se'], 2)}" if np.isfinite(c['se']) else "")
              + f" — **{'passed' if c['passed'] else 'FAILED'}** ({c['note']})" for c in pc]
    tw = m.get("three_way") or {}
    if tw:
        L += ["", "One calibration, three measurements (predicted from the D(τ) fit vs observed):", ""]
        for g in tw["legs"]:
            L.append(f"* {g['measurement']}: " + (g["note"] if not np.isfinite(g["pred"]) else
                                                 f"pred {_f(g['pred'])} ± {_f(g['pred_se'], 2)}, obs {_f(g['obs'])} ± "
                                                 f"{_f(g['obs_se'], 2)} ({g['note']})")
                     + f" — {'agrees' if g['agrees'] else '**disagrees**'}")
        L.append(f"* Verdict: {tw['verdict']}.")
    truth = truth_json(a)
    if truth:
        L += ["", "Known truth (config `truth`, the quadratic closure):", ""]
        for t in truth["scales"]:
            L.append(f"* h true {_f(t['h_true'])} / fitted {_f(t['h_fit'])}, allowed {_f(t['h_range'][0])} – "
                     f"{_f(t['h_range'][1])} ({'inside' if t['h_covered'] else 'outside'}); noise true "
                     f"{_f(t['noise_true'])} / fitted {_f(t['noise_fit'])}, allowed {_f(t['noise_range'][0])} – "
                     f"{_f(t['noise_range'][1])} ({'inside' if t['noise_covered'] else 'outside'})")
        L.append(f"* drift c true {_f(truth['drift_true'])} / fitted {_f(truth['drift_fit'])} ± "
                 f"{_f(truth['drift_se'], 2)} ({'inside' if truth['drift_covered'] else 'outside'} 2 s.e.)")
    return L


def _structure_text(a: Analysis) -> list[str]:
    c = a.cal
    if c.structure is None:
        return []
    L = ["| lag τ (steps) | D(τ) pooled ± s.e. | " + " | ".join(f"`{r.path.name}`" for r in a.setup.base) + " |",
         "|---|---|" + "---|" * len(a.setup.base)]
    for i, k in enumerate(c.structure.lags):
        per = []
        for st in c.seed_structures:
            j = np.flatnonzero(st.lags == k)
            per.append(_f(st.D[j[0]]) if j.size else "n/a")
        L.append(f"| {k} | {_f(c.structure.D[i])} ± {_f(c.structure.se[i], 2)} | " + " | ".join(per) + " |")
    return L


FLOOR_NOTE = ("Excess loss = loss − floor. The floor is a modelling choice: by default (`model`) it is the mean raw "
              "eval loss over the quasi-stationary window minus the calibrated model's raw stationary excess, so it "
              "uses raw weights only; `--floor min-avg` uses the lowest window-mean loss of any averaged variant. "
              "Because small excesses make relative errors explode, the floor-free averaging gain L_raw − L_avg is "
              "reported beside every excess error.")


def _figures_text(analyses: list[Analysis], figures: list[Path]) -> list[str]:
    """The report's figure section: the PNGs a caller drew (e.g. figures.build.render into the report folder), else
    the command that draws them (the report itself draws nothing, so that compare does not import figures)."""
    if figures:
        return [f"![{p.stem}]({p.name})" for p in figures]
    runs = " ".join(str(r.path) for a in analyses for r in (*a.setup.base, *a.setup.branches))
    return [f"Drawn by `python -m figures.build {runs} --out DIR` (one PNG and one provenance JSON per figure)."]


def _posthoc_text(a: Analysis) -> list[str]:
    """One line per post-hoc average (empirical.posthoc): its target, weights and grid, and its loss beside the branch
    run of the same schedule (compare/analysis.py posthoc_vs_branch)."""
    if not a.posthoc:
        return ["No post-hoc average given (`python -m empirical.posthoc RUN --schedule SPEC --from STEP`)."]
    L = []
    for p in a.posthoc:
        head = (f"* `{p['path']}`: `{p['schedule']}`" + (f" from step {p['from']}" if p.get("from") is not None else "")
                + f", emulated at step {p['at']} with h = {_f(p['h'])}: {p['n_checkpoints']} checkpoints (spacing ≤ "
                f"{p['max_spacing']} steps), weight on the last {_f(p['weight_last'])}, negative mass "
                f"{_f(p['negative_mass'], 2)}; coarse grid vs per-step weights: kernel rel. error "
                f"{_f(p['kernel_rel_error'], 2)}, noise variance ratio {_f(p['variance_ratio'], 4)}. Loss: average "
                f"{_f(p['loss_posthoc'], 4)}, constant-LR iterate L_T {_f(p['loss_const'], 4)}")
        if "agrees" in p:
            head += (f", branch `{Path(p['branch']).name}` {_f(p['loss_branch'], 4)}: |Δ| = "
                     f"{_f(abs(p['posthoc_minus_branch']), 2)} vs tolerance {_f(p['tolerance'], 2)} ({p['tolerance_from']}; "
                     f"s.e. {_f(p['se'], 2)}), **{'agrees' if p['agrees'] else 'differs'}**; the average captures "
                     f"{_f(p['effect_captured'], 2)} of the schedule's effect L_T − L_branch = {_f(p['schedule_effect'], 2)}"
                     + (f"; sketch distance to the branch's weights: average {_f(p['sketch_dist_posthoc_branch'])}, "
                        f"constant-LR iterate {_f(p['sketch_dist_const_branch'])}"
                        if "sketch_dist_posthoc_branch" in p else ""))
        else:
            head += f"; not compared: {p.get('not_compared', '')}"
        L.append(head + ".")
    return L


def report_md(analyses: list[Analysis], tables: list[list[dict]], figures: list[Path], command: list[str]) -> str:
    L = ["# NQM comparison report", "", f"Command: `{' '.join(command)}`", ""]
    for i, (a, tab) in enumerate(zip(analyses, tables)):
        c, pm = a.cal, a.cal.probes
        cj = calibration_json(a)
        L += [f"## Setup {i + 1}: {len(a.setup.base)} seed run(s), {len(a.setup.branches)} branch run(s)", "",
              "Runs: " + ", ".join(f"`{r.path}`" for r in (*a.setup.base, *a.setup.branches)), "",
              "### Calibration (raw trajectory only)", "",
              (f"* Source: **two-point averages of raw iterates** at lags {', '.join(map(str, c.structure.lags))} "
               f"steps — the structure function D(τ) = 8[½(L_t + L_{{t−τ}}) − L(½(θ_t + θ_{{t−τ}}))] (theory.md §3.8a), "
               f"BN statistics recomputed for every variant alike. No EMA, SWA or N-point curve is used; the one-step "
               f"probes serve the probe claims only." if c.source == "two-point" else
               "* Source: **one-step probes** (no two-point lag grid was recorded): they weight directions by h² and "
               "h³ and miss the flat, slow directions that carry most of the averaging gain; record "
               "`--two-point-gaps` at several lags with `--eval-dense-every` for the two-point calibration."),
              f"* λ = {_f(c.lr)}, μ = {_f(c.momentum)}, λ_eff = λ/(1−μ) = {_f(c.lam_eff)}; quasi-stationary window: "
              f"steps {c.window[0]}–{c.window[1]} (last half of the constant-LR phase).",
              (f"* One-step probes ({pm.n_rows} rows): training optimum η* = {_f(pm.eta_star[0])} ± {_f(pm.eta_star[1], 2)} "
               f"(= {_f(pm.eta_star[0] / c.lam_eff)} λ_eff); held-out gain root = {_f(pm.root[0])} ± {_f(pm.root[1], 2)}; "
               f"Σh²v = {_f(pm.S[0])} ± {_f(pm.S[1], 2)}; tr(H²Σ) = {_f(pm.G[0])} ± {_f(pm.G[1], 2)}; "
               f"Taylor curvature gᵀHg/‖g‖² = {_f(pm.taylor_curv[0])}; top Hessian eigenvalue = {_f(c.top_eig[0])}."
               if pm is not None else "* One-step probes: none in the window."),
              f"* Fitted NQM spectrum (J = {c.h.size} scales, fitted to {'D(τ)' if c.source == 'two-point' else 'the probe moments'}): "
              f"h = {', '.join(_f(x) for x in c.h)} (fit rel. s.e. "
              f"{', '.join(_f(x, 2) for x in cj['h_rel_se_fit'])}; seed s.d. "
              f"{', '.join(_f(x, 2) for x in cj['h_seed_sd']) if cj['h_seed_sd'] else 'n/a (one seed)'}); "
              f"noise mass = {', '.join(_f(x) for x in c.s)} (rel. s.e. {', '.join(_f(x, 2) for x in cj['noise_rel_se_fit'])}); "
              f"α_eff = {', '.join(_f(x) for x in c.alpha_eff)}; χ² = {_f(c.residuals['chi2'])} on {c.residuals['dof']} dof"
              + (f"; left out of the fit: {'; '.join(c.residuals['excluded'])}." if c.residuals.get("excluded") else ".")
              + " It gives every equivalent LR below (λ_eq, the branches) and the model curves in the figures.",
              f"* Floor ({a.floor_mode}) = {_f(a.floor, 5)}; model floor {_f(c.floor, 5)} ± {_f(c.floor_se, 2)}; "
              f"min-avg floor {_f(a.metrics['floor']['min_avg_floor'], 5)}. {FLOOR_NOTE}", "",
              *_structure_text(a), "",
              "### What the data identify", "", *_identification_text(a), "",
              "### BatchNorm: one evaluation procedure for every variant", "",
              "Every variant, the raw weights included, is evaluated with BN statistics recomputed on the same fixed "
              "batches; `raw_running_bn` is the raw weights with their training-time running statistics (as deployed). "
              "Their difference is what an asymmetric comparison would have added to every averaging gain:", "",
              *([f"* `{Path(b['run']).name}`: L(raw_running_bn) − L(raw) = {_f(b['running_minus_recomputed'])} ± "
                 f"{_f(b['se'], 2)} (window mean ± block s.e.)" for b in a.metrics.get("bn_artefact", [])]
                or ["* not recorded (bn_mode is not 'recompute', or the runs predate `raw_running_bn`)."]), "",
              "### Per-seed verdicts: averaging gain predicted from the pair identity", "",
              "Gain = window mean of L_raw − L_avg, both BN-consistent. Prediction (compare/pairs.py, theory.md §3.8a) "
              "= drift L(θ_t) − Σ w_j L̄_j (the run's own raw losses, smoothed) + fluctuation ¼ Σ w_j w_k D(|j−k|) (the "
              "run's own stationary D(τ)) + transient (what pairs with a not-yet-stationary iterate add to D_jk: the "
              "decaying mean path before the window, and each iterate's own excursion, which matters for an EMA "
              "started from one iterate). The plain identity (stationary D for every pair, raw losses as measured) is "
              "shown beside it. s.e. of the observation = block s.e. over the window; s.e. of the prediction = D(τ)'s "
              "block covariance carried through the fluctuation term, with the block s.e. of the drift and transient "
              f"terms. Rule: {verdicts.RULE}.", "",
              *_per_seed_text(a), "", *_spread_text(a), "",
              "### NQM model curves vs observed (fitted spectrum; averaged weights never used in the fit)", "",
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
                     + (f"; not compared with its average: {b['not_compared']}" if b.get("not_compared") else "")
                     + (f"; compared from step {b['settle_step']:.0f}, before the model says the branch has settled "
                        f"(step {b['settle_step_model']:.0f})" if b.get("settled") is False else "")
                     + (f"; the parent's {b['matches']} still remembers its start (it forgets it at step "
                        f"{b['avg_settle_step_model']:.0f})" if b.get("avg_settled") is False else ""))
        bp = branch_prediction.per_branch_text(a.metrics.get("branches_predicted") or {})
        if bp:
            L += [""] + bp
        L += ["", "### Post-hoc averages of constant-LR checkpoints (theory.md §3.6a)", "", *_posthoc_text(a)]
        L += ["", "### Claims (theory.md §5)", "", "| claim | measurement | value | threshold | verdict | note |",
              "|---|---|---|---|---|---|"]
        esc = lambda x: str(x).replace("|", "\\|")   # noqa: E731  (a literal | would split the table cell)
        L += [f"| {esc(r['claim'])} | {esc(r['measurement'])} | {esc(r['value'])} | {esc(r['threshold'])} | "
              f"**{r['verdict']}** | {esc(r['note'])} |" for r in tab]
        L.append("")
    L += ["## Figures", ""] + _figures_text(analyses, figures) + [""]
    return "\n".join(L)


def console_summary(analyses: list[Analysis], tables: list[list[dict]]) -> str:
    """What ``compare.report`` prints (report.md has the details): per setup, the calibration, the per-seed
    predicted vs observed gains of every average, the branch and post-hoc comparisons, and each claim's verdict."""
    L = []
    for i, (a, tab) in enumerate(zip(analyses, tables), 1):
        c, s = a.cal, a.setup
        L.append(f"setup {i}: {len(s.base)} seed run(s), {len(s.branches)} branch run(s), {len(s.posthoc)} post-hoc; "
                 f"window {c.window[0]}-{c.window[1]}")
        L.append(f"  calibration ({c.source}): h = {', '.join(_f(x) for x in c.h)} 1/LR, noise mass = "
                 f"{', '.join(_f(x) for x in c.s)}, lr {c.lr:g}, momentum {c.momentum:g}")
        ident = a.metrics.get("identification") or {}
        for k, x in enumerate(ident.get("scales", []), 1):
            L.append(f"  scale {k}: h {_f(x['h'])} (allowed {_f(x['h_range'][0])}–{_f(x['h_range'][1])}), noise "
                     f"{_f(x['noise'])}: {'identified' if x['identified'] else 'NOT identified'}")
        if ident:
            L.append(f"  drift c = {_f(ident['drift']['c'])} ± {_f(ident['drift']['c_se'], 2)} loss/step²"
                     f" ({'significant' if ident['drift']['identified'] else 'not significant'})")
        for chk in a.metrics.get("physical_checks", []):
            if not chk["passed"]:
                L.append(f"  PHYSICAL CHECK FAILED: {chk['check']}: {_f(chk['value'])} ({chk['note']})")
        rows = [(name, cell, t) for name, m in a.metrics["variants"].items()
                for cell, t in zip(m.get("per_seed", []), m.get("per_seed_terms", []))]
        if rows:
            L.append(f"  {'average':<16} {'run':<10} {'gain pred':>10} {'± s.e.':>9} {'gain obs':>10} {'± s.e.':>9}  "
                     f"agrees")
            for name, cell, t in rows:
                L.append(f"  {name:<16} {Path(cell['run']).name[:10]:<10} {_f(cell['gain_pred']):>10} "
                         f"{_f(cell.get('gain_pred_se'), 2):>9} {_f(cell['gain_obs']):>10} "
                         f"{_f(cell['gain_obs_se'], 2):>9}  {'yes' if t['agrees'] else 'no'}")
            sc = a.metrics.get("model_score") or {}
            if sc.get("n_cells"):
                L.append(f"  cells agreeing: model {sc['share']:.0%}; nulls " + ", ".join(
                    f"{n} {v:.0%}" for n, v in sc["null"].items()) + f"; median 2·s.e./|obs| "
                    f"{_f(sc['median_2se_rel'], 2)}")
        fc = a.metrics.get("forecast")
        if fc:
            L.append("  " + forecast_text(fc).replace("**", ""))
        judged = {c["run"]: c for c in (a.metrics.get("branches_predicted") or {}).get("per_branch", [])}
        for b in a.branches:
            c = judged.get(str(b["path"]))
            what = (f"gain L_raw − L_branch predicted before it ran {_f(c['gain_pred'])} ± {_f(c['gain_pred_se'], 2)}, "
                    f"observed {_f(c['gain_obs'])} ± {_f(c['gain_obs_se'], 2)} ({'agrees' if c.get('agrees') else 'disagrees'})"
                    if c else "no prediction recorded before it ran")
            L.append(f"  branch {Path(b['path']).name} from step {b.get('t0')}: {what}")
        for label, sc in ((a.metrics.get("branches_predicted") or {}).get("by_label") or {}).items():
            L.append(f"  branches {label}: {sc['share']:.0%} of {sc['n_cells']} agree; nulls " + ", ".join(
                f"{n} {v:.0%}" for n, v in sc["null"].items()) + "".join(
                f"; {n} {v:.0%}" for n, v in sc.get("alternatives", {}).items()) + f" → {sc['verdict']}")
        for r in a.posthoc or []:
            L.append(f"  post-hoc {Path(r['path']).name} vs branch {Path(str(r.get('branch'))).name}: loss "
                     f"{_f(r.get('loss_posthoc'), 4)} vs {_f(r.get('loss_branch'), 4)} (agrees: "
                     f"{'yes' if r.get('agrees') else 'no'})")
        for row in tab:
            L.append(f"  [{row['verdict']}] {row['claim'].split(' (')[0]}")
    return "\n".join(L)


def build_parser() -> OneLineParser:
    # DefaultsFormatter: "(default: X)" once per option, none for None/False (the convention of every CLI here)
    p = OneLineParser(prog="python -m compare.report", description=__doc__.split("\n\n")[0],
                      epilog=command_note("compare.report"), formatter_class=DefaultsFormatter)
    p.add_argument("runs", nargs="+", help="run directories (seeds and/or branches)")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare/<stamp>-report)")
    p.add_argument("--scales", type=int, default=None, choices=(1, 2, 3),
                   help="curvature scales J of the fitted NQM spectrum (default: the fewest, up to 2, that D(τ) of "
                        "two-point averages asks for; 1 when the runs have no lag grid and the one-step probes are "
                        "used)")
    p.add_argument("--floor", choices=("model", "min-avg"), default="model", help="loss-floor estimate (see report)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which eval loss is compared")
    p.add_argument("--calibrate", default=None, metavar="A:B",
                   help="forecast: calibrate on steps A..B only (with --window C:D) and predict the averages' gains "
                        "over C..D and every variant's loss at the end of the run (compare/forecast.py)")
    p.add_argument("--window", default=None, metavar="C:D", help="the steps the forecast predicts (with --calibrate)")
    p.add_argument("--no-figures", action="store_true",
                   help="accepted for old command lines; the report draws no figures (python -m figures.build does)")
    return p


def forecast_ranges(calibrate: str | None, window: str | None):
    """(A, B), (C, D) from --calibrate A:B --window C:D, None without them; ValueError (one line) otherwise."""
    if calibrate is None and window is None:
        return None
    if calibrate is None or window is None:
        raise ValueError("--calibrate A:B and --window C:D go together (calibrate on A..B, predict C..D)")
    out = []
    for flag, text in (("--calibrate", calibrate), ("--window", window)):
        parts = text.split(":")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts) or int(parts[0]) >= int(parts[1]):
            raise ValueError(f"{flag} {text!r}: give two steps FIRST:LAST with FIRST < LAST, e.g. 1050:1400")
        out.append((int(parts[0]), int(parts[1])))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv_used = argv if argv is not None else sys.argv[1:]
    try:
        ranges = forecast_ranges(args.calibrate, args.window)
        setups = group_runs(load_runs(args.runs))
        analyses = [analyse(s, scales=args.scales, split=args.split, floor=args.floor) for s in setups]
        if ranges:
            for a in analyses:
                a.metrics["forecast"] = forecast(a.setup, *ranges, split=args.split, scales=args.scales)
        tables = [claim_table(a) for a in analyses]
    except (RunDirError, ValueError, KeyError) as e:
        print(f"compare.report: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs/compare") / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-report"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"compare.report: --out {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    command = ["python", "-m", "compare.report", *argv_used]
    try:
        atomic_write_json(out / "metrics.json", metrics_json(analyses, tables))
        atomic_write_bytes(out / "report.md", report_md(analyses, tables, [], command).encode())
    except OSError as e:   # every file is written atomically: none is left half written
        print(f"compare.report: cannot write {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(console_summary(analyses, tables))
    print(out / "report.md")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """The command avglr-report and ``python -m compare.report``: :func:`main` with a pipe-safe stdout."""
    with pipe_safe_stdout():   # `... | head`: every file is still written, no BrokenPipeError traceback
        return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
