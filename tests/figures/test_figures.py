"""Each figure's plot(data) returns a Figure that draws what its title claims, and compare.figure_data prepares that
data from the runs (synthetic setups of tests/figures/conftest.py, no torch): bank curves aligned on their use step with
the predicted dip, the alignment line over the measured α_eff, the run's own variants in the ellipsoid, the probe
figure's axes/legend/inset, the equivalence figures with and without a branch run, and the structure function D(τ).
figures.build regenerates every figure from run directories and rejects bad input (exit 2, nothing written)."""

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from compare import figure_data as fd
from compare.analysis import Curve
from figures import (build, ellipsoid, ema_equivalence, fixed_batch_along_trajectory, gradient_alignment,
                     nqm_equivalence_grid, one_step_probe, structure_function, swa_equivalence, two_point_vs_distance)
from theory import spec

T = np.arange(0, 1000, 100)


def _n_lines(fig):
    return [len(ax.get_lines()) for ax in fig.axes]


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


# --------------------------------------------------------------------------------------- fixed batch (§3.2)

def test_bank_curves_aligned_and_averaged(a_plain, fig_cfg):
    d = fd.bank_data(a_plain)
    lag = d["lag"]
    assert lag[0] < 0 and 0 in lag and lag[-1] > 0
    assert d["n"] == 2 and d["n_curves"] == 2 * 3        # 2 seeds × the 3 bank batches that were trained on
    assert np.all(np.diff(lag) > 0) and d["mean"].shape == lag.shape == d["count"].shape
    # the synthetic bank carries the heavy-ball dip (tests/synthetic_runs.py): visible right after the use step
    after = (lag > 0) & (lag <= 20)
    assert np.min(d["mean"][after]) < d["pre_level"] - 0.05
    th = d["theory"]
    assert th["lag"][0] <= lag[0] and th["lag"][-1] >= lag[-1]
    assert np.allclose(th["rel_loss"][th["lag"] <= 0], d["pre_level"])       # nothing before the use step
    # predicted dip and recovery at the measured lags near the use step agree with the NQM the runs were drawn from
    pred = np.interp(lag[after], th["lag"], th["rel_loss"])
    assert pred == pytest.approx(d["mean"][after], abs=0.2 * abs(np.min(d["mean"][after])))
    assert th["dip"] == pytest.approx(float(np.sum(a_plain.cal.lr * a_plain.cal.h ** 2 * a_plain.cal.s)), rel=1e-6)


def test_fixed_batch_plot(a_plain):
    d = fd.bank_data(a_plain)
    fig = fixed_batch_along_trajectory.plot(d)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    full, zoom = fig.axes
    obs = full.get_lines()[0]
    assert np.array_equal(obs.get_xdata(), d["lag"])
    assert zoom.get_xlim()[0] < 0 < zoom.get_xlim()[1]
    labels = _legend_texts(fig)
    assert any("held-out bank mean" in t for t in labels) and any("NQM" in t for t in labels)


# --------------------------------------------------------------------------------------- one-step probe (§3.1)

def _probe_rows(over=True):
    eta = np.logspace(-2, 2, 9)
    lt = 1 - eta + eta ** 2 / 4
    if over:
        lt[-2:] = [1e4, 1e8]          # a real network's step overshoots and the loss explodes
    return [{"step": s, "eta": eta, "loss_train": lt, "loss_heldout": 1 + eta ** 2 / 10, "loss0_train": 1.0,
             "loss0_heldout": 1.0, "eta_line": np.logspace(-2, 2, 50), "pred_train": np.ones(50),
             "pred_heldout": np.ones(50)} for s in (100, 200)]


def test_one_step_probe_axes_inset_and_one_legend():
    rows = _probe_rows()
    fig = one_step_probe.plot({"lam_eff": 1.0, "n": 1, "source": "two-point", "rows": rows,
                               "theory": {"S": 0.1, "G": 0.9, "C": 0.25},
                               "r2": {"step": T, "train": np.ones(T.size), "heldout": np.ones(T.size)}})
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    ax_t, ax_h, _ = fig.axes
    assert len(fig.legends) == 1 and ax_t.get_legend() is None and ax_h.get_legend() is None
    assert any("step 100" in t for t in _legend_texts(fig)) and any("NQM" in t for t in _legend_texts(fig))
    # main axes fitted to the quadratic region: the exploded points are above it ...
    lo, hi = ax_t.get_ylim()
    assert hi < 1e4 and lo <= np.min(rows[0]["loss_train"]) and hi >= 2.0
    # ... and shown in the log-y inset, which holds every observed point
    (ins,) = ax_t.child_axes
    assert ins.get_yscale() == "log" and ins.get_ylim()[1] >= 1e8
    assert "beyond the main axes" in ins.get_title()
    x_ins = np.concatenate([ln.get_xdata() for ln in ins.get_lines()])
    assert x_ins.size == 2 * rows[0]["eta"].size


def test_probe_data_from_runs(a_plain):
    d = fd.probe_data(a_plain)
    assert d is not None and d["rows"] and d["source"] == "two-point"
    for r in d["rows"]:
        assert r["pred_train"].shape == r["eta_line"].shape and np.all(np.isfinite(r["pred_heldout"]))
    fig = one_step_probe.plot(d)
    assert len(fig.legends) == 1


def test_probe_figure_skipped_without_probe_moments(a_plain):
    fake = SimpleNamespace(setup=a_plain.setup, cal=replace(a_plain.cal, probes=None))
    assert fd.probe_data(fake) is None


# --------------------------------------------------------------------------------------- EMA / SWA equivalence

@pytest.mark.parametrize("mod", [ema_equivalence, swa_equivalence])
def test_equivalence_with_branch(mod):
    obs = np.vstack([np.linspace(1, 0.5, T.size)] * 3)
    curves = [{"name": n, "steps": T, "obs": obs, "pred": obs[0]} for n in ("raw", "ema_0.99")]
    br = [{"label": "branch", "matches": "ema_0.99", "t0": 400, "steps": T, "obs": obs[:1], "pred": obs[0]}]
    fig = mod.plot({"n": 3, "window": (500, 900), "curves": curves, "branches": br})
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and _n_lines(fig) == [2 * 2 + 2]
    assert "n=3" in ax.get_title() and "predicted before" in ax.get_title() and not ax.texts
    branch_lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("branch")]
    assert branch_lines and all(np.min(ln.get_xdata()) >= 400 for ln in branch_lines)   # from the branch step on
    assert any("fitted after it ran" in ln.get_label() for ln in branch_lines)        # no prediction made before


@pytest.mark.parametrize("mod", [ema_equivalence, swa_equivalence])
def test_equivalence_draws_the_prediction_made_before_the_branch_ran_with_its_band(mod):
    obs = np.vstack([np.linspace(1, 0.5, T.size)] * 3)
    curves = [{"name": n, "steps": T, "obs": obs, "pred": obs[0]} for n in ("raw", "ema_0.99")]
    ps = np.arange(400, 901)             # the prediction's own grid: every step from the branch step
    br = [{"label": "match:ema_0.99 (constant)", "matches": "ema_0.99", "t0": 400, "steps": T, "obs": obs[:1],
           "pred": np.full(ps.size, 0.6), "pred_steps": ps, "pred_se": np.full(ps.size, 0.01),
           "predicted_before": True}]
    ax = mod.plot({"n": 3, "window": (500, 900), "curves": curves, "branches": br}).axes[0]
    (pred,) = [ln for ln in ax.get_lines() if "predicted before it ran" in ln.get_label()]
    assert np.array_equal(pred.get_xdata(), ps) and np.allclose(pred.get_ydata(), 0.6)
    (band,) = [c for c in ax.collections if c.get_label().startswith("_")][-1:]    # the ±2 s.e. fill
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.max(), 0.62) and np.isclose(ys.min(), 0.58)


@pytest.mark.parametrize("mod", [ema_equivalence, swa_equivalence])
def test_equivalence_without_branch_says_so(mod):
    obs = np.vstack([np.linspace(1, 0.5, T.size)] * 2)
    curves = [{"name": n, "steps": T, "obs": obs, "pred": obs[0]} for n in ("raw", "swa")]
    fig = mod.plot({"n": 2, "window": (500, 900), "curves": curves, "branches": []})
    title = fig.axes[0].get_title()
    assert "predicted before" not in title and "n=2" in title
    assert _texts(fig) == [mod.MISSING] and "not drawn" in mod.MISSING
    assert not [ln for ln in fig.axes[0].get_lines() if "branch" in ln.get_label()]


def test_equivalence_data_branch_starts_at_branch_step(a_branch):
    (b,) = a_branch.branches
    assert b["matches"] == "ema_0.99"
    # a real branch run carries its parent's series before the branch step: prepend some to the synthetic one
    c = b["curve"]
    early = np.arange(0, b["t0"], 100)
    steps = np.concatenate([early, c.steps])
    grown = Curve(steps, np.concatenate([np.full((1, early.size), 9.0), np.atleast_2d(c.obs)], axis=1),
                  np.concatenate([np.full(early.size, 9.0), c.pred]))
    fake = SimpleNamespace(**{**vars(a_branch), "branches": [{**b, "curve": grown}]})
    d = fd.equivalence_data(fake, (spec.EMA,))
    (db,) = d["branches"]
    assert db["t0"] == b["t0"] and db["steps"][0] >= b["t0"] and db["obs"].shape[1] == db["steps"].size
    assert "predicted before" in ema_equivalence.plot(d).axes[0].get_title()


def test_equivalence_data_without_branch(a_plain):
    d = fd.equivalence_data(a_plain, (spec.SWA,))
    assert d["branches"] == []
    fig = swa_equivalence.plot(d)
    assert swa_equivalence.MISSING in _texts(fig)


# --------------------------------------------------------------------------------------- ellipsoid (§2.5)

def test_ellipsoid_uses_the_runs_variants(a_plain, fig_cfg):
    d = fd.ellipsoid_data(a_plain)
    run_avgs = [n for n in a_plain.variants if n != "raw"]
    assert list(d["averages"]) == run_avgs
    assert {f"two_point_k{k}" for k in fig_cfg.two_point_gaps} <= set(d["averages"])
    assert {f"ema_{g}" for g in fig_cfg.ema_decays} <= set(d["averages"]) and "swa" in d["averages"]
    # every average lies inside the raw iterate's ellipse; far two-point ≈ λ/2 along the sharp scale (1/√2)
    assert all(0 < a1 <= 1 + 1e-9 and 0 < a2 <= 1 + 1e-9 for a1, a2 in d["averages"].values())
    far = f"two_point_k{max(fig_cfg.two_point_gaps)}"
    assert d["averages"][far][0] == pytest.approx(np.sqrt(0.5), rel=0.02)
    fig = ellipsoid.plot(d)
    assert len(fig.axes) == 2
    labels = _legend_texts(fig)
    assert all(n in labels for n in run_avgs)
    assert not any(n.startswith(("two_point", "ema")) and n not in run_avgs for n in labels)
    d["dist"] = None
    assert len(ellipsoid.plot(d).axes) == 1


# --------------------------------------------------------------------------------------- gradient alignment (§3.7)

def test_alignment_line_covers_measured_alpha(a_plain):
    d = fd.alignment_data([a_plain])
    (r,) = d["runs"]
    measured = [r["alpha_eff"], *r["alpha_eff_seeds"]]
    ae = d["theory"]["alpha_eff"]
    assert ae.min() <= min(measured) and ae.max() >= max(measured)
    assert np.all(np.diff(d["theory"]["cos"]) > 0) and np.all(d["theory"]["cos"] < 1)
    assert 0 < r["cos_pred"] < 1


def test_alignment_line_covers_alpha_above_one(a_plain):
    """A sharp calibrated spectrum (α_eff > 1, where the old fixed line stopped) is still covered."""
    cal = replace(a_plain.cal, h=np.array([30.0]), s=np.array([1.0]), seed_h=np.array([[20.0], [40.0]]),
                  seed_s=np.array([[1.0], [1.0]]))
    d = fd.alignment_data([SimpleNamespace(setup=a_plain.setup, cal=cal)])
    top = cal.lam_eff * 40.0
    assert d["theory"]["alpha_eff"].max() >= top > 1
    fig = gradient_alignment.plot(d)
    xmax = max(np.max(ln.get_xdata()) for ln in fig.axes[1].get_lines())
    assert xmax >= top


def test_gradient_alignment_plot():
    run = {"label": "λ=0.1", "steps": T, "cos": np.full((2, T.size), 0.2), "alpha_eff": 0.08, "cos_mean": 0.2,
           "alpha_eff_seeds": np.array([0.05, 0.1]), "cos_pred": 0.19, "cos_sd": 0.01, "n": 2}
    fig = gradient_alignment.plot({"runs": [run], "theory": {"alpha_eff": np.logspace(-3, 0, 5), "mu": 0.9,
                                                              "cos": np.sqrt(np.logspace(-3, 0, 5) / 2)}})
    assert len(fig.axes) == 2 and _n_lines(fig)[0] == 1


# --------------------------------------------------------------------------------------- structure function

def test_structure_function_data_and_plot(a_plain, fig_cfg):
    d = fd.structure_data(a_plain)
    lags = np.asarray(fig_cfg.two_point_gaps)
    assert np.array_equal(d["pooled"]["lags"], lags) and len(d["seeds"]) == 2
    tau = d["model"]["tau"]
    assert tau[0] == 1 and tau[-1] >= 2 * lags.max() - 1 and d["model"]["D"].shape == tau.shape
    assert np.all(np.isfinite(d["model"]["D"])) and np.all(d["model"]["D"] >= 0)
    fig = structure_function.plot(d)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    title = ax.get_title()
    assert "calibration input" in title and "two-point averages of raw iterates" in title
    xs = [np.asarray(ln.get_xdata()) for ln in ax.get_lines()]
    assert any(x.size == lags.size and np.array_equal(x, lags) for x in xs)          # the pooled lag points
    assert any(x.size == tau.size and np.array_equal(x, tau) for x in xs)            # the NQM line
    assert sum(len(c.get_segments()) for c in ax.collections) >= 3 * lags.size       # error bars: pooled + 2 seeds


def test_structure_function_skipped_for_probe_source(a_plain):
    fake = SimpleNamespace(setup=a_plain.setup, cal=replace(a_plain.cal, structure=None, source="probe"))
    assert fd.structure_data(fake) is None


# --------------------------------------------------------------------------------------- others, build

def test_two_point():
    fig = two_point_vs_distance.plot({"n": 2, "gaps": np.array([10, 100]), "obs": np.ones((2, 2)),
                                      "theory": {"gaps": np.array([1, 10, 100]), "loss": np.ones(3)},
                                      "baseline": 1.2, "half_lr": 0.9})
    assert len(fig.axes) == 1 and _n_lines(fig) == [4]


def test_nqm_grid_from_theory():
    fig = nqm_equivalence_grid.plot(fd.theory_grid())
    assert len(fig.axes) == 4 and _n_lines(fig) == [2, 2, 1, 2]


def test_nqm_grid_values_by_hand():
    """Anchors of theory.md §3.3/§3.5 (σ² = 1, α = 0.05): harmonic α_eq/α = 1/(1 + α/β); two-point (1 + a^k)/2."""
    g = fd.theory_grid()
    e = g["ema"]
    assert e["harmonic"] == pytest.approx(1 / (1 + 1 / e["ratio"]))
    tp = g["two_point"]
    assert tp["var_ratio"] == pytest.approx((1 + 0.95 ** tp["k"]) / 2, rel=1e-9)


def test_build_cli_on_synthetic_runs(tmp_path, fig_runs):
    base, branch = fig_runs
    runs = [str(p) for p in (*base, branch)]
    out = tmp_path / "figs"
    assert build.main([*runs, "--out", str(out)]) == 0
    names = {p.stem for p in out.glob("*.png")}
    assert names == set(build.FIGURES)
    prov = json.loads((out / "ema_equivalence.json").read_text())
    assert [r["path"] for r in prov["runs"]] == runs and "figures.build" in " ".join(prov["command"])


def test_build_theory_only(tmp_path):
    assert build.main(["--out", str(tmp_path / "f")]) == 0
    assert [p.name for p in (tmp_path / "f").glob("*.png")] == ["nqm_equivalence_grid.png"]


@pytest.mark.parametrize("arg, fragment", [("missing", "not a directory"), (".", "not a run directory")])
def test_build_bad_input(tmp_path, capsys, arg, fragment):
    out = tmp_path / "o"
    assert build.main([str(tmp_path / arg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_probe_source_setup(tmp_path):
    """Runs without a lag grid on the evaluation grid calibrate on the probes (one scale): no structure_function,
    every other figure still drawn (the ellipsoid on the one scale)."""
    import synthetic_runs
    from compare.analysis import analyse
    from compare.load import group_runs, load_runs
    cfg = synthetic_runs.SynthSetup(steps=1000, swa_start=500, d=(40,), b=(0.0,), probe_every=50, two_point_gaps=(10,),
                               n_point_gap=100, eval_noise=0.001)
    a = analyse(group_runs(load_runs([synthetic_runs.write_run(tmp_path / "s0", cfg, seed=0)]))[0])
    assert a.cal.source == "probe" and a.cal.structure is None
    data = fd.figure_data([a])
    assert "structure_function" not in data and "one_step_probe" in data
    assert data["ellipsoid"]["single_scale"] and list(data["ellipsoid"]["averages"]) == [
        n for n in a.variants if n != "raw"]
    for name, d in data.items():
        assert isinstance(build.FIGURES[name](d), Figure)


def test_every_prepared_figure_has_a_plot():
    """compare.figure_data names the figures it prepares; figures.build draws each of them and nothing else."""
    assert set(build.FIGURES) == set(fd.NAMES)


def test_report_embeds_the_figures_a_caller_draws(a_branch, tmp_path):
    """compare.report draws nothing itself; a caller that has figures.build draw into the report folder gets them
    embedded in report.md."""
    from compare import report
    from compare.claims import claim_table
    pngs = build.render([a_branch], tmp_path, ["test"])
    md = report.report_md([a_branch], [claim_table(a_branch)], pngs, ["test"])
    assert "![ema_equivalence](ema_equivalence.png)" in md and "figures.build" not in md
    assert (tmp_path / "ema_equivalence.png").is_file()
