"""The forecast's pieces (compare/forecast.py) where the answer is known by hand or in closed form; the whole forecast
on runs with a known truth is in tests/compare/test_closure.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from compare import forecast as FC
from compare import report
from theory import spec, stationary

CAL = SimpleNamespace(lr=0.05, momentum=0.9, h=np.array([0.2, 2.0]), s=np.array([1.0, 0.5]),
                      alpha_eff=np.array([0.1, 1.0]))


def _run(steps, lrs):
    return SimpleNamespace(trajectory={"train/step": np.asarray(steps), "train/lr": np.asarray(lrs, float)})


def test_lr_phases_follow_the_recorded_lr_after_the_burn_in():
    run = _run(range(10), [0.1] * 5 + [0.05] * 5)
    h = np.array([1.0])
    got = [(a, b, float(al[0])) for a, b, al in FC.lr_phases(CAL, run, 3, 10, h)]
    # burn-in at the calibration's LR, then steps 0-4 at 0.1 and 5-9 at 0.05, shifted by the burn-in
    assert got == [(0, 3, 0.05), (3, 8, 0.1), (8, 13, 0.05)]
    # a shorter horizon cuts the last phase
    assert [(a, b) for a, b, _ in FC.lr_phases(CAL, run, 3, 6, h)] == [(0, 3), (3, 8), (8, 9)]


def test_the_raw_excess_at_a_constant_lr_is_the_stationary_one():
    run = _run(range(3000), [0.05] * 3000)
    got = FC.excess_along_run(CAL, spec.NoAverage(), run, np.array([2999]))[0]
    # ½ Σ h·v with v the stationary iterate variance of heavy-ball SGD (theory.md §3.3, closed form)
    want = 0.5 * np.sum(CAL.h * stationary.iterate_variance(0.05 * CAL.h, CAL.s, 0.9))
    assert got == pytest.approx(want, rel=1e-6)


def test_an_lr_halving_lowers_the_predicted_excess_towards_the_new_level():
    run = _run(range(4000), [0.05] * 2000 + [0.025] * 2000)
    steps = np.array([1999, 3999])
    before, after = FC.excess_along_run(CAL, spec.NoAverage(), run, steps)
    want = 0.5 * np.sum(CAL.h * stationary.iterate_variance(0.025 * CAL.h, CAL.s, 0.9))
    assert after == pytest.approx(want, rel=1e-6) and after < before


@pytest.mark.parametrize("calibrate, window, words", [
    ("1000:2000", None, "go together"),
    (None, "1:2", "go together"),
    ("2000:1000", "1:2", "FIRST < LAST"),
    ("1000:2000", "a:b", "two steps"),
])
def test_bad_forecast_ranges_are_refused_in_one_line(calibrate, window, words):
    with pytest.raises(ValueError, match=words):
        report.forecast_ranges(calibrate, window)


def test_no_flags_no_forecast():
    assert report.forecast_ranges(None, None) is None
    assert report.forecast_ranges("10:20", "20:40") == ((10, 20), (20, 40))
