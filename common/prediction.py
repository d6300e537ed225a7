"""A branch prediction file: what the model said a branch run would do, written before the branch runs.

``python -m compare.branch_prediction`` writes one JSON file per (parent run, branch); ``python -m empirical.run
--branch-from CKPT --branch-schedule TEXT --prediction FILE`` checks that the file is about that branch (same schedule
text, same branch step) and records the file's SHA-256 in its config.json (``prediction`` = the path as given,
``prediction_sha256``); ``compare.report`` reads the file back only if its hash still matches, so a prediction cannot
be edited after the run it predicts. This module is that contract: the file's kind tag, its hash and the checks.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from common.rundir import RunDirError, read_json

KIND = "branch_prediction"
# keys every prediction file holds (compare/branch_prediction.py writes more)
REQUIRED = ("kind", "parent", "label", "schedule", "branch_step", "compared_on", "steps", "parent_raw_excess",
            "branch_excess", "gain_pred", "gain_pred_se")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_prediction(path: str | os.PathLike) -> dict:
    """The prediction file at ``path``; RunDirError (one line) if it is missing, not JSON or not a prediction."""
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise RunDirError(f"{path}: not a branch prediction file (no \"kind\": \"{KIND}\"); write one with "
                          f"python -m compare.branch_prediction")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise RunDirError(f"{path}: branch prediction file lacks {', '.join(missing)}; write it again with "
                          f"python -m compare.branch_prediction")
    return doc


def check_matches(doc: dict, path: str | os.PathLike, schedule: str, branch_step: int) -> None:
    """RunDirError unless the prediction ``doc`` (read from ``path``) is about a branch with this schedule text and
    branch step: a run must not record a prediction made for another branch."""
    if str(doc["schedule"]) != str(schedule) or int(doc["branch_step"]) != int(branch_step):
        raise RunDirError(f"--prediction {path}: the file predicts --branch-schedule {doc['schedule']} from step "
                          f"{doc['branch_step']}, this run is {schedule} from step {branch_step}; pass the file "
                          f"written for this branch")
