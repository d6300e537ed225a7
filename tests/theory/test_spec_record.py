"""An average's spec is its record: it serialises itself, says where it starts and which iterates make it; the run's
config.json keeps the spec list and compare reads it back (compare.load.recorded_averages), with no other source."""
from __future__ import annotations

import numpy as np
import pytest

from compare import predict
from common.rundir import RunDirError
from compare.load import recorded_averages
from theory import spec as S

SPECS = [S.NoAverage(), S.EMA(0.9, start=3, every=2), S.SWA(start=2, length=3, every=2), S.TwoPoint(4),
         S.NPoint(3, 2)]


@pytest.mark.parametrize("avg", SPECS, ids=lambda a: type(a).__name__)
def test_record_round_trips_and_weights_sum_to_one(avg):
    d = avg.to_dict()
    assert d["kind"] == type(avg).__name__
    assert S.averaging_from_dict(d) == avg
    j, w = avg.weights(20)
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and np.all(np.diff(j) > 0) and j[-1] <= 20


def test_where_each_average_starts():
    # by definition: EMA/SWA at their start, two points once both exist (the gap), N points at (N − 1)·gap
    assert [a.defined_from for a in SPECS] == [0, 3, 2, 4, 4]


def test_weights_by_hand():
    # EMA γ = 0.5 from step 2, every step, read at 5: y = θ2 then three lerps of ½ -> ⅛, ⅛, ¼, ½
    j, w = S.EMA(0.5, start=2).weights(5)
    assert j.tolist() == [2, 3, 4, 5] and w.tolist() == [0.125, 0.125, 0.25, 0.5]
    # SWA from 2 every 2 with at most 3 iterates, read at 20: θ2, θ4, θ6
    j, w = S.SWA(start=2, length=3, every=2).weights(20)
    assert j.tolist() == [2, 4, 6] and np.allclose(w, 1 / 3)
    with pytest.raises(ValueError, match="not defined before step 4"):
        S.NPoint(3, 2).weights(3)


def test_bad_record_is_refused_with_the_kinds():
    with pytest.raises(ValueError, match="kind in"):
        S.averaging_from_dict({"kind": "Polyak"})


def test_compare_reads_the_recorded_spec_and_honours_the_swa_length():
    cfg = {"swa_start": 3, "averaging": {"specs": {"swa": S.SWA(start=10, length=5).to_dict()}}}
    swa = recorded_averages(cfg)["swa"]
    assert swa == S.SWA(start=10, length=5)                                # the record, not the flat swa_start
    assert predict.shifted(swa, 100) == S.SWA(start=110, length=5)         # burn-in shift moves the start only
    j, w = swa.weights(40)                                                 # what compare/pairs.py asks
    assert j.tolist() == [10, 11, 12, 13, 14]                              # five iterates, not 31


def test_a_config_without_the_record_is_refused_with_the_fix():
    """Flat keys (ema_start, swa_start, ...) are no source of an average: a config without averaging.specs is
    refused in one line that says what is missing and how to get it."""
    for cfg in ({"swa_start": 10, "ema_decays": [0.99]}, {"averaging": {"ema_start": 0}}):
        with pytest.raises(RunDirError, match=r"no averaging\.specs.*re-record the run with the current "
                                              r"empirical\.run") as e:
            recorded_averages(cfg)
        assert len(str(e.value).splitlines()) == 1


def test_the_stationary_swa_excess_honours_the_recorded_length():
    """compare.predict.stationary_excess of an SWA of 5 iterates is the variance of a 5-iterate mean (theory.stationary
    with SWA(length=5)), not that of the whole window's mean."""
    import numpy as np
    from types import SimpleNamespace
    from theory import stationary
    cal = SimpleNamespace(lr=0.05, momentum=0.9, h=np.array([2.0]), s=np.array([0.01]), window=(0, 1000))
    five = 0.5 * 2.0 * stationary.averaged_variance(0.05 * cal.h, S.SWA(start=0, length=5), cal.s, 0.9)[0]
    assert predict.stationary_excess(cal, S.SWA(start=10, length=5)) == pytest.approx(five, rel=1e-12)
    assert predict.stationary_excess(cal, S.SWA(start=10)) < 0.5 * five   # 991 iterates average far more noise away


def test_the_run_records_each_average_by_its_spec():
    torch = pytest.importorskip("torch")
    from empirical.averaging import WeightAverages

    avg = WeightAverages(torch.nn.Linear(2, 1), [S.EMA(0.9, start=3), S.SWA(start=5), S.TwoPoint(4)])
    specs = avg.config()["specs"]
    assert {n: S.averaging_from_dict(d) for n, d in specs.items()} == avg.specs()


def test_ema_weights_by_hand():
    # y_2 = θ_2; y_3 = .5y + .5θ_3; y_4 = ...; at t = 5: θ_2/8 + θ_3/8 + θ_4/4 + θ_5/2
    j, w = S.EMA(0.5, start=2).weights(5)
    assert j.tolist() == [2, 3, 4, 5] and w == pytest.approx([0.125, 0.125, 0.25, 0.5])
    # every 2 steps (decay per update 0.25): updates at 4 and 6; at t = 7 the average still holds y_6
    j, w = S.EMA(0.5, start=2, every=2).weights(7)
    assert j.tolist() == [2, 4, 6] and w == pytest.approx([0.0625, 0.1875, 0.75])
    with pytest.raises(ValueError, match="not defined"):
        S.EMA(0.5, start=9).weights(5)


def test_swa_and_points_weights_by_hand():
    j, w = S.SWA(start=3, every=2).weights(9)
    assert j.tolist() == [3, 5, 7, 9] and w == pytest.approx([0.25] * 4)
    j, w = S.NPoint(3, 4).weights(10)
    assert j.tolist() == [2, 6, 10] and w == pytest.approx([1 / 3] * 3)
    j, w = S.TwoPoint(5).weights(5)
    assert j.tolist() == [0, 5]
