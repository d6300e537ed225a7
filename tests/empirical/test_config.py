"""RunConfig, presets, CLI parsing, LR tables (vs hand-derived values) and the deterministic sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import config as C, flags as F, presets, schedules, validation
from empirical.sampler import EpochSampler


def test_every_field_has_help_and_group():
    for f in C.fields(C.RunConfig):
        assert f.metadata.get("help") and f.metadata.get("group"), f.name


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_presets_validate(name):
    cfg = validation.validate(presets.PRESETS[name])
    assert cfg.preset == name and cfg.dataset in C.DATASETS and cfg.arch in C.ARCHS


def test_digits_preset_has_a_constant_phase_and_averaging_on():
    d = presets.PRESETS["digits"]
    lrs = schedules.lr_table(d)
    assert np.all(lrs[:d.decay_start] == d.lr) and lrs[-1] < 0.01 * d.lr  # constant, then a cooldown
    assert d.ema_decays and d.swa_start is not None and d.two_point_gaps


def test_run_config_averages_are_the_specs_of_its_averaging_fields():
    from theory.spec import EMA, SWA, NPoint, TwoPoint

    cfg = C.RunConfig(ema_decays=(0.99, 0.9), ema_start=30, ema_every=2, swa_start=50, swa_every=5,
                      two_point_gaps=(10, 4), n_points=(3, 2), n_point_gap=7)
    assert cfg.averages() == [EMA(0.99, start=30, every=2), EMA(0.9, start=30, every=2), SWA(start=50, every=5),
                              TwoPoint(10), TwoPoint(4), NPoint(3, 7), NPoint(2, 7)]
    # no SWA start: no SWA; no decays, gaps or N: none of those
    bare = C.RunConfig(ema_decays=(), swa_start=None, two_point_gaps=(), n_points=(), n_point_gap=7)
    assert bare.averages() == []


def test_imagenet_preset_recipe():
    i = presets.PRESETS["imagenet"]
    assert (i.arch, i.batch_size, i.momentum, i.weight_decay) == ("resnet34", 256, 0.9, 1e-4)
    assert F.from_cli(["imagenet", "--batch-size", "512"]).peak_lr == pytest.approx(0.2)  # 0.1 x 512/256
    assert F.from_cli(["imagenet", "--arch", "resnet50"]).arch == "resnet50"


def test_names_match_the_modules():
    from empirical import data, models
    assert set(C.DATASETS) == set(data.NAMES)
    assert set(C.ARCHS) == set(models.ARCHS)
    bn = pytest.importorskip("empirical.bn")
    assert set(C.BN_MODES) == set(bn.BN_MODES)


def test_cli_parsing_types():
    cfg = F.from_cli(["digits", "--ema-decays", "0.99,0.999", "--swa-start", "none", "--two-point-gaps", "5,50",
                      "--bf16", "--no-channels-last", "--lr", "0.02", "--bn-mode", "raw"])
    assert cfg.ema_decays == (0.99, 0.999) and cfg.swa_start is None and cfg.two_point_gaps == (5, 50)
    assert cfg.bf16 is True and cfg.channels_last is False and cfg.lr == 0.02 and cfg.bn_mode == "raw"
    assert cfg.steps == presets.PRESETS["digits"].steps  # untouched fields keep the preset's value
    assert C.from_dict(cfg.to_dict()) == cfg  # config.json round trip


@pytest.mark.parametrize("argv, words", [
    (["nope"], "unknown preset"), (["smoke", "--lr", "-1"], "--lr"), (["smoke", "--lr", "nan"], "--lr"),
    (["smoke", "--ema-decays", "1.0"], "[0, 1)"), (["smoke", "--two-point-gaps", "80"], "gap 80"),
    (["smoke", "--arch", "vgg"], "--arch"), (["smoke", "--schedule", "exp"], "--schedule"),
    (["smoke", "--bogus", "1"], "unrecognized"), (["smoke", "--momentum", "1"], "--momentum"),
    (["smoke", "--swa-start", "500"], "--swa-start"), ([], "missing PRESET"),
    (["smoke", "--branch-schedule", "half"], "--branch-from"),
    (["smoke", "--bank-fraction", "0"], "--bank-fraction"), (["smoke", "--bank-fraction", "1.5"], "--bank-fraction"),
    (["smoke", "--bank-fraction", "nan"], "--bank-fraction"),
])
def test_bad_values_raise_one_line(argv, words):
    with pytest.raises(C.ConfigError) as e:
        F.from_cli(argv)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_lr_table_by_hand():
    # cosine from step 60 to 100, lr 0.1 -> 0: halfway (step 80) the LR is 0.05, at step 70 it is 0.1*(1+cos(pi/4))/2
    cfg = F.from_cli(["smoke", "--steps", "100", "--schedule", "cosine", "--decay-start", "60", "--lr", "0.1",
                      "--warmup-steps", "4", "--swa-start", "none"])
    lrs = schedules.lr_table(cfg)
    assert lrs[:4].tolist() == pytest.approx([0.025, 0.05, 0.075, 0.1])  # (t+1)/4 * 0.1
    assert lrs[59] == pytest.approx(0.1) and lrs[80] == pytest.approx(0.05)
    assert lrs[70] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    step = schedules.lr_table(F.from_cli(["smoke", "--schedule", "step", "--milestones", "10,20", "--lr", "1"]))
    assert step[[9, 10, 19, 20, 79]].tolist() == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


def test_branch_schedules_by_hand():
    # lr0 = 0.05, mu = 0.9 -> lambda_eff = 0.5. EMA gamma 0.99, h = 1: 0.05 * 0.01 / (0.01 + 0.5) = 9.80392e-4
    assert schedules.branch_lr("ema:0.99:1", 0.05, 0.9, 10).lr_at(np.array([10]))[0] == pytest.approx(0.05 * 0.01 / 0.51)
    assert schedules.branch_lr("half", 0.05, 0.9, 10).lr_at(np.array([10]))[0] == pytest.approx(0.025)
    # SWA with h = 1: tau = (1 - mu) / (lr0 h) = 2 steps -> 2 steps after the branch the LR has halved
    swa = schedules.branch_lr("swa:1", 0.05, 0.9, 10)
    assert swa.lr_at(np.array([10, 12]))[:].tolist() == pytest.approx([0.05, 0.025])
    cfg = F.from_cli(["smoke", "--lr", "0.05"])
    lrs = schedules.lr_table(cfg, branch=(30, "scale:0.25"))
    assert lrs[29] == 0.05 and np.all(lrs[30:] == pytest.approx(0.0125))


# ------------------------------------------------------------------------------------------------- sampler

@settings(deadline=None, max_examples=30)
@given(n=st.integers(8, 200), b=st.integers(1, 8), seed=st.integers(0, 10), world=st.sampled_from([1, 2, 4]))
def test_sampler_epochs_are_permutations_and_shards_tile(n, b, seed, world):
    b = b * world
    if b > n:
        return
    s = EpochSampler(n, b, seed)
    spe = n // b
    epoch1 = np.concatenate([s.global_indices(spe + j) for j in range(spe)])
    assert len(set(epoch1.tolist())) == spe * b and epoch1.min() >= 0 and epoch1.max() < n  # no repeats
    shards = [EpochSampler(n, b, seed, r, world) for r in range(world)]
    step = 3 * spe + spe // 2  # mid-epoch
    assert np.array_equal(np.concatenate([sh.indices(step) for sh in shards]), s.global_indices(step))
    assert np.array_equal(EpochSampler(n, b, seed).global_indices(step), s.global_indices(step))  # stateless


def test_sampler_epochs_differ_and_seeds_differ():
    a, b = EpochSampler(100, 10, 0), EpochSampler(100, 10, 1)
    assert not np.array_equal(a.global_indices(0), a.global_indices(10))
    assert not np.array_equal(a.global_indices(0), b.global_indices(0))
    with pytest.raises(ValueError, match="batch size"):
        EpochSampler(5, 10, 0)


@pytest.mark.parametrize("batch, fraction, images", [(64, 0.25, 16), (30, 0.1, 3), (10, 0.01, 1), (7, 1.0, 7),
                                                      (128, 0.25, 32), (5, 0.5, 3)])
def test_bank_images_is_ceil_of_fraction_times_batch(batch, fraction, images):
    # ceil(f·B) by hand; 0.1·30 is 3.0000000000000004 in floats and must still give 3
    cfg = F.from_cli(["smoke", "--batch-size", str(batch), "--bank-fraction", str(fraction)])
    assert cfg.bank_images == images and cfg.to_dict()["bank_images"] == images


@pytest.mark.parametrize("saved, fraction", [(0, 1.0), (16, 0.25)])
def test_runs_saved_with_bank_batch_size_resume_with_the_same_bank(saved, fraction):
    # config.json of runs written before --bank-fraction had bank_batch_size (0 = whole batches, else N images)
    d = F.from_cli(["digits"]).to_dict()
    del d["bank_fraction"], d["bank_images"]
    d["bank_batch_size"] = saved
    cfg = C.from_dict(d)
    assert cfg.bank_fraction == fraction and cfg.bank_images == (saved or 64)
