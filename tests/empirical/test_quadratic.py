"""The quadratic closure test (empirical/quadratic.py, docs/theory.md §2.1): its losses against numpy by hand, the
statistics of its batch minima, and short runs of ``python -m empirical.run quadratic`` through the real loop."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from common import rundir
from empirical import checkpoint, config, presets, quadratic, run, task
from empirical.sampler import EpochSampler

PRESET = presets.PRESETS["quadratic"]
# the preset's spectrum written out by hand: 16 directions of h = 0.2 (noise 1), then 64 of h = 0.002 (noise 1e4)
H = np.array([0.2] * 16 + [0.002] * 64)
VAR = np.array([1.0 / 16] * 16 + [1e4 / 64] * 64)    # batch-minimum variance per direction, param²


def drift_by_hand(rate: float) -> np.ndarray:
    """dθ*/dt: rate/√64 on each of the 64 directions of the flat scale, 0 on the sharp ones."""
    return np.concatenate([np.zeros(16), np.full(64, rate / 8.0)])


def test_spectrum_directions_and_truth_follow_the_flags():
    h, var = quadratic.directions(PRESET.quad_spectrum)
    np.testing.assert_allclose(h, H, rtol=1e-15)
    np.testing.assert_allclose(var, VAR, rtol=1e-15)
    cfg = replace(PRESET, quad_spectrum="1:2:3,0.01:5:4,0.5:1:2", drift=0.003, lr=0.1, momentum=0.5)
    t = quadratic.truth(cfg)
    assert [(s["h"], s["noise"], s["directions"]) for s in t["scales"]] == [(1, 2, 3), (0.01, 5, 4), (0.5, 1, 2)]
    np.testing.assert_allclose([s["relax_steps"] for s in t["scales"]], [0.5 / 0.1, 0.5 / 0.001, 0.5 / 0.05])
    assert t["drift"] == {"rate": 0.003, "h": 0.01, "D_coefficient": pytest.approx(0.01 * 0.003 ** 2)}
    assert t["floor"] == 0.0 and t["dimension"] == 9
    v = quadratic.drift_vector(cfg)      # the flattest scale is the second: directions 3..6, each 0.003/2
    np.testing.assert_allclose(v, [0, 0, 0, 0.0015, 0.0015, 0.0015, 0.0015, 0, 0])
    assert math.isclose(np.linalg.norm(v), 0.003)


def test_batch_loss_is_the_bowl_around_the_batch_minimum():
    # mean_i ½(θ − x_i)ᵀH(θ − x_i) = ½(θ − θ_B)ᵀH(θ − θ_B) + ½ mean_i (x_i − x̄)ᵀH(x_i − x̄), θ_B = x̄
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(80).astype(np.float32)
    x = (rng.standard_normal((32, 80)) * np.sqrt(32 * VAR)).astype(np.float32)
    loss = quadratic.QuadraticLoss(H)
    with torch.no_grad():
        got = float(loss(quadratic.QuadraticModel(80, theta)(torch.from_numpy(x)), torch.zeros(32, dtype=torch.int64)))
    th, xs = theta.astype(np.float64), x.astype(np.float64)
    xbar = xs.mean(0)
    want = 0.5 * (th - xbar) @ (H * (th - xbar)) + 0.5 * np.mean(((xs - xbar) ** 2 * H).sum(1))
    assert got == pytest.approx(want, rel=1e-6)


def test_test_loss_is_the_population_excess_around_a_fixed_minimum_even_with_drift():
    cfg = replace(PRESET, steps=10, drift=0.02, max_test=64)
    data = task.load_data(cfg)
    x, _ = data.test.tensors
    assert x.shape == (64, 80) and not x.any()           # every test minimum is θ*_ref = 0
    theta = np.random.default_rng(2).standard_normal(80).astype(np.float32)
    model, loss = quadratic.QuadraticModel(80, theta), task.for_config(cfg).loss_fn
    with torch.no_grad():
        assert float(loss(model(x), None)) == pytest.approx(0.5 * np.sum(H * theta.astype(np.float64) ** 2), rel=1e-9)


def test_drift_puts_each_training_minimum_where_the_minimum_is_when_it_is_trained_on():
    """x_i − z_i = (t_i − t_ref)·dθ*/dt exactly, z_i the example's noise (regenerated here from the same stream),
    t_i the step that trains on it (the sampler's one epoch), t_ref = ¾ of the decay start (by hand: 2,000)."""
    cfg = replace(PRESET, steps=40, decay_start=2667, drift=0.02)   # decay start past the end: t_ref = round(2000.25)
    assert quadratic.drift_reference(cfg) == 2000
    x = task.load_data(cfg).train.tensors[0].numpy().astype(np.float64)
    z = np.random.default_rng([cfg.seed, 100]).standard_normal(x.shape, dtype=np.float32) \
        * np.sqrt(32 * VAR).astype(np.float32)
    order = EpochSampler(len(x), 32, cfg.seed)
    for s in (0, 17, 39):
        idx = order.global_indices(s)
        want = (s - 2000) * drift_by_hand(0.02)
        np.testing.assert_allclose(x[idx] - z[idx].astype(np.float64), np.tile(want, (32, 1)), atol=1e-4)


def test_batch_minima_are_independent_with_the_stated_variance():
    # 4,000 batches of 32: each direction's batch-mean variance estimate has relative s.d. √(2/4000) = 2.2 %; pooled
    # over a scale's n directions √(2/(4000 n)) (0.56 % and 0.28 %). Tolerances: 5 s.d. per direction, 4 pooled.
    cfg = replace(PRESET, steps=4000, seed=3)
    x = task.load_data(cfg).train.tensors[0].numpy().astype(np.float64)
    assert x.shape == (4000 * 32, 80)
    means = x.reshape(4000, 32, 80).mean(1)     # every example once, in order: the minima of 4000 disjoint batches
    var = means.var(0, ddof=1)
    np.testing.assert_allclose(var, VAR, rtol=5 * math.sqrt(2 / 4000))
    for sl, n in ((slice(0, 16), 16), (slice(16, 80), 64)):
        assert abs(var[sl].mean() / VAR[sl][0] - 1) < 4 * math.sqrt(2 / (4000 * n))
    assert np.all(np.abs(means.mean(0)) < 5 * np.sqrt(VAR / 4000))      # centred on θ*_0 = 0
    c = np.corrcoef(means[:-1, 16], means[1:, 16])[0, 1]               # consecutive batches uncorrelated
    assert abs(c) < 5 / math.sqrt(4000)
    again = task.load_data(cfg).train.tensors[0].numpy()
    assert np.array_equal(again, x.astype(np.float32))                   # same seed, same data


def test_start_point_is_three_stationary_sds_off():
    cfg = PRESET
    a = 0.05 * H     # α = λh; heavy-ball stationary variance (theory.md §2.6), by hand
    v = 1.9 * a * VAR / (0.1 * (3.8 - a))
    np.testing.assert_allclose(np.abs(quadratic.start_point(cfg)), 3 * np.sqrt(v), rtol=1e-12)
    model = task.build_model(cfg, task.load_data(replace(cfg, steps=10)))
    assert torch.equal(model.theta.detach(), torch.as_tensor(quadratic.start_point(cfg), dtype=torch.float32))


# ------------------------------------------------------------------------------------------ runs through the loop

# the measurements every 100 steps and the curvature twice (the preset measures them rarely to keep its recording
# cheap): these tests check what each measurement records on an exactly known loss
ARGS = ["quadratic", "--steps", "600", "--probe-every", "100", "--align-every", "100", "--curv-every", "300",
        "--bank-every", "20", "--bank-span", "0"]
DRIFT = 0.02     # θ* moves 0.0025 per step in each flat direction: 12 parameter units by step 600
DRIFT_ARGS = [*ARGS, "--drift", str(DRIFT), "--checkpoint-every", "100", "--checkpoint-keep-every", "100"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quadratic")
    return {"plain": run.main([*ARGS, "--out", str(root / "plain")]),
            "drift": run.main([*DRIFT_ARGS, "--out", str(root / "drift")]), "root": root}


def test_run_records_the_truth_and_the_known_curvature(runs):
    r = rundir.load_run(runs["plain"])
    c, t = r.config["config"], r.trajectory
    assert r.summary["status"] == "ok" and c["dataset"] == c["arch"] == "quadratic"
    truth = c["truth"]
    assert [(s["h"], s["noise"], s["directions"]) for s in truth["scales"]] == [(0.2, 1.0, 16), (0.002, 1e4, 64)]
    np.testing.assert_allclose([s["relax_steps"] for s in truth["scales"]], [10, 1000], rtol=1e-12)
    assert truth["drift"] == {"rate": 0.0, "h": 0.002, "D_coefficient": 0.0}
    assert truth["floor"] == 0.0 and truth["dimension"] == 80
    np.testing.assert_allclose(t["curv/top_eig"], 0.2, rtol=1e-3)
    assert np.all(np.isnan(t["eval/test_acc_raw"])) and np.all(np.isnan(t["eval/train_acc_raw"]))
    assert "acc" not in r.summary["eval"]["raw"] and r.summary["eval"]["raw"]["loss"] > 0
    d = rundir.load_run(runs["drift"]).config["config"]["truth"]["drift"]
    assert d["rate"] == DRIFT and d["D_coefficient"] == pytest.approx(0.002 * DRIFT ** 2)


def test_held_out_one_step_curves_are_exact_parabolas(runs):
    # held-out loss after θ − ηg_B: ½Σh(x − ηg)², a parabola in η whatever the batch (theory.md §3.1)
    t = rundir.load_run(runs["plain"]).trajectory
    assert t["probe/step"].size >= 5
    assert np.all(t["probe/fit_r2_heldout"] > 1 - 1e-9) and np.all(t["probe/fit_r2"] > 1 - 1e-9)
    # the training batch's curvature along its gradient is within the spectrum
    ratio = t["probe/gHg"] / t["probe/grad_sq"]
    assert np.all((ratio > 0.002 * (1 - 1e-4)) & (ratio < 0.2 * (1 + 1e-4)))


def _theta(run_dir, step: int) -> np.ndarray:
    state = checkpoint.load(checkpoint.path_for(run_dir, step))
    assert int(state["step"]) == step
    return state["model"]["theta"].numpy().astype(np.float64)


def test_drift_run_measures_the_fixed_test_loss_and_trains_on_the_moving_batches(runs):
    out = runs["drift"]
    r = rundir.load_run(out)
    t, cfg = r.trajectory, config.from_dict(r.config["config"])
    x = task.load_data(cfg).train.tensors[0].numpy().astype(np.float64)
    order = EpochSampler(len(x), 32, cfg.seed)
    for s in (200, 400, 600):
        theta = _theta(out, s)
        pop = 0.5 * np.sum(H * theta ** 2)                 # the test loss: minimum fixed at θ*_ref = 0
        i = list(t["eval/step"]).index(s)
        assert t["eval/test_loss_raw"][i] == pytest.approx(pop, rel=1e-9)
        if s < 600:   # measured on θ_s before update s
            assert t["probe/loss0_heldout"][list(t["probe/step"]).index(s)] == pytest.approx(pop, rel=1e-9)
            assert t["bank/heldout_loss"][list(t["bank/step"]).index(s)] == pytest.approx(pop, rel=1e-9)
            xb = x[order.global_indices(s)]                 # update s's examples, minima moved with the data
            want = 0.5 * np.mean(((theta - xb) ** 2 * H).sum(1))
            assert t["train/loss"][list(t["train/step"]).index(s)] == pytest.approx(want, rel=1e-6)


def test_same_seed_gives_identical_arrays(runs):
    again = rundir.Trajectory.load(run.main([*ARGS, "--out", str(runs["root"] / "again")]) / "trajectory.npz")
    first = rundir.Trajectory.load(runs["plain"] / "trajectory.npz")
    assert sorted(first.series) == sorted(again.series)
    for k in first.series:
        assert np.array_equal(first[k], again[k], equal_nan=True), k


def test_resume_and_branch_run_on_the_same_problem(runs):
    # a crash after step 300's checkpoint: the run's folder with the later checkpoints gone and the summary "running"
    root = runs["root"]
    part = root / "part"
    shutil.copytree(runs["drift"], part)
    for p in checkpoint.list_checkpoints(part):
        if checkpoint.step_of(p) > 300:
            p.unlink()
            p.with_name(p.name + ".sha256").unlink()
    summary = json.loads((part / "summary.json").read_text())
    (part / "summary.json").write_text(json.dumps({**summary, "status": "running", "steps": 300}))
    run.main(["--out", str(part), "--resume"])
    a, b = (rundir.Trajectory.load(p / "trajectory.npz") for p in (part, runs["drift"]))
    for k in a.series:
        assert np.array_equal(a[k], b[k], equal_nan=True), k
    branch = run.main(["--out", str(root / "branch"), "--branch-from", str(checkpoint.path_for(runs["drift"], 300)),
                       "--branch-schedule", "half"])
    br = rundir.load_run(branch)
    assert br.config["config"]["truth"] == rundir.load_run(runs["drift"]).config["config"]["truth"]
    i = list(br.trajectory["eval/step"]).index(400)
    assert br.trajectory["eval/test_loss_raw"][i] == pytest.approx(0.5 * np.sum(H * _theta(branch, 400) ** 2),
                                                                   rel=1e-9)


@pytest.mark.parametrize("argv, words", [
    (["digits", "--drift", "0.001"], "--drift"),
    (["digits", "--quad-spectrum", "1:1:1"], "--quad-spectrum"),
    (["quadratic", "--quad-spectrum", "0.2:1"], "h:noise:directions"),
    (["quadratic", "--quad-spectrum", "0.2:1:1.5"], "h:noise:directions"),
    (["quadratic", "--drift", "-1"], "--drift"),
    (["quadratic", "--weight-decay", "1e-4"], "--weight-decay"),
    (["quadratic", "--arch", "resnet8"], "--arch"),
])
def test_bad_quadratic_flags_are_refused_in_one_line(argv, words, capsys, tmp_path):
    assert run.cli([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and err.startswith("empirical.run: error:")
    assert not (tmp_path / "r").exists()
