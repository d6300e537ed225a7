"""WeightAverages: hand-computed EMA/SWA/two-point/N-point values, units of the decay, memory bound, fp32
accumulators, exact resume (theory.md §3.3-3.5, theory/spec.py EMA/SWA/TwoPoint/NPoint)."""
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from empirical.averaging import WeightAverages
from theory.spec import EMA, SWA, NPoint, TwoPoint


class Scalar(nn.Module):
    """One scalar parameter (and, optionally, a float buffer and an int buffer like BatchNorm's)."""

    def __init__(self, v=0.0, dtype=torch.float32, buffers=False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(v), dtype=dtype))
        if buffers:
            self.register_buffer("stat", torch.tensor(0.0, dtype=dtype))
            self.register_buffer("count", torch.tensor(0, dtype=torch.long))


def set_w(m, v, stat=None):
    with torch.no_grad():
        m.w.fill_(v)
        if stat is not None:
            m.stat.fill_(stat)
            m.count.add_(1)


def run(values, averages, **kw):
    """Averages after feeding θ_0 = values[0], θ_1 = values[1], ...; returns (averages, model)."""
    m = Scalar(values[0], dtype=kw.pop("dtype", torch.float64))
    avg = WeightAverages(m, averages, **kw)
    for t, v in enumerate(values[1:], start=1):
        set_w(m, v)
        avg.update(m, t)
    return avg, m


def value(avg, name, dtype=torch.float64):
    target = Scalar(dtype=dtype)
    avg.copy_into(name, target)
    return target.w.item()


def test_ema_by_hand():
    # θ: 1 → 2 → 4, γ = 0.5, EMA initialised to θ_0 = 1 at start 0:
    # y_1 = 0.5·1 + 0.5·2 = 1.5;  y_2 = 0.5·1.5 + 0.5·4 = 0.75 + 2 = 2.75
    avg, _ = run([1.0, 2.0], [EMA(0.5)])
    assert value(avg, "ema_0.5") == 1.5
    avg, _ = run([1.0, 2.0, 4.0], [EMA(0.5)])
    assert value(avg, "ema_0.5") == 2.75


def test_ema_start_and_before():
    # start 2: not defined at steps 0, 1; y_2 = θ_2 = 4; y_3 = 0.5·4 + 0.5·8 = 6
    m = Scalar(1.0, torch.float64)
    avg = WeightAverages(m, [EMA(0.5, start=2)])
    assert avg.names() == [] and avg.all_names() == ["ema_0.5"]
    for t, v in [(1, 2.0), (2, 4.0), (3, 8.0)]:
        set_w(m, v)
        avg.update(m, t)
        if t == 1:
            assert avg.names() == []
            with pytest.raises(ValueError, match="not defined yet"):
                avg.copy_into("ema_0.5", Scalar())
        if t == 2:
            assert value(avg, "ema_0.5") == 4.0
    assert value(avg, "ema_0.5") == 6.0


def test_ema_every_by_hand():
    # γ = 0.5 per step, every 2 steps: decay per update 0.25; updates at steps 2 and 4 only.
    # θ = 0, 4, 8, 12, 16: y_0 = 0; y_2 = 0.25·0 + 0.75·8 = 6; y_4 = 0.25·6 + 0.75·16 = 1.5 + 12 = 13.5
    avg, _ = run([0.0, 4.0, 8.0, 12.0, 16.0], [EMA(0.5, every=2)])
    assert value(avg, "ema_0.5") == 13.5
    assert avg.config()["specs"] == {"ema_0.5": {"kind": "EMA", "decay": 0.5, "start": 0, "every": 2}}
    assert [avg.due(EMA(0.5, every=2), t) for t in range(5)] == [True, False, True, False, True]


@settings(deadline=None, max_examples=30)
@given(st.floats(0.5, 0.9999), st.integers(1, 50))
def test_ema_every_records_the_per_step_decay(gamma, c):
    avg, _ = run([0.0], [EMA(gamma, every=c)])
    cfg = avg.config()
    name = f"ema_{gamma!r}"
    assert cfg["specs"][name] == {"kind": "EMA", "decay": gamma, "start": 0, "every": c}   # γ per step, not γ^c
    assert cfg["ema_time_constant_steps"][name] == pytest.approx(1 / (1 - gamma))


@settings(deadline=None, max_examples=25)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=12))
def test_decay_zero_is_live_weights(vals):
    avg, m = run(vals, [EMA(0.0)], dtype=torch.float32)
    assert value(avg, "ema_0.0", torch.float32) == m.w.item()  # exactly: lerp with weight 1 returns the end point
    assert avg.distances(m)["ema_0.0"] == 0.0


def test_swa_is_arithmetic_mean():
    vals = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    avg, _ = run(vals, [SWA(start=2)])                    # θ_2..θ_7 = 4, 1, 5, 9, 2, 6: mean 27/6 = 4.5
    assert value(avg, "swa") == pytest.approx(4.5, rel=1e-15)
    avg, _ = run(vals, [SWA(start=1, every=3)])           # θ_1, θ_4, θ_7 = 1, 5, 6: mean 4
    assert value(avg, "swa") == pytest.approx(4.0, rel=1e-15)
    avg, _ = run(vals, [SWA(start=0, length=3)])          # θ_0..θ_2 = 3, 1, 4: mean 8/3, frozen afterwards
    assert value(avg, "swa") == pytest.approx(8 / 3, rel=1e-15)
    avg, _ = run(vals[:2], [SWA(start=2)])
    assert "swa" not in avg.names() and avg.all_names() == ["swa"]


def test_two_point_and_n_point_at_eval_steps():
    vals = [float(t * t) for t in range(41)]             # θ_t = t²
    m = Scalar(vals[0], torch.float64)
    avg = WeightAverages(m, [TwoPoint(7), NPoint(3, 4)], eval_every=5, total_steps=40)
    for t in range(1, 41):
        set_w(m, vals[t])
        avg.update(m, t)
        names = avg.names()
        assert ("two_point_k7" in names) == (t >= 7) and ("points_n3_g4" in names) == (t >= 8)
        if t % 5 == 0 and t >= 8:
            assert value(avg, "two_point_k7") == 0.5 * (t * t + (t - 7) ** 2)
            assert value(avg, "points_n3_g4") == pytest.approx((t * t + (t - 4) ** 2 + (t - 8) ** 2) / 3, rel=1e-15)
            assert avg.distances(m)["two_point_k7"] == pytest.approx(abs(0.5 * ((t - 7) ** 2 - t * t)), rel=1e-15)
        elif t >= 8:
            with pytest.raises(ValueError, match="not kept.*will_need"):
                avg.copy_into("two_point_k7", Scalar(dtype=torch.float64))


def test_final_step_via_total_steps_and_will_need():
    m = Scalar(0.0, torch.float64)
    avg = WeightAverages(m, [TwoPoint(5)], eval_every=10, total_steps=23)
    avg.will_need(17)
    for t in range(1, 24):
        set_w(m, float(t))
        avg.update(m, t)
        if t in (17, 23):
            assert value(avg, "two_point_k5") == t - 2.5
    with pytest.raises(ValueError, match="already past"):
        avg.will_need(3)


def test_will_need_too_late():
    m = Scalar(0.0, torch.float64)
    avg = WeightAverages(m, [TwoPoint(5)], eval_every=10)
    for t in range(1, 8):
        set_w(m, float(t))
        avg.update(m, t)
    with pytest.raises(ValueError, match="too late"):
        avg.will_need(9)                                   # needs θ_4, gone
    avg.will_need(13)                                      # needs θ_8, θ_13: still in the future
    assert 13 in avg._extra


@pytest.mark.parametrize("k,every", [(100, 10), (64, 16), (30, 7)])
def test_snapshot_memory_bounded(k, every):
    m = Scalar(0.0, torch.float64)
    avg = WeightAverages(m, [TwoPoint(k)], eval_every=every)
    counts = []
    for t in range(1, 4 * k):
        set_w(m, float(t))
        avg.update(m, t)
        counts.append(len(avg.stored_steps()))
    # held: θ_{e−k} for the evaluation steps e in (t, t+k], the one in use now (e = t) and θ_t itself if t is one
    assert max(counts) <= k // every + 3
    assert max(counts) >= k // every
    assert max(counts) < k / 4


def test_fp32_accumulator_with_bf16_model_moves():
    one, step = 1.0, 1.0 + 2.0 ** -7                      # both exact in bf16 (8 significant bits)
    gamma = 0.999
    # Premise: a bf16 accumulator does not move: 1 + 0.001·2⁻⁷ ≈ 1 + 7.8e-6 rounds back to 1 in bf16.
    acc16 = torch.tensor(one, dtype=torch.bfloat16)
    acc16.lerp_(torch.tensor(step, dtype=torch.bfloat16), 1 - gamma)
    assert acc16.item() == 1.0
    m = Scalar(one, torch.bfloat16)
    avg = WeightAverages(m, [EMA(gamma), SWA(start=0)])
    set_w(m, step)
    avg.update(m, 1)
    assert avg._ema[0][0].dtype == torch.float32
    expected = one + (1 - gamma) * (step - one)           # 1.0000078125, representable in fp32 to ~1e-7
    assert avg._ema[0][0].item() == pytest.approx(expected, abs=2e-7) and avg._ema[0][0].item() != 1.0
    assert avg._swa[0].item() == pytest.approx((one + step) / 2, abs=1e-7)
    assert avg.config()["accumulator_dtype"] == ["float32"]


def test_average_buffers():
    m = Scalar(0.0, torch.float64, buffers=True)
    avg = WeightAverages(m, [EMA(0.5)], average_buffers=True)
    set_w(m, 2.0, stat=4.0)                               # EMA of stat: 0.5·0 + 0.5·4 = 2; count copied: 1
    avg.update(m, 1)
    target = Scalar(dtype=torch.float64, buffers=True)
    avg.copy_into("ema_0.5", target)
    assert target.w.item() == 1.0 and target.stat.item() == 2.0 and target.count.item() == 1
    assert set(avg.distances(m)) == {"ema_0.5"} and avg.distances(m)["ema_0.5"] == 1.0  # parameters only


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _feed(m, avg, t0, t1, seed=1):
    g = torch.Generator().manual_seed(seed)
    for t in range(t0, t1):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            for b in m.buffers():
                if b.is_floating_point():
                    b.add_(torch.randn(b.shape, generator=g) * 0.1)
        avg.update(m, t)


def test_state_dict_round_trip_is_exact():
    averages = [EMA(0.9, every=2), EMA(0.99, every=2), SWA(start=3), TwoPoint(4), NPoint(3, 2)]
    kw = dict(eval_every=5, average_buffers=True, total_steps=23)
    ref_m = _model()
    ref = WeightAverages(ref_m, averages, **kw)
    _feed(ref_m, ref, 1, 11)
    buf = io.BytesIO()
    torch.save({"avg": ref.state_dict(), "model": ref_m.state_dict()}, buf)
    _feed(ref_m, ref, 11, 24, seed=2)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    m = _model()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)                                   # a different starting model: all state must come from sd
    m.load_state_dict(saved["model"])
    avg = WeightAverages(m, averages, **kw)
    avg.load_state_dict(saved["avg"])
    _feed(m, avg, 11, 24, seed=2)
    assert avg.names() == ref.names() and avg.stored_steps() == ref.stored_steps()
    for name in ref.names():
        a, b = _model(), _model()
        ref.copy_into(name, a)
        avg.copy_into(name, b)
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert avg.distances(m) == ref.distances(ref_m)


def test_load_rejects_other_config():
    m = _model()
    sd = WeightAverages(m, [EMA(0.9)]).state_dict()
    with pytest.raises(ValueError, match=r"in \['specs'\]: specs: saved \{'ema_0.9'"):
        WeightAverages(m, [EMA(0.99)]).load_state_dict(sd)


def test_a_checkpoint_with_the_flat_keys_still_loads():
    # before the specs were the record, state_dict()["config"] held the averages as flat keys: what the runs'
    # existing checkpoints hold (written out here by hand)
    averages = [EMA(0.9, start=2, every=2), SWA(start=3, every=2, length=4), TwoPoint(4), NPoint(3, 2)]
    ref_m = _model()
    ref = WeightAverages(ref_m, averages, eval_every=2, total_steps=20)
    _feed(ref_m, ref, 1, 9)
    sd = ref.state_dict()
    old = {"variants": ["ema_0.9", "swa", "two_point_k4", "points_n3_g2"], "ema_decay_per_step": [0.9],
           "ema_start": 2, "ema_every": 2, "swa_start": 3, "swa_every": 2, "swa_length": 4, "two_point_gaps": [4],
           "n_points": [3], "n_point_gap": 2, "eval_every": 2, "average_buffers": False,
           "n_tensors": sd["config"]["n_tensors"], "shapes": sd["config"]["shapes"]}
    m = _model()
    avg = WeightAverages(m, averages, eval_every=2, total_steps=20)
    avg.load_state_dict({**sd, "config": old})
    for name in ref.names():
        assert all(torch.equal(x, y) for x, y in zip(avg.parameters_of(name), ref.parameters_of(name))), name
    with pytest.raises(ValueError, match=r"in \['specs'\]"):
        WeightAverages(m, averages, eval_every=2, total_steps=20).load_state_dict(
            {**sd, "config": {**old, "swa_length": None}})


def test_due_is_the_rule_of_the_ema_and_swa_updates():
    # from the start, every `every` steps; an SWA with a length takes that many iterates, then stops
    assert [t for t in range(12) if WeightAverages.due(EMA(0.9, start=3, every=2), t)] == [3, 5, 7, 9, 11]
    assert [t for t in range(12) if WeightAverages.due(SWA(start=1, every=3, length=2), t)] == [1, 4]
    assert [t for t in range(6) if WeightAverages.due(SWA(start=2), t)] == [2, 3, 4, 5]


def test_load_rejects_unservable_final_step():
    m = _model()
    avg = WeightAverages(m, [TwoPoint(5)], eval_every=10, total_steps=30)
    _feed(m, avg, 1, 12)
    sd = avg.state_dict()
    with pytest.raises(ValueError, match="cannot produce"):
        WeightAverages(m, [TwoPoint(5)], eval_every=10, total_steps=14).load_state_dict(sd)  # θ_9 gone


def test_positional_keys_survive_renaming():
    # a wrapper changes every parameter name (as torch.compile's _orig_mod. prefix does); order is what counts
    m = _model()
    avg = WeightAverages(m, [EMA(0.5)])
    wrapped = nn.Sequential(m)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(2.0)
    avg.update(wrapped, 1)
    target = _model()
    avg.copy_into("ema_0.5", nn.Sequential(target))
    for p, q in zip(target.parameters(), _model().parameters()):
        assert torch.allclose(p, q + 1.0)


def test_bad_input():
    m = Scalar()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightAverages(m, [EMA(1.0)])
    with pytest.raises(ValueError, match="at most once"):
        WeightAverages(m, [EMA(0.9), EMA(0.9)])
    with pytest.raises(ValueError, match="at most once"):
        WeightAverages(m, [TwoPoint(3), TwoPoint(3)])
    with pytest.raises(ValueError, match="EMA every"):
        WeightAverages(m, [EMA(0.9, every=0)])
    with pytest.raises(ValueError, match="gap"):
        WeightAverages(m, [TwoPoint(-1)])
    with pytest.raises(ValueError, match="for an EMA or SWA"):
        WeightAverages.due(TwoPoint(3), 5)
    avg = WeightAverages(m, [EMA(0.9)])
    with pytest.raises(ValueError, match="step = 1"):
        avg.update(m, 2)
    with pytest.raises(ValueError, match="unknown variant"):
        avg.copy_into("ema_0.5", Scalar())
    with pytest.raises(ValueError, match="does not match"):
        avg.update(_model(), 1)
    assert np.isfinite(avg.config()["ema_time_constant_steps"]["ema_0.9"])


def test_available_leaves_out_multi_point_averages_off_the_evaluation_grid():
    # eval_every 4: at step 5 the two-point average needs θ_5 and θ_3, neither kept; EMA and SWA are always readable
    avg, _ = run([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [EMA(0.5), SWA(start=0), TwoPoint(2)], eval_every=4)
    assert avg.names() == ["ema_0.5", "swa", "two_point_k2"]
    assert avg.available() == ["ema_0.5", "swa"]
    avg, _ = run([0.0, 1.0, 2.0, 3.0, 4.0], [TwoPoint(2)], eval_every=4)
    assert avg.available() == ["two_point_k2"] and value(avg, "two_point_k2") == 3.0   # ½(θ_4 + θ_2)
