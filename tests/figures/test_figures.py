"""Each figure's plot(data) returns a Figure with the expected axes and lines (hand-made data, no runs needed);
figures.build regenerates the figures from synthetic runs and rejects bad input (exit 2, nothing written)."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from figures import (build, ellipsoid, ema_equivalence, fixed_batch_along_trajectory, gradient_alignment,
                     nqm_equivalence_grid, one_step_probe, swa_equivalence, two_point_vs_distance)

T = np.arange(0, 1000, 100)


def _n_lines(fig):
    return [len(ax.get_lines()) for ax in fig.axes]


def test_one_step_probe():
    eta = np.logspace(-2, 1, 8)
    rows = [{"step": s, "eta": eta, "loss_train": 1 - eta + eta ** 2 / 4, "loss_heldout": 1 + eta ** 2,
             "loss0_train": 1.0, "loss0_heldout": 1.0} for s in (100, 200)]
    fig = one_step_probe.plot({"lam_eff": 1.0, "n": 1, "rows": rows, "theory": {"S": 0.1, "G": 0.9, "C": 0.25},
                               "r2": {"step": T, "train": np.ones(T.size), "heldout": np.ones(T.size)}})
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    # per row: 1 observed + 1 theory line on each curve axis, plus the η = λ_eff marker line
    assert _n_lines(fig) == [5, 5, 2]


def test_fixed_batch():
    fig = fixed_batch_along_trajectory.plot({"n": 1, "batches": [{"lag": T - 300, "rel_loss": -np.exp(-T / 100), "used_at": 300}],
                                             "theory": {"lag": T, "rel_loss": -np.exp(-T / 100)}})
    assert len(fig.axes) == 1 and _n_lines(fig) == [3]


@pytest.mark.parametrize("mod", [ema_equivalence, swa_equivalence])
def test_equivalence(mod):
    obs = np.vstack([np.linspace(1, 0.5, T.size)] * 3)
    curves = [{"name": n, "steps": T, "obs": obs, "pred": obs[0]} for n in ("raw", "ema_0.99")]
    br = [{"label": "branch", "matches": "ema_0.99", "steps": T, "obs": obs[:1], "pred": obs[0]}]
    fig = mod.plot({"n": 3, "window": (500, 900), "curves": curves, "branches": br})
    assert len(fig.axes) == 1 and _n_lines(fig) == [2 * 2 + 2]
    assert "n=3" in fig.axes[0].get_title()


def test_two_point():
    fig = two_point_vs_distance.plot({"n": 2, "gaps": np.array([10, 100]), "obs": np.ones((2, 2)),
                                      "theory": {"gaps": np.array([1, 10, 100]), "loss": np.ones(3)},
                                      "baseline": 1.2, "half_lr": 0.9})
    assert len(fig.axes) == 1 and _n_lines(fig) == [4]


def test_ellipsoid():
    pts = np.random.default_rng(0).normal(size=(50, 2))
    d = {"iterates": pts, "averages": {"ema_0.99": pts / 3}, "axes_lr": (1, 2), "axes_half": (0.7, 1.4),
         "dist": {"steps": T, "series": {"ema_0.99": np.ones((1, T.size))}, "n": 1}}
    fig = ellipsoid.plot(d)
    assert len(fig.axes) == 2 and _n_lines(fig) == [4, 1]
    d["dist"] = None
    assert len(ellipsoid.plot(d).axes) == 1


def test_nqm_grid_from_theory():
    fig = nqm_equivalence_grid.plot(build.theory_grid())
    assert len(fig.axes) == 4 and _n_lines(fig) == [2, 2, 1, 2]


def test_nqm_grid_values_by_hand():
    """Anchors of theory.md §3.3/§3.5 (σ² = 1, α = 0.05): harmonic α_eq/α = 1/(1 + α/β); two-point (1 + a^k)/2."""
    g = build.theory_grid()
    e = g["ema"]
    assert e["harmonic"] == pytest.approx(1 / (1 + 1 / e["ratio"]))
    tp = g["two_point"]
    assert tp["var_ratio"] == pytest.approx((1 + 0.95 ** tp["k"]) / 2, rel=1e-9)


def test_gradient_alignment():
    run = {"label": "λ=0.1", "steps": T, "cos": np.full((2, T.size), 0.2), "alpha_eff": 0.08, "cos_mean": 0.2,
           "cos_sd": 0.01, "n": 2}
    fig = gradient_alignment.plot({"runs": [run], "theory": {"alpha_eff": np.logspace(-3, 0, 5),
                                                              "cos": np.sqrt(np.logspace(-3, 0, 5) / 2)}})
    assert len(fig.axes) == 2 and _n_lines(fig)[0] == 1


@pytest.mark.slow
def test_build_cli_on_synthetic_runs(tmp_path):
    from compare import synthetic
    cfg = synthetic.SynthSetup(steps=3000, swa_start=1500, d=(100,), two_point_gaps=(10, 300), n_point_gap=200)
    runs = [str(synthetic.write_run(tmp_path / f"s{i}", cfg, seed=i)) for i in range(2)]
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
