"""End to end: ``empirical.run`` on the synthetic smoke preset (seconds) and the embedded digits default (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from empirical import run
from common import rundir
from theory import spec

# 40 steps, constant LR then a cosine from step 30; every average and measurement is live before the end.
ARGS = ["smoke", "--steps", "40", "--eval-every", "10", "--schedule", "cosine", "--decay-start", "30", "--lr", "0.05",
        "--ema-decays", "0.9,0.98", "--swa-start", "20", "--two-point-gaps", "5,10", "--bank-every", "5",
        "--bank-size", "3", "--probe-every", "10", "--align-every", "10", "--curv-every", "20", "--curv-iters", "3"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    assert run.main([*ARGS, "--out", str(out)]) == out
    return rundir.load_run(out)


def test_run_directory_loads_with_expected_series(smoke_run):
    r, t = smoke_run, smoke_run.trajectory
    assert r.summary["status"] == "ok" and r.summary["steps"] == 40 and r.source == "empirical"
    variants = ["raw", "ema_0.9", "ema_0.98", "swa", "two_point_k5", "two_point_k10"]
    for v in variants:
        for m in ("test_loss", "test_acc", "train_loss", "train_acc"):
            assert f"eval/{m}_{v}" in t, f"eval/{m}_{v}"
        assert v in r.summary["eval"]
        if v != "raw":
            assert f"dist/{v}" in t
    assert t["eval/step"].tolist() == [0, 10, 20, 30, 40]
    assert np.all(np.isfinite(t["eval/test_acc_raw"]))
    assert np.isnan(t["eval/test_acc_swa"][0]) and np.isfinite(t["eval/test_acc_swa"][-1])  # defined from step 20
    assert t["train/step"].tolist() == list(range(40))
    assert t["bank/train_loss"].shape == (8, 3) and t["bank/heldout_loss"].shape == (8, 3)
    assert t["static/bank_used_at"].shape == (3,) and np.all(t["static/bank_used_at"] % 5 == 0)
    for k in ("eta", "loss_train", "loss_heldout", "loss0_train", "loss0_heldout", "grad_sq", "gHg", "fit_coef",
              "fit_r2"):
        assert f"probe/{k}" in t, k
    assert t["probe/step"].tolist() == [0, 10, 20, 30] and t["probe/eta"].shape == (4, 13)
    assert t["curv/step"].tolist() == [0, 20] and t["align/step"].tolist() == [0, 10, 20, 30]
    for variant, s in r.summary["eval"].items():
        assert s["acc"] == t[f"eval/test_acc_{variant}"][-1]


def test_lr_is_the_theory_schedule(smoke_run):
    # the LR actually used, read back from the run, equals theory.spec's cosine built here from the same numbers
    t = smoke_run.trajectory
    want = spec.Cosine(0.05, total=40, start=30, final_lr=0.0).lr_at(t["train/step"])
    assert np.array_equal(t["train/lr"], want)


def test_config_and_env_record_the_semantics(smoke_run):
    c, e = smoke_run.config["config"], smoke_run.env
    for key in ("lr", "momentum", "batch_size", "weight_decay", "schedule", "ema_decays", "swa_start",
                "two_point_gaps", "bn_mode", "seed", "branch_from", "averaging", "eval_every", "bank_every"):
        assert key in c, key
    assert (c["bank_fraction"], c["bank_images"]) == (0.25, 8)      # smoke: B = 32, ⌈0.25·32⌉ = 8 images
    assert c["ema_decays"] == [0.9, 0.98] and e["world_size"] == 1 and "torch" in e and e["device_name"] == "cpu"
    rows = (smoke_run.path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and rows[0].startswith("step,")  # header + one row per evaluation


def test_same_seed_gives_identical_arrays(smoke_run, tmp_path):
    again = rundir.load_run(run.main([*ARGS, "--out", str(tmp_path / "again")])).trajectory
    first = smoke_run.trajectory
    assert sorted(first.series) == sorted(again.series)
    for k in first.series:
        assert np.array_equal(first[k], again[k], equal_nan=True), k


def test_divergence_is_recorded_and_exits_3(tmp_path, capsys):
    out = tmp_path / "div"
    assert run.cli(["smoke", "--lr", "1e4", "--steps", "20", "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(out) and "diverged" in captured.err
    r = rundir.load_run(out)
    assert r.summary["status"] == "diverged" and "diverged_at" in r.summary and "last_finite" in r.summary
    assert r.summary["diverged_at"] < 20
    json.loads((out / "summary.json").read_text())  # strict JSON even with NaN losses inside


@pytest.mark.slow
def test_digits_end_to_end(tmp_path, capsys):
    out = tmp_path / "digits"
    r = rundir.load_run(run.main(["digits", "--out", str(out)]))
    assert r.summary["status"] == "ok"
    ev = r.summary["eval"]
    line = "  ".join(f"{k}={v['acc']:.4f}" for k, v in ev.items())
    print(f"\ndigits test accuracy: {line}")  # shown with pytest -s
    assert ev["raw"]["acc"] > 0.9  # resnet8 on 8x8 digits reaches ~97 %; 10 % is chance
    assert all(v["acc"] > 0.8 for v in ev.values())
