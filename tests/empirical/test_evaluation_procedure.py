"""One evaluation procedure for every variant (docs/run-series.md): an EMA of decay 0 equals the iterate, so every
series it appears in must equal the raw one bit for bit; the deployed raw weights with their running statistics
stay visible as ``raw_running_bn``; the probes/bank/alignment/curvature see the same BN-consistent raw model."""
import numpy as np
import pytest
import torch
from torch import nn

from empirical import bn, run
from common import rundir

ARGS = ["smoke", "--steps", "40", "--ema-decays", "0.0,0.9", "--ema-start", "0", "--eval-every", "20",
        "--eval-dense-every", "5", "--eval-dense-from", "5", "--two-point-gaps", "5,10", "--bank-every", "5",
        "--probe-every", "20", "--curv-every", "0", "--align-every", "20"]


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema0") / "r"
    return rundir.load_run(run.main([*ARGS, "--out", str(out)])).trajectory


def test_ema_of_decay_zero_evaluates_exactly_as_the_raw_weights(traj):
    for series in ("test_loss", "test_acc", "train_loss", "train_acc"):
        np.testing.assert_array_equal(traj[f"eval/{series}_ema_0.0"], traj[f"eval/{series}_raw"])
    np.testing.assert_array_equal(traj["sketch/ema_0.0"], traj["sketch/raw"])
    assert np.all(traj["dist/ema_0.0"] == 0.0)


def test_raw_running_bn_is_its_own_variant(traj):
    running, raw = traj["eval/test_loss_raw_running_bn"], traj["eval/test_loss_raw"]
    assert np.all(np.isfinite(running)) and not np.array_equal(running, raw)


def test_dense_window_evaluates_the_test_split_only(traj):
    steps = traj["eval/step"]
    assert steps.tolist() == list(range(0, 41, 5))
    regular = (steps % 20 == 0)
    assert np.all(np.isfinite(traj["eval/test_loss_raw"]))
    assert np.all(np.isfinite(traj["eval/train_loss_raw"][regular]))
    assert np.all(np.isnan(traj["eval/train_loss_raw"][~regular]))
    # the lag grid's two-point averages are evaluated at every dense step where they are defined
    assert np.all(np.isfinite(traj["eval/test_loss_two_point_k10"][steps >= 10]))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.lin(x))


def test_consistent_raw_recomputes_once_per_step_and_never_touches_raw():
    torch.manual_seed(0)
    raw, target = _Net(), _Net()
    raw.bn.running_mean.fill_(5.0)
    batches = [(torch.randn(8, 3), None) for _ in range(3)]
    calls = []
    c = bn.ConsistentRaw(target, "recompute", batches, call_fn=lambda m, b: calls.append(1) or m(b[0]))
    assert c(raw, 7) is target and len(calls) == 3
    assert c(raw, 7) is target and len(calls) == 3          # cached: same step, no second recomputation
    with torch.no_grad():
        want = torch.stack([raw.lin(x).mean(0) for x, _ in batches]).mean(0)
    assert torch.allclose(target.bn.running_mean, want)
    assert torch.all(raw.bn.running_mean == 5.0)
    c(raw, 8)
    assert len(calls) == 6
    assert bn.ConsistentRaw(target, "raw", batches)(raw, 1) is raw


def test_measure_asks_for_the_consistent_model_only_when_something_is_due():
    from dataclasses import replace

    from empirical import config, train
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 4, (8,))) for _ in range(2)]
    cfg = replace(config.RunConfig(), batch_size=8, bank_every=10, probe_every=0, align_every=0, curv_every=0)
    asked, logged = [], {}

    class Rec:
        def log(self, group, step, **series):
            logged[(group, step)] = series

    train.measure(5, train.TrainState(cfg, fixed={"bank": batches[:1], "held": batches[1:]}, rec=Rec()), 0.1, None,
                  None, model_at=lambda: asked.append(5) or model)
    assert asked == [] and logged == {}
    train.measure(10, train.TrainState(cfg, fixed={"bank": batches[:1], "held": batches[1:]}, rec=Rec()), 0.1, None,
                  None, model_at=lambda: asked.append(10) or model)
    assert asked == [10] and ("bank", 10) in logged
