"""One home for the variant-name format and the EMA decay check (theory/spec.py), used by empirical/ and compare/."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import spec, stationary
from common.rundir import RunDirError
from compare.load import recorded_averages

SPECS = [spec.NoAverage(), spec.EMA(0.999), spec.EMA(0.0), spec.EMA(1e-05), spec.SWA(), spec.TwoPoint(0),
         spec.TwoPoint(50), spec.NPoint(4, 100), spec.NPoint(1, 0)]


@pytest.mark.parametrize("avg", SPECS, ids=repr)
def test_name_round_trips_for_every_spec_type(avg):
    assert spec.parse_variant_name(spec.variant_name(avg)) == avg


def test_names_as_written_in_runs():
    assert [spec.variant_name(a) for a in (spec.NoAverage(), spec.EMA(0.999, start=200), spec.SWA(start=600),
                                           spec.TwoPoint(50), spec.NPoint(4, 100))] == [
        "raw", "ema_0.999", "swa", "two_point_k50", "points_n4_g100"]
    assert spec.variant_name(spec.EMA(np.float64(0.99))) == "ema_0.99"     # not "ema_np.float64(0.99)"


@given(st.floats(0.0, 1.0, exclude_max=True))
@settings(max_examples=200, deadline=None)
def test_every_decay_round_trips_exactly(g):
    assert spec.parse_variant_name(spec.variant_name(spec.EMA(g))).decay == g


@pytest.mark.parametrize("name", ["raw_running_bn", "ema_", "ema_1.5", "two_point_kx", "points_n3", "SWA", ""])
def test_other_names_are_refused(name):
    with pytest.raises(ValueError, match="variant"):
        spec.parse_variant_name(name)


def test_compare_reads_each_average_under_its_name():
    recorded = [spec.NPoint(4, 100), spec.EMA(0.999, start=200)]
    cfg = {"averaging": {"specs": {spec.variant_name(a): a.to_dict() for a in recorded}}}
    assert recorded_averages(cfg) == {"raw": spec.NoAverage(), "points_n4_g100": spec.NPoint(4, 100),
                                      "ema_0.999": spec.EMA(0.999, start=200)}
    with pytest.raises(RunDirError, match="records the average named 'ema_0.999'"):
        recorded_averages({"averaging": {"specs": {"ema_0.99": spec.EMA(0.999).to_dict()}}})


@pytest.mark.parametrize("bad", [1.0, -0.1, math.nan, math.inf, "0.9", True])
def test_one_decay_check_everywhere(bad):
    msg = r"EMA decay must be in \[0, 1\) per optimiser step"
    for call in (lambda: spec.check_ema_decay(bad), lambda: spec.EMA(bad),
                 lambda: stationary.ema_variance(0.1, bad)):
        with pytest.raises(ValueError, match=msg):
            call()
