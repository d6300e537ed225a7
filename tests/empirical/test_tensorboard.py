"""``--tensorboard``: every metrics.csv series as TensorBoard scalars in RUN_DIR/tensorboard/, read back with
TensorBoard's own reader and compared with metrics.csv; a resumed writer hides what the crashed one wrote after the
checkpoint; without the package the flag is refused (exit 2, one line, nothing written)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from empirical.recorder import Recorder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})   # 0: keep every event
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_with_tensorboard_writes_every_metrics_series(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "empirical.run", "smoke", "--steps", "12", "--eval-every", "6",
                        "--ema-decays", "0.9", "--swa-start", "3", "--two-point-gaps", "2", "--probe-every", "0",
                        "--align-every", "0", "--curv-every", "0", "--bank-every", "0", "--tensorboard", "--out",
                        str(out)], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = _csv(out / "metrics.csv")
    tb = _scalars(out / "tensorboard")
    # tags by hand from the column names: test_loss_<v> -> test_loss/<v>, lr -> train/lr, train_loss -> train/loss
    for column in rows[0]:
        if column == "step":
            continue
        prefix = next((p for p in ("test_loss", "test_acc", "train_loss", "train_acc")
                       if column.startswith(p + "_")), None)
        tag = {"lr": "train/lr", "train_loss": "train/loss"}.get(column) or f"{prefix}/{column[len(prefix) + 1:]}"
        want = {int(row["step"]): float(row[column]) for row in rows if row[column] != ""}
        assert want, column
        assert sorted(tb[tag]) == sorted(want), tag
        for step, value in want.items():                     # metrics.csv keeps 6 digits, TensorBoard float32
            assert tb[tag][step] == pytest.approx(value, rel=1e-5, abs=1e-7), (tag, step)
    assert tb["test_loss/ema_0.9"] and tb["train/lr"][12] == pytest.approx(0.05)


def test_a_resumed_recorder_replaces_the_steps_after_the_checkpoint(tmp_path):
    first = Recorder(tmp_path, tensorboard=True)
    for s in (0, 10, 20):
        first.log("eval", s, test_loss_raw=1.0 + s)
        if s == 10:
            saved = first.state_dict()
        first.append_metrics()
    first.close()
    second = Recorder(tmp_path, tensorboard=True)              # a new process resuming from the step-10 checkpoint
    second.load_state_dict(saved)
    second.log("eval", 20, test_loss_raw=-5.0)
    second.append_metrics()
    second.close()
    assert _scalars(tmp_path / "tensorboard")["test_loss/raw"] == {0: 1.0, 10: 11.0, 20: -5.0}


_NO_TENSORBOARD = """
import sys
sys.modules["tensorboard"] = None        # the package is not installed
from empirical import run
sys.exit(run.cli(sys.argv[1:]))
"""


def test_missing_package_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _NO_TENSORBOARD, "smoke", "--steps", "4", "--tensorboard", "--out",
                        str(out)], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "needs the tensorboard package" in r.stderr and "pip install" in r.stderr   # what to do about it
    assert not out.exists()
