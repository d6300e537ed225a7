"""Predicted averaged curves and branches vs the synthetic truth (generated independently, tests/synthetic_runs.py)."""

import numpy as np
import pytest

from compare import analysis, load, predict
from compare.calibrate import calibrate
from common.rundir import load_run

GAIN_RTOL = 0.15   # averaging gain: calibration error (~5% in h, ~20% in s) partly cancels in the gain


@pytest.fixture(scope="module")
def an(synth_runs, synth_branches):
    setup = load.group_runs([load_run(p) for p in [*synth_runs, *synth_branches]])[0]
    return analysis.analyse(setup)


def test_grouping_seeds_and_branches(an):
    assert len(an.setup.base) == 3 and len(an.setup.branches) == 2


def test_prediction_with_true_parameters_matches_generator(synth_runs, synth_cfg):
    """With the generator's own (h, s), theory-based predictions equal the independent synthetic formulas."""
    import synthetic_runs
    CFG = synth_cfg
    setup = load.group_runs([load_run(p) for p in synth_runs])[0]
    cal = calibrate(setup)
    steps = setup.base[0].trajectory["eval/step"]
    truth = synthetic_runs.expected_excess(CFG, steps)
    for name, avg in setup.averages().items():
        p = predict.variant_excess(cal, avg, steps, h=np.array(CFG.h), s=np.array(CFG.s))
        ok = np.isfinite(p)
        assert ok.any()
        np.testing.assert_allclose(p[ok], truth[name][ok], rtol=2e-3, err_msg=name)


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


def test_branches_match_by_declared_schedule_even_with_a_wrong_lr(synth_runs, synth_cfg, tmp_path):
    """A branch that declares `ema:0.99:H` / `half` is compared with ema_0.99 / the largest two-point gap even when
    its LR is 5x the parent's (far from any calibrated equivalent LR: a poor calibration must not re-pair
    branches); the same branch without a declared schedule falls back to LR matching and matches nothing."""
    import synthetic_runs
    CFG, lr = synth_cfg, synth_cfg.lr
    off = [synthetic_runs.write_run(tmp_path / n, CFG, seed=0, branch={"t0": 2000, "lr_fn": lambda t: lr * 5, **kw})
           for n, kw in (("ema_decl", {"spec": "ema:0.99:1"}), ("half_decl", {"spec": "half"}), ("plain", {}))]
    a = analysis.analyse(load.group_runs([load_run(p) for p in [*synth_runs, *off]])[0])
    by = {b["path"].split("/")[-1]: b for b in a.branches}
    assert by["ema_decl"]["matches"] == "ema_0.99" and by["ema_decl"]["matched_by"] == "branch schedule"
    assert by["half_decl"]["matches"] == "two_point_k1000"
    assert by["plain"]["matches"] is None and by["plain"]["matched_by"] == "equivalent LR"


def test_equivalent_lr_of_raw_is_lr(an):
    assert predict.equivalent_lr(an.cal, an.cal.raw_excess) == pytest.approx(an.cal.lr, rel=1e-6)


def test_a_branch_stopped_early_joins_its_setup(tmp_path, synth_runs, synth_branches):
    # scripts/reproduce.py stops its branches where the parent's constant phase ends (empirical.run --max-steps):
    # how far one call was told to go is run control, not part of the setup
    import json
    import shutil
    b = tmp_path / "branch"
    shutil.copytree(synth_branches[0], b)
    doc = json.loads((b / "config.json").read_text())
    doc["config"]["max_steps"] = 2500
    (b / "config.json").write_text(json.dumps(doc))
    setups = load.group_runs([load_run(p) for p in [*synth_runs, b]])
    assert len(setups) == 1 and [r.path for r in setups[0].branches] == [b]


def test_every_run_control_flag_is_a_per_run_key():
    from empirical import config
    assert set(config.RUN_CONTROL) <= load.PER_RUN_KEYS
