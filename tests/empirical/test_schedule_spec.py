"""One schedule definition: every schedule empirical.run can train with is a theory.spec schedule (warmup
included), written in the one text syntax of theory.predict --schedule."""

import math

import numpy as np
import pytest

from empirical import config as C, flags as F, schedules
from theory import moments as M, spec
from theory.schedtext import parse_schedule


@pytest.mark.parametrize("name", C.SCHEDULES)
def test_every_schedule_is_a_theory_spec_schedule_and_round_trips_as_text(name):
    cfg = F.from_cli(["smoke", "--schedule", name, "--steps", "120", "--decay-start", "60", "--warmup-steps", "10",
                      "--milestones", "30,90", "--lr", "0.2", "--swa-start", "none"])
    sched = schedules.build_schedule(cfg)
    assert isinstance(sched, spec.Schedule)
    spec.SGD(sched, momentum=0.9)                                   # accepted by the theory side as it is
    t = np.arange(cfg.steps)
    text = schedules.schedule_text(cfg)
    np.testing.assert_array_equal(parse_schedule(text, lr=1.0, steps=1).lr_at(t), schedules.lr_table(cfg))


def test_warmup_then_cosine_by_hand():
    cfg = F.from_cli(["smoke", "--schedule", "cosine", "--steps", "100", "--decay-start", "60", "--lr", "0.1",
                      "--warmup-steps", "4", "--swa-start", "none"])
    lrs = schedules.build_schedule(cfg).lr_at(np.arange(100))
    assert lrs[:4].tolist() == pytest.approx([0.025, 0.05, 0.075, 0.1])             # (t+1)/4 · 0.1
    assert lrs[70] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)         # cosine from 60 to 100
    assert schedules.build_schedule(cfg).params()["warmup_steps"] == 4


def test_theory_models_the_warmup_cosine_run_exactly():
    cfg = F.from_cli(["smoke", "--schedule", "cosine", "--steps", "200", "--decay-start", "50", "--lr", "0.3",
                      "--warmup-steps", "20", "--swa-start", "none"])
    model = spec.NQM(h=[1.0, 0.05], sigma2=1.0, m0=0.5)
    opt = spec.SGD(schedules.build_schedule(cfg), momentum=0.9)
    steps = np.arange(0, 201, 10)
    fast, ref = M.moments(model, opt, spec.EMA(0.98, start=30), steps), \
        M.step_by_step(model, opt, spec.EMA(0.98, start=30), steps)
    np.testing.assert_allclose(fast.var_avg, ref.var_avg, rtol=1e-9)
    np.testing.assert_allclose(fast.mean_x, ref.mean_x, rtol=1e-9, atol=1e-12)


def test_huge_steps_refused_before_any_data_is_loaded():
    # used to pass validation and fail later with MemoryError (after loading the data)
    with pytest.raises(C.ConfigError) as e:
        F.from_cli(["smoke", "--steps", "1000000000000"])
    msg = str(e.value)
    assert "--steps" in msg and f"{schedules.MAX_STEPS:,}" in msg and "\n" not in msg
