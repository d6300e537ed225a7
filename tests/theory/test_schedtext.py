"""The one schedule syntax (theory/schedtext.py) and spec.Warmup: hand values, round trips, named errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import spec
from theory.schedtext import format_schedule, parse_schedule


def test_warmup_hand_values():
    # λ_t = base(t)·min(1, (t+1)/4): base cosine over 10 steps from lr 1 (p = 1/2 at t = 5 → 0.5)
    w = spec.Warmup(spec.Cosine(lr=1.0, total=10), 4)
    np.testing.assert_allclose(w.lr_at(np.array([0, 1, 3, 5, 10])), [0.25, 0.5 * (1 + np.cos(np.pi / 10)) / 2,
                                                                     (1 + np.cos(3 * np.pi / 10)) / 2, 0.5, 0.0],
                               atol=1e-15)
    assert spec.Warmup(spec.Constant(0.3), 0).lr_at(np.array([0, 7])).tolist() == [0.3, 0.3]
    with pytest.raises(ValueError, match="warmup steps"):
        spec.Warmup(spec.Constant(0.3), -1)


def test_parse_hand_values_and_defaults():
    s = parse_schedule("step:milestones=100", 0.5, 1000)               # one milestone: no tuple needed
    assert s.lr_at(np.array([99, 100])).tolist() == pytest.approx([0.5, 0.05])
    s = parse_schedule("piecewise:boundaries=100,lrs=0.01", 0.5, 1000)
    assert s.lr_at(np.array([99, 100])).tolist() == [0.5, 0.01]
    s = parse_schedule("cosine:start=10,warmup=5", 0.2, 110)              # total defaults to the run length
    assert isinstance(s, spec.Warmup) and s.base.total == 110 and s.lr_at(np.array([0]))[0] == pytest.approx(0.04)


@pytest.mark.parametrize("text, words", [
    ("cosine:start=abc", ["--schedule", "start", "integer"]), ("step:factor=x", ["factor", "number"]),
    ("cosine:nope=1", ["nope", "start"]), ("wiggly", ["unknown schedule"]), ("cosine:start", ["key=value"]),
    ("step:milestones=5+3", ["--schedule", "increasing"]), ("cosine:start=-1", ["start", ">= 0"]),
])
def test_errors_name_the_flag_key_and_allowed_values(text, words):
    with pytest.raises(ValueError) as e:
        parse_schedule(text, 0.1, 100)
    for w in words:
        assert w in str(e.value)


@given(kind=st.sampled_from(["constant", "step", "cosine", "linear", "wsd", "hyperbolic", "piecewise"]),
       warm=st.integers(0, 20), lr=st.floats(0.01, 1.0))
@settings(deadline=None, max_examples=30)
def test_format_then_parse_is_the_same_schedule(kind, warm, lr):
    base = {"constant": spec.Constant(lr), "step": spec.Step(lr, milestones=(10, 40), factor=0.3),
            "cosine": spec.Cosine(lr, total=90, start=20, final_lr=lr / 10), "linear": spec.Linear(lr, total=50),
            "wsd": spec.WSD(lr, warmup=5, decay_start=30, decay=40, shape="sqrt"),
            "hyperbolic": spec.Hyperbolic(lr, start=15, tau=7.5),
            "piecewise": spec.Piecewise(lr, boundaries=(5, 60), lrs=(lr / 2, lr / 4))}[kind]
    sched = spec.Warmup(base, warm) if warm and kind != "wsd" else base
    back = parse_schedule(format_schedule(sched), 123.0, 7)                # explicit values win over defaults
    t = np.arange(120)
    np.testing.assert_array_equal(back.lr_at(t), sched.lr_at(t))
