"""empirical.recorder.Recorder from a user's own loop: series declared nowhere appear in metrics.csv,
metrics.csv carries the LR and the mean training loss since the previous row, write_start needs no env_extra, and
summary.json's eval has no nulls for a variant that has a loss. No torch, no training: values are set by hand."""
from __future__ import annotations

import csv
import json
import math

import pytest

from common import rundir
from empirical.recorder import Recorder


def _csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def test_a_series_logged_later_appears_in_metrics_csv(tmp_path):
    rec = Recorder(tmp_path, ["test_loss_raw"])             # declares raw only
    rec.log("eval", 0, test_loss_raw=2.0)
    rec.append_metrics()
    header, rows = _csv(tmp_path / "metrics.csv")
    assert header == ["step", "lr", "train_loss", "test_loss_raw"] and len(rows) == 1
    for t in range(10):
        rec.log("train", t, loss=float(t), lr=0.1 if t < 5 else 0.05)
    rec.log("eval", 10, test_loss_raw=1.5, **{"test_loss_ema_0.999": 1.25})  # a new series, never declared
    rec.append_metrics()
    header, rows = _csv(tmp_path / "metrics.csv")
    assert header == ["step", "lr", "train_loss", "test_loss_raw", "test_loss_ema_0.999"]
    assert [r["step"] for r in rows] == ["0", "10"]                  # the older row survives the wider header
    assert rows[0]["test_loss_ema_0.999"] == "" and float(rows[1]["test_loss_ema_0.999"]) == 1.25
    # step 10: the LR of the last update before it (update 9: 0.05) and the mean loss of updates 0..9 (4.5)
    assert float(rows[1]["lr"]) == 0.05 and float(rows[1]["train_loss"]) == pytest.approx(4.5)
    assert rows[0]["lr"] == rows[0]["train_loss"] == ""                 # no update before step 0
    for t in range(10, 20):
        rec.log("train", t, loss=100.0 + t, lr=0.01)
    rec.log("eval", 20, test_loss_raw=1.0, **{"test_loss_ema_0.999": 0.75})
    rec.append_metrics()                                                # appended: the header is unchanged
    header, rows = _csv(tmp_path / "metrics.csv")
    assert len(rows) == 3 and float(rows[2]["train_loss"]) == pytest.approx(114.5)   # mean of 110..119
    assert float(rows[2]["lr"]) == 0.01
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_rewrites_metrics_from_the_checkpointed_buffers(tmp_path):
    rec = Recorder(tmp_path)
    for s in (0, 5, 10):
        rec.log("eval", s, test_loss_raw=1.0 / (s + 1))
        rec.append_metrics()
    saved = rec.state_dict()
    rec.log("eval", 15, test_loss_raw=0.01, test_acc_raw=0.9)     # written after the "checkpoint", then a crash
    rec.append_metrics()
    assert len(_csv(tmp_path / "metrics.csv")[1]) == 4
    again = Recorder(tmp_path)
    again.load_state_dict(saved)
    again.log("eval", 15, test_loss_raw=0.02)
    again.append_metrics()
    header, rows = _csv(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "5", "10", "15"] and float(rows[3]["test_loss_raw"]) == 0.02


def test_write_start_without_env_extra_and_final_eval_without_nulls(tmp_path):
    rec = Recorder(tmp_path)
    rec.write_start({"lr": 0.1}, ["python", "train.py"])       # no env_extra
    rec.log("eval", 100, test_loss_raw=0.5, test_acc_raw=0.8, **{"test_loss_ema_0.999": 0.4})  # EMA: loss only
    rec.write("ok", 100, eval=rec.final_eval())
    run = rundir.load_run(tmp_path)
    ev = json.loads((tmp_path / "summary.json").read_text())["eval"]
    assert ev == {"raw": {"loss": 0.5, "acc": 0.8}, "ema_0.999": {"loss": 0.4}}
    assert run.config["config"] == {"lr": 0.1} and "python" in run.env
    # a variant asked for but never evaluated is left out; raw is always there
    assert rec.final_eval(["raw", "swa"]) == {"raw": {"loss": 0.5, "acc": 0.8}}


def test_nan_values_are_empty_cells_and_not_in_the_summary(tmp_path):
    rec = Recorder(tmp_path)
    rec.log("eval", 0, test_loss_raw=math.nan, test_acc_raw=0.1)
    rec.append_metrics()
    assert _csv(tmp_path / "metrics.csv")[1][0]["test_loss_raw"] == ""
    assert rec.final_eval() == {"raw": {"acc": 0.1}}
