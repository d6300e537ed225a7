"""empirical.run --prediction FILE: a branch records the SHA-256 of the prediction written for it before it ran, and
refuses a file written for another branch (common/prediction.py)."""
from __future__ import annotations

import json

import pytest

from common import prediction
from empirical import flags as F
from empirical import config as C
from empirical import run

# Parent: 12 smoke steps, SWA from 6, no periodic checkpoints, measurements off (cheap); it keeps step 6.
PARENT = ["smoke", "--steps", "12", "--ema-start", "3", "--swa-start", "6", "--checkpoint-every", "0",
          "--eval-every", "12", "--probe-every", "0", "--align-every", "0", "--curv-every", "0", "--bank-every", "0",
          "--two-point-gaps", "", "--sketch-dim", "0"]


def _prediction(path, schedule: str, step: int) -> str:
    doc = {"kind": prediction.KIND, "parent": "p", "label": schedule, "schedule": schedule, "branch_step": step,
           "compared_on": [step, 12], "steps": [step], "parent_raw_excess": [0.0], "branch_excess": [0.0],
           "gain_pred": 0.0, "gain_pred_se": 0.0}
    path.write_text(json.dumps(doc))
    return str(path)


def test_prediction_needs_a_branch():
    with pytest.raises(C.ConfigError, match="--prediction .*use it with --branch-from"):
        F.from_cli(["smoke", "--prediction", "p.json"])


@pytest.mark.slow
def test_branch_records_the_prediction_hash_and_refuses_another_branch_s(tmp_path, capsys):
    from empirical import checkpoint
    parent = tmp_path / "parent"
    assert run.main([*PARENT, "--out", str(parent)]) == parent
    ckpt = str(checkpoint.path_for(parent, 6))
    good = _prediction(tmp_path / "half.json", "half", 6)
    branch = tmp_path / "branch"
    assert run.main(["--out", str(branch), "--branch-from", ckpt, "--branch-schedule", "half",
                     "--prediction", good]) == branch
    cfg = json.loads((branch / "config.json").read_text())["config"]
    assert cfg["prediction_sha256"] == prediction.sha256_of(good)
    assert cfg["prediction"] == str((tmp_path / "half.json").resolve())
    # without --branch-schedule the branch runs the schedule its prediction was written for
    quarter = _prediction(tmp_path / "quarter.json", "scale:0.25", 6)
    assert run.main(["--out", str(tmp_path / "b3"), "--branch-from", ckpt, "--prediction", quarter]) == tmp_path / "b3"
    cfg = json.loads((tmp_path / "b3" / "config.json").read_text())["config"]
    assert cfg["branch_schedule"] == "scale:0.25" and cfg["prediction_sha256"] == prediction.sha256_of(quarter)
    capsys.readouterr()
    # a file written for another schedule (or another step): one line, exit 2, nothing written
    for other in (_prediction(tmp_path / "q.json", "scale:0.25", 6), _prediction(tmp_path / "r.json", "half", 3)):
        assert run.cli(["--out", str(tmp_path / "b2"), "--branch-from", ckpt, "--branch-schedule", "half",
                        "--prediction", other]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pass the file written for this branch" in err, err
        assert not (tmp_path / "b2").exists()
