"""Predicted averaged curves and branches vs the synthetic truth (generated independently, compare/synthetic.py)."""

import numpy as np
import pytest

from compare import analysis, load, predict
from compare.calibrate import calibrate
from theory.rundir import load_run

GAIN_RTOL = 0.15   # averaging gain: calibration error (~5% in h, ~20% in s) partly cancels in the gain


@pytest.fixture(scope="module")
def an(synth_runs, synth_branches):
    setup = load.group_runs([load_run(p) for p in [*synth_runs, *synth_branches]])[0]
    return analysis.analyse(setup)


def test_grouping_seeds_and_branches(an):
    assert len(an.setup.base) == 3 and len(an.setup.branches) == 2


def test_prediction_with_true_parameters_matches_generator(synth_runs, synth_cfg):
    """With the generator's own (h, s), theory-based predictions equal the independent synthetic formulas."""
    from compare import synthetic
    CFG = synth_cfg
    setup = load.group_runs([load_run(p) for p in synth_runs])[0]
    cal = calibrate(setup)
    steps = setup.base[0].trajectory["eval/step"]
    truth = synthetic.expected_excess(CFG, steps)
    for v in setup.variants():
        p = predict.variant_excess(cal, v, setup.config, steps, h=np.array(CFG.h), s=np.array(CFG.s))
        ok = np.isfinite(p)
        assert ok.any()
        np.testing.assert_allclose(p[ok], truth[v.name][ok], rtol=2e-3, err_msg=v.name)


def test_gains_predicted(an):
    for name, m in an.metrics["variants"].items():
        if name != "raw" and name != "two_point_k10":
            assert m["gain_rel_err"] < GAIN_RTOL, name


def test_branches_matched_and_captured(an):
    by = {b["path"].split("/")[-1]: b for b in an.branches}
    assert by["ema"]["matches"] == "ema_0.99"
    assert by["half"]["matches"].startswith("two_point_k1000") or by["half"]["matches"].startswith("two_point")
    assert by["ema"]["gain_capture"] == pytest.approx(1.0, abs=0.15)
    assert by["half"]["rel_err_pred_window_mean_abs"] < 0.2


def test_equivalent_lr_of_raw_is_lr(an):
    assert predict.equivalent_lr(an.cal, an.cal.raw_excess) == pytest.approx(an.cal.lr, rel=1e-6)
