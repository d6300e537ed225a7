"""Spec validation and schedule values computed by hand."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import spec


def test_schedules_hand_values():
    t = np.array([0, 4, 5, 9, 10, 20])
    np.testing.assert_allclose(spec.Step(lr=1.0, milestones=(5, 10), factor=0.1).lr_at(t), [1, 1, .1, .1, .01, .01])
    # cosine from 0 to 10: at p = 1/2 the LR is the midpoint
    np.testing.assert_allclose(spec.Cosine(lr=1.0, total=10).lr_at(np.array([0, 5, 10, 12])), [1, .5, 0, 0], atol=1e-15)
    np.testing.assert_allclose(spec.Linear(lr=2.0, total=12, start=4, final_lr=0.0).lr_at(np.array([3, 8, 12])), [2, 1, 0])
    # hyperbolic: λ τ/(τ + n); τ = 4 → halves 4 steps after start
    np.testing.assert_allclose(spec.Hyperbolic(lr=1.0, start=2, tau=4.0).lr_at(np.array([0, 2, 6, 14])), [1, 1, .5, .25])
    wsd = spec.WSD(lr=1.0, warmup=4, decay_start=6, decay=4, final_lr=0.0)
    np.testing.assert_allclose(wsd.lr_at(np.array([0, 3, 5, 8, 10])), [.25, 1, 1, .5, 0])
    pw = spec.Piecewise(lr=1.0, boundaries=(3, 6), lrs=(0.5, 0.25))
    assert pw.phases(8) == [(0, 3, 1.0), (3, 6, 0.5), (6, 8, 0.25)]


@given(st.integers(1, 400), st.floats(0.01, 2.0), st.integers(1, 300))
@settings(max_examples=30, deadline=None)
def test_phases_cover_the_run_and_agree_with_lr_at(total, lr, dec):
    s = spec.Cosine(lr=lr, total=dec + 1, start=dec // 2)
    ph = s.phases(total)
    assert ph[0][0] == 0 and ph[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ph, ph[1:]))
    for a, b, v in ph:
        np.testing.assert_array_equal(s.lr_at(np.arange(a, b)), v)


@pytest.mark.parametrize("make, fragment", [
    (lambda: spec.Constant(lr=float("nan")), "lr must be"),
    (lambda: spec.Constant(lr=-1), "lr must be"),
    (lambda: spec.EMA(decay=1.0), r"\[0, 1\)"),
    (lambda: spec.SGD(spec.Constant(0.1), momentum=1.0), "momentum"),
    (lambda: spec.NQM(h=[1.0, -1.0]), "> 0"),
    (lambda: spec.NQM(h=[1.0, 2.0], sigma2=[1, 2, 3]), "give 1 or 2"),
    (lambda: spec.TwoPoint(gap=-1), "gap"),
    (lambda: spec.make_schedule("bogus", lr=1), "unknown schedule"),
    (lambda: spec.make_schedule("cosine", lr=1, total=10, bogus=1), "no parameter"),
    (lambda: spec.Step(lr=1, milestones=(5, 3)), "increasing"),
])
def test_invalid_specs_raise_value_error_saying_what_is_allowed(make, fragment):
    with pytest.raises(ValueError, match=fragment):
        make()
