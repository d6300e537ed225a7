"""The library API for any training loop: WeightAverages from theory.spec objects, module() with recomputed BN, the
fixed-batch bank and probes as objects, RunWriter, and examples/library_loop.py end to end through compare.report
(theory.md §3.2-3.5, §4.2; docs/run-series.md)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.rundir import load_run
from empirical import (EMA, SWA, FixedBatchBank, NPoint, OneStepProbe, Recorder, RunWriter, TopCurvature,
                       TwoPoint, WeightAverages)
from empirical import measure as M

ROOT = Path(__file__).resolve().parents[2]


class Vec(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(v, dtype=torch.float64))


def feed(avg, model, snapshots):
    for t, v in enumerate(snapshots, start=1):
        with torch.no_grad():
            model.w.copy_(torch.tensor(v, dtype=torch.float64))
        avg.update(model, t)


def read(avg, name):
    target = Vec([0.0, 0.0])
    avg.copy_into(name, target)
    return target.w.detach().numpy()


def test_averages_from_specs_equal_hand_computed_values():
    # θ_0 .. θ_3 of a 2-vector; EMA γ = 0.5 from step 1: y_1 = θ_1, y_2 = ½y_1 + ½θ_2, y_3 = ½y_2 + ½θ_3
    th = [np.array([1.0, -1.0]), np.array([2.0, 0.0]), np.array([4.0, 2.0]), np.array([8.0, 3.0])]
    m = Vec(th[0].tolist())
    avg = WeightAverages(m, [EMA(0.5, start=1), SWA(start=1), TwoPoint(2), NPoint(3, 1)])
    feed(avg, m, [t.tolist() for t in th[1:]])
    y = th[1]
    for t in th[2:]:
        y = 0.5 * y + 0.5 * t
    np.testing.assert_allclose(read(avg, "ema_0.5"), y, rtol=0, atol=1e-15)
    np.testing.assert_allclose(read(avg, "swa"), (th[1] + th[2] + th[3]) / 3, atol=1e-15)
    np.testing.assert_allclose(read(avg, "two_point_k2"), (th[3] + th[1]) / 2, atol=1e-15)
    np.testing.assert_allclose(read(avg, "points_n3_g1"), (th[3] + th[2] + th[1]) / 3, atol=1e-15)
    assert avg.all_names() == ["ema_0.5", "swa", "two_point_k2", "points_n3_g1"]
    assert avg.specs() == {"ema_0.5": EMA(0.5, start=1), "swa": SWA(start=1), "two_point_k2": TwoPoint(2),
                           "points_n3_g1": NPoint(3, 1)}


@pytest.mark.parametrize("averages, fragment", [
    ([EMA(0.9, start=0), EMA(0.99, start=5)], "share start"),
    ([SWA(start=1), SWA(start=2)], "at most one SWA"),
    ([NPoint(3, 2), NPoint(4, 5)], "one gap"),
    (["ema"], "not an averaging spec"),
])
def test_specs_refused_with_a_reason(averages, fragment):
    with pytest.raises(ValueError, match=fragment):
        WeightAverages(Vec([0.0]), averages)


def test_module_has_the_average_and_recomputed_bn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)).double()
    avg = WeightAverages(model, [EMA(0.5)])
    w0 = model[1].weight.detach().clone()
    with torch.no_grad():
        model[1].weight.add_(2.0)
        model[0].running_mean.fill_(7.0)            # the raw model's own statistics must not leak into the average
    avg.update(model, 1)
    batches = [(torch.randn(8, 3, dtype=torch.float64) + k, torch.zeros(8, dtype=torch.long)) for k in range(3)]
    out = avg.module("ema_0.5", batches)
    assert out is not model
    torch.testing.assert_close(out[1].weight, 0.5 * w0 + 0.5 * (w0 + 2.0), rtol=0, atol=1e-15)
    # BN recomputed with momentum None: the mean of the K batch means (BN sees the inputs directly)
    torch.testing.assert_close(out[0].running_mean, torch.stack([x.mean(0) for x, _ in batches]).mean(0))
    assert float(model[0].running_mean[0]) == 7.0 and model[0].momentum == 0.1
    raw = avg.module("raw", batches)                 # the same procedure for the raw weights
    torch.testing.assert_close(raw[1].weight, model[1].weight)
    with pytest.raises(ValueError, match="bn_batches"):
        avg.module("ema_0.5", bn_mode="recompute")


def _ce(logits, y):
    """Mean cross-entropy by hand (log-sum-exp), float64 numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def test_bank_losses_are_cross_entropy_and_its_used_steps_are_recorded(tmp_path):
    torch.manual_seed(1)
    model = nn.Linear(4, 3).double()
    train = [(torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(2)]
    held = [(torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(2)]
    rec = Recorder(tmp_path)
    bank = FixedBatchBank(train, held, train_at=[3, 7], fraction=0.5, every=2)
    bank.recorder = rec
    assert bank.images == 3 and bank.due(4) and not bank.due(5)
    out = bank.measure(4, model)
    W, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    hand = lambda bs: [_ce(x[:3].numpy() @ W.T + b, y[:3].numpy()) for x, y in bs]  # noqa: E731
    np.testing.assert_allclose(out["train_loss"], hand(train), rtol=1e-12)
    np.testing.assert_allclose(out["heldout_loss"], hand(held), rtol=1e-12)
    mine = (torch.zeros(6, 4, dtype=torch.float64), torch.zeros(6, dtype=torch.long))
    assert bank.batch_for(2, mine) is mine                      # not a planned step: the loop's own batch
    x, y = bank.batch_for(7, mine)                               # planned: bank batch 1, marked as used at 7
    assert torch.equal(x, train[1][0]) and bank.used_at == [-1, 7]
    bank.trained_on(0, 3)
    assert rec.static["bank_used_at"] == [3, 7]
    assert rec.last("bank")["step"] == 4 and bank.to("cpu") is bank and torch.equal(bank.train[1][0], train[1][0])
    with pytest.raises(ValueError, match="already trained on"):
        bank.trained_on(0, 5)
    with pytest.raises(ValueError, match="one distinct step per training batch"):
        FixedBatchBank(train, held, train_at=[3])


def test_probe_and_curvature_objects_wrap_measure():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    b = (torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))
    h = (torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))
    probe = OneStepProbe(b, h, lr=0.1, momentum=0.5, n_etas=7, every=3)
    out = probe.measure(0, model)
    ref = M.one_step_probe(model, *b, *h, M.probe_etas(0.1, 0.5, 7))
    np.testing.assert_array_equal(out["eta"], M.probe_etas(0.1, 0.5, 7))
    np.testing.assert_array_equal(out["loss_train"], ref["loss_train"])
    with torch.no_grad():
        assert out["loss0_train"] == pytest.approx(_ce(model(b[0]).numpy(), b[1].numpy()), rel=1e-12)
    assert probe.config() == {"probe_every": 3, "probe_etas": 7, "probe_lo": 1e-3, "probe_hi": 1e3}
    curv = TopCurvature([b], iters=30, every=0).measure(5, model)
    assert curv["top_eig"] == pytest.approx(M.top_curvature(model, [b], iters=30, seed=5))
    with pytest.raises(ValueError, match="lr must be"):
        OneStepProbe(b, h, lr=-1.0)


def test_run_writer_records_what_compare_reads(tmp_path):
    m = Vec([0.0, 0.0])
    avg = WeightAverages(m, [EMA(0.9, start=2), SWA(start=3)])
    run = RunWriter(tmp_path / "run", {"lr": 0.1, "momentum": 0.9}, averages=avg, config={"batch_size": 8})
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["lr"], cfg["momentum"], cfg["source_api"]) == (0.1, 0.9, "library")
    assert cfg["averaging"]["specs"] == {"ema_0.9": {"kind": "EMA", "decay": 0.9, "start": 2, "every": 1},
                                         "swa": {"kind": "SWA", "start": 3, "length": None, "every": 1}}
    # the averages are recorded once, as their specs: no flat copies of them beside the block
    assert not {"ema_decays", "ema_start", "swa_start", "two_point_gaps", "n_points"} & set(cfg)
    assert (cfg["eval_every"], cfg["average_buffers"], cfg["variants"]) == (1, False, ["raw", "ema_0.9", "swa"])
    assert run.close().name == "run"


def test_a_run_writer_state_whose_averaging_block_has_the_flat_keys_resumes(tmp_path):
    # a state saved while the `averaging` block also held the averages as flat keys: the same averages, so it resumes;
    # other averages are refused
    m = Vec([0.0, 0.0])
    avg = WeightAverages(m, [EMA(0.9, start=2), SWA(start=3)])
    state = RunWriter(tmp_path / "run", {"lr": 0.1, "momentum": 0.9}, averages=avg).state_dict()
    block = state["config"]["averaging"]
    old = {**block, "ema_decay_per_step": [0.9], "ema_start": 2, "ema_every": 1, "swa_start": 3, "swa_every": 1,
           "swa_length": None, "two_point_gaps": [], "n_points": [], "n_point_gap": 0,
           "ema_time_constant_steps": [10.0]}
    state["config"] = {**state["config"], "averaging": old, "ema_decays": [0.9], "ema_start": 2, "swa_start": 3}
    run = RunWriter.resume(state, tmp_path / "run2", averages=avg)
    assert run.config["averaging"] == old
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['averaging'\]"):
        RunWriter.resume(state, tmp_path / "run3", averages=WeightAverages(m, [EMA(0.9, start=2), SWA(start=4)]))


def test_example_trains_records_and_compare_report_reads_it(tmp_path):
    run_dir, report = tmp_path / "run", tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}     # a 150-step ResNet-8: threads would only contend on CI's cores
    p = subprocess.run([sys.executable, "examples/library_loop.py", str(run_dir), "resnet8"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == str(run_dir)
    run = load_run(run_dir)
    tr, cfg = run.trajectory, run.config["config"]
    assert run.summary["status"] == "ok" and run.summary["steps"] == 150
    assert math.isfinite(run.summary["eval"]["ema_0.98"]["acc"])
    for name in ("raw", "raw_running_bn", "ema_0.98", "swa", "points_n3_g20", "two_point_k40"):
        assert np.isfinite(tr[f"eval/test_loss_{name}"][-1]), name
    assert tr["bank/train_loss"].shape == (30, 3) and list(tr["static/bank_used_at"]) == [40, 80, 120]
    assert tr["probe/step"].tolist() == list(range(0, 150, 10))
    specs = cfg["averaging"]["specs"]
    assert (cfg["probe_every"], cfg["bank_every"], specs["ema_0.98"]["start"], specs["swa"]["start"]) == (10, 5, 50, 75)
    p = subprocess.run([sys.executable, "-m", "compare.report", str(run_dir), "--out", str(report)], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    md = (report / "report.md").read_text()
    assert "--probe-every" not in md and "two-point averages of raw iterates" in md
    for name in ("ema_0.98", "swa", "points_n3_g20"):
        assert f"| {name} |" in md
    p = subprocess.run([sys.executable, "-m", "figures.build", str(run_dir), "--out", str(tmp_path / "figures")],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    drawn = {f.stem for f in (tmp_path / "figures").glob("*.png")}
    assert {"structure_function", "ema_equivalence", "one_step_probe", "fixed_batch_along_trajectory"} <= drawn


def test_compare_tells_a_library_user_which_object_records_what_is_missing(tmp_path, capsys):
    """No lag grid and no probes: compare.report refuses (exit 2) naming the library objects, not only CLI flags."""
    from compare import report

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    avg = WeightAverages(model, [EMA(0.9, start=5)], eval_every=5)
    run = RunWriter(tmp_path / "run", opt, averages=avg)
    for step in range(20):
        x, y = data[step % 3]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(), loss.backward(), opt.step()
        run.train(step, loss.item(), 0.1)
        avg.update(model, step + 1)
        if (step + 1) % 5 == 0:
            run.evaluate(step + 1, model, test=data)
    run.close()
    assert report.main([str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "empirical.OneStepProbe" in err and "TwoPoint(k)" in err


def test_importing_empirical_loads_torch_only_when_a_name_is_used():
    """`python -m empirical.run --help` and bad flags are answered before torch loads (empirical/run.py): the
    package's public names are lazy."""
    code = ("import sys, empirical; a = 'torch' in sys.modules; empirical.WeightAverages; "
            "print(a, 'torch' in sys.modules, empirical.EMA is __import__('theory').EMA)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_module_returns_an_independent_module_each_call():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    avg = WeightAverages(model, [EMA(0.5), SWA(start=1)])
    batches = [(torch.randn(8, 3), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    for t in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(t))
        avg.update(model, t)
    ema = avg.module("ema_0.5", batches)
    w_ema, bn_ema = ema[0].weight.detach().clone(), ema[1].running_mean.clone()
    swa = avg.module("swa", batches)
    raw = avg.module("raw")                          # mode 'raw': a copy of the live model, not the model itself
    assert len({id(ema), id(swa), id(raw), id(model)}) == 4
    assert not torch.equal(ema[0].weight, swa[0].weight)
    torch.testing.assert_close(ema[0].weight, avg.parameters_of("ema_0.5")[0], rtol=0, atol=0)
    torch.testing.assert_close(swa[0].weight, avg.parameters_of("swa")[0], rtol=0, atol=0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    avg.update(model, 3)
    avg.module("ema_0.5", batches)
    assert torch.equal(ema[0].weight, w_ema) and torch.equal(ema[1].running_mean, bn_ema)   # untouched by later calls
    assert not torch.equal(raw[0].weight, model[0].weight)
    assert avg.prepare("ema_0.5", batches) is avg.prepare("swa", batches)   # the shared scratch copy


# ------------------------------------------------------------------------------------------ the recording plan
@pytest.mark.parametrize("total, lr, mu, until", [(40, 0.1, 0.9, None), (300, 0.05, 0.9, None),
                                                  (2400, 0.05, 0.9, 2100), (78000, 0.1, 0.9, 46800),
                                                  (450450, 0.1, None, 300300), (1000, 0.01, 0.0, None)])
def test_default_plan_meets_the_calibrations_rules(total, lr, mu, until):
    from empirical.library import default_plan

    p = default_plan(total, lr, mu, until)
    last = total if until is None else until - 1            # the last step logged at the peak LR
    lo, hi = p.window
    assert (lo, hi) == (int(0.5 * last), last)               # compare/calibrate.py: the last half of the phase
    assert len(p.lags) >= 5 and p.lags == tuple(sorted(set(p.lags)))
    assert max(p.lags) <= (hi - lo) / 3                      # compare/pairs.py: window >= 3 x lag
    assert all(k % p.dense_every == 0 for k in p.lags) and p.eval_every % p.dense_every == 0
    dense = p.dense_steps()
    assert lo <= dense[0] < lo + p.dense_every and hi - p.dense_every < dense[-1] <= hi
    assert len(dense) >= min(40, hi - lo)             # ~60 evaluations in a long window, every step in a short one
    for k in p.lags:                                         # both ends of >= 3 in-window pairs are evaluated
        assert sum(1 for t in dense if t - k >= lo) >= 3
    assert 0 < p.ema_start < p.swa_start == lo and p.ema_decays
    assert all(1 / (1 - d) <= hi - lo for d in p.ema_decays)


def test_default_plan_refuses_a_run_too_short_to_calibrate():
    from empirical.library import default_plan

    with pytest.raises(ValueError, match="too short to calibrate"):
        default_plan(20, 0.1, 0.9)
    with pytest.raises(ValueError, match="constant_until"):
        default_plan(100, 0.1, 0.9, constant_until=200)


def test_weight_averages_with_a_plan_add_its_lags_and_keep_its_dense_steps():
    from empirical.library import default_plan

    plan = default_plan(300, 0.05, 0.9)
    m = Vec([0.0, 0.0])
    a = WeightAverages(m, [EMA(0.99), TwoPoint(50)], eval_every=plan.eval_every, plan=plan)
    gaps = [s.gap for s in a.specs().values() if isinstance(s, TwoPoint)]
    assert sorted(gaps) == sorted({50, *plan.lags}) and a.total_steps == 300
    assert a.config()["recording_plan"] == plan.config()
    for t in range(1, plan.dense_from + 1):
        with torch.no_grad():
            m.w.add_(1.0)
        a.update(m, t)
    assert set(a.available()) >= {f"two_point_k{k}" for k in plan.lags if k <= a.step}   # a dense step, read now
    b = WeightAverages(m, plan=plan)                  # nothing given: the plan's own averages
    assert b.all_names() == ([f"ema_{d:g}" for d in plan.ema_decays] + ["swa"]
                             + [f"two_point_k{k}" for k in plan.lags])
    assert b.specs()["swa"] == SWA(start=plan.swa_start)
    assert all(e == EMA(e.decay, start=plan.ema_start) for e in b.specs().values() if isinstance(e, EMA))


# ------------------------------------------------------------------------------------------ the optimiser
def test_optimizer_config_records_every_hyperparameter_and_never_a_silent_zero_momentum(tmp_path):
    from empirical.library import optimizer_config

    p = [nn.Parameter(torch.zeros(2))]
    sgd = optimizer_config(torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4))
    assert (sgd["optimizer"], sgd["lr"], sgd["momentum"], sgd["optimizer_assumption"]) == ("SGD", 0.1, 0.9, None)
    assert sgd["optimizer_hparams"]["weight_decay"] == 5e-4 and "params" not in sgd["optimizer_hparams"]
    assert optimizer_config(torch.optim.SGD(p, lr=0.1))["momentum"] == 0.0
    nesterov = optimizer_config(torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    assert nesterov["momentum"] == 0.9 and "nesterov=True" in nesterov["optimizer_assumption"]
    adam = optimizer_config(torch.optim.AdamW(p, lr=1e-3, betas=(0.8, 0.99)))
    assert adam["momentum"] is None and adam["optimizer_hparams"]["betas"] == [0.8, 0.99]
    assert adam["optimizer_assumption"].startswith("the NQM assumes heavy-ball SGD") and "AdamW" in adam[
        "optimizer_assumption"]
    opt = torch.optim.SGD(p, lr=0.2, momentum=0.5)
    torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1)      # a warmup: the base LR is the one recorded
    assert optimizer_config(opt)["lr"] == 0.2
    run = RunWriter(tmp_path / "run", torch.optim.Adam(p, lr=1e-3))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["lr"], cfg["momentum"], cfg["optimizer"]) == (1e-3, None, "Adam")
    run.close()


def test_run_writer_takes_an_optimiser_or_its_lr_and_momentum_and_refuses_anything_else(tmp_path):
    run = RunWriter(tmp_path / "a", {"lr": 0.05})           # a loop without a torch optimiser: SGD's μ = 0 by default
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["config"]
    assert (cfg["lr"], cfg["momentum"]) == (0.05, 0.0)
    run.close()
    RunWriter(tmp_path / "b", {"lr": 0.05, "momentum": None}).close()   # not heavy-ball: recorded as null
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"]["momentum"] is None
    for bad, match in [({"momentum": 0.9}, "holds 'lr'"), ({"lr": 0.1, "beta": 0.9}, "holds 'lr'"),
                       ({"lr": -0.1}, "lr must be"), ({"lr": 0.1, "momentum": 1.0}, "momentum must be"),
                       (0.1, "torch optimiser")]:
        with pytest.raises(ValueError, match=match):
            RunWriter(tmp_path / "c", bad)
        assert not (tmp_path / "c").exists()                   # refused before anything is written
