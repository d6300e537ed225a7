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


def test_spec_path_is_the_keyword_path():
    m = Vec([0.0, 0.0])
    a = WeightAverages(m, [EMA(0.9, start=3, every=2), EMA(0.99, start=3, every=2), SWA(start=5, every=2, length=4),
                           TwoPoint(4), NPoint(3, 2)], eval_every=2)
    b = WeightAverages(m, ema_decays=(0.9, 0.99), ema_start=3, ema_every=2, swa_start=5, swa_every=2, swa_length=4,
                       two_point_gaps=(4,), n_points=(3,), n_point_gap=2, eval_every=2)
    assert a.config() == b.config()


@pytest.mark.parametrize("averages, fragment", [
    ([EMA(0.9, start=0), EMA(0.99, start=5)], "share start"),
    ([SWA(start=1), SWA(start=2)], "at most one SWA"),
    ([NPoint(3, 2), NPoint(4, 5)], "one gap"),
    (["ema"], "not an averaging spec"),
])
def test_specs_refused_with_a_reason(averages, fragment):
    with pytest.raises(ValueError, match=fragment):
        WeightAverages(Vec([0.0]), averages)


def test_specs_and_keywords_not_both():
    with pytest.raises(ValueError, match="not both"):
        WeightAverages(Vec([0.0]), [EMA(0.9)], ema_decays=(0.5,))


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
    bank = FixedBatchBank(train, held, train_at=[3, 7], fraction=0.5, every=2, recorder=rec)
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
    run = RunWriter(tmp_path / "run", lr=0.1, momentum=0.9, averages=avg, config={"batch_size": 8})
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["lr"], cfg["momentum"], cfg["ema_start"], cfg["swa_start"], cfg["source_api"]) == (
        0.1, 0.9, 2, 3, "library")
    assert cfg["averaging"]["specs"]["ema_0.9"] == {"kind": "EMA", "decay": 0.9, "start": 2, "every": 1}
    assert run.close().name == "run"


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
    assert (cfg["probe_every"], cfg["bank_every"], cfg["ema_start"], cfg["swa_start"]) == (10, 5, 50, 75)
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
    run = RunWriter(tmp_path / "run", lr=0.1, averages=avg)
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
