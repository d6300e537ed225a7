"""BatchNorm handling of averaged weights: recompute_bn against hand-computed statistics; 'raw' / 'averaged' modes."""
import pytest
import torch
from torch import nn

from empirical import config
from empirical.averaging import WeightAverages
from empirical.bn import BN_MODES, prepare_variant, recompute_bn
from theory.spec import EMA


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4, momentum=0.3)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.lin(x))))


def _net(seed=0):
    torch.manual_seed(seed)
    return Net().double()


def _batches(n=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, generator=g, dtype=torch.float64) * 2 + 1, torch.zeros(size, dtype=torch.long))
            for _ in range(n)]


def test_modes_match_config():
    assert BN_MODES == config.BN_MODES


def test_recompute_bn_gives_batch_statistics():
    m = _net()
    m.eval()
    with torch.no_grad():
        m.bn.running_mean.fill_(5.0)
        m.bn.running_var.fill_(7.0)
    batches = _batches()
    with torch.no_grad():                                 # the inputs the BN layer sees, computed by hand
        feats = [m.lin(x) for x, _ in batches]
    mean = torch.stack([f.mean(0) for f in feats]).mean(0)                 # mean of the batch means
    var = torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0)    # mean of the unbiased batch variances
    assert recompute_bn(m, batches) == 3
    assert torch.allclose(m.bn.running_mean, mean, rtol=1e-12, atol=1e-12)
    assert torch.allclose(m.bn.running_var, var, rtol=1e-12, atol=1e-12)
    assert m.bn.momentum == 0.3 and not m.training and not m.bn.training  # restored
    assert m.bn.num_batches_tracked.item() == 3


def test_recompute_bn_single_batch_call_fn_and_generator():
    m = _net()
    m.train()
    x, _ = _batches(1)[0]
    calls = []

    def call_fn(model, batch):                             # e.g. dict batches; proves the hook is used
        calls.append(1)
        return model(batch["image"])

    n = recompute_bn(m, ({"image": x} for _ in range(1)), call_fn=call_fn)
    with torch.no_grad():
        f = m.lin(x)
    assert n == 1 and calls == [1] and m.training
    assert torch.allclose(m.bn.running_mean, f.mean(0)) and torch.allclose(m.bn.running_var, f.var(0))


def test_recompute_bn_edge_cases():
    assert recompute_bn(nn.Linear(2, 2), []) == 0                          # no BN: nothing to do
    m = _net()
    before = m.bn.running_mean.clone()
    with pytest.raises(ValueError, match="at least one batch"):
        recompute_bn(m, [])
    assert torch.equal(m.bn.running_mean, before)                           # untouched on error
    with pytest.raises(RuntimeError):
        recompute_bn(m, [(torch.randn(4, 5, dtype=torch.float64),)])       # wrong width: error inside forward
    assert m.bn.momentum == 0.3 and m.training                              # restored despite the error


def _trained_pair():
    raw = _net()
    avg = WeightAverages(raw, [EMA(0.5)], average_buffers=True)
    with torch.no_grad():
        for p in raw.parameters():
            p.add_(1.0)
        raw.bn.running_mean.fill_(2.0)                    # EMA of running_mean: 0.5·0 + 0.5·2 = 1
        raw.bn.running_var.fill_(3.0)                     # EMA of running_var: 0.5·1 + 0.5·3 = 2
        raw.bn.num_batches_tracked.fill_(9)
    avg.update(raw, 1)
    return raw, avg


def test_prepare_variant_modes():
    raw, avg = _trained_pair()
    target = _net(seed=5)
    ref = _net()
    for p, q in zip(ref.parameters(), raw.parameters()):
        with torch.no_grad():
            p.copy_((p + q) / 2)                          # EMA with γ = 0.5 of θ_0 and θ_0 + 1

    out = prepare_variant(avg, "ema_0.5", target, raw, "raw", _batches())
    assert out is target
    assert torch.equal(target.bn.running_mean, raw.bn.running_mean) and torch.equal(target.bn.running_var,
                                                                                   raw.bn.running_var)
    for p, q in zip(target.parameters(), ref.parameters()):
        assert torch.allclose(p, q)

    prepare_variant(avg, "ema_0.5", target, raw, "averaged", _batches())
    assert torch.allclose(target.bn.running_mean, torch.full((4,), 1.0, dtype=torch.float64))
    assert torch.allclose(target.bn.running_var, torch.full((4,), 2.0, dtype=torch.float64))
    assert target.bn.num_batches_tracked.item() == 9

    batches = _batches()
    prepare_variant(avg, "ema_0.5", target, raw, "recompute", batches)
    with torch.no_grad():
        mean = torch.stack([target.lin(x).mean(0) for x, _ in batches]).mean(0)
    assert torch.allclose(target.bn.running_mean, mean)
    assert torch.equal(raw.bn.running_mean, torch.full((4,), 2.0, dtype=torch.float64))  # raw never touched

    # one procedure for every variant: in 'recompute' the raw weights get recomputed statistics too (on target);
    # the deployed raw weights with their running statistics are the variant raw_running_bn; in the other modes
    # the running statistics are the procedure
    assert prepare_variant(avg, "raw_running_bn", target, raw, "recompute", batches) is raw
    assert prepare_variant(avg, "raw", target, raw, "raw", batches) is raw
    out = prepare_variant(avg, "raw", target, raw, "recompute", batches)
    with torch.no_grad():
        mean = torch.stack([raw.lin(x).mean(0) for x, _ in batches]).mean(0)
    assert out is target and torch.allclose(target.bn.running_mean, mean)
    assert all(torch.equal(p, q) for p, q in zip(target.parameters(), raw.parameters()))
    assert torch.equal(raw.bn.running_mean, torch.full((4,), 2.0, dtype=torch.float64))  # raw never touched


def test_prepare_variant_bad_input():
    raw = _net()
    avg = WeightAverages(raw, [EMA(0.5)])
    with pytest.raises(ValueError, match="choose one of"):
        prepare_variant(avg, "ema_0.5", _net(), raw, "ema_buffers", [])
    with pytest.raises(ValueError, match="average_buffers=True"):
        prepare_variant(avg, "ema_0.5", _net(), raw, "averaged", [])
