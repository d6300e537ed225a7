"""Run-directory format: round trips, validation, atomic writes that leave the old file on failure."""

import json
import os

import numpy as np
import pytest

from common import rundir
from common.rundir import RunDirError, Trajectory


def _traj():
    return Trajectory({"eval/step": np.array([0, 10, 20]), "eval/loss_raw": np.array([2.0, 1.0, np.nan]),
                       "bank/step": np.array([0, 5]), "bank/train_loss": np.ones((2, 4)),
                       "static/bank_used_at": np.array([3, -1, 7, 9])})


def test_trajectory_round_trip_keeps_values_shapes_and_nan(tmp_path):
    t = _traj()
    t.save(tmp_path / "trajectory.npz")
    u = Trajectory.load(tmp_path / "trajectory.npz")
    assert set(u.series) == set(t.series)
    for k in t.series:
        np.testing.assert_array_equal(u[k], t[k])  # NaN == NaN for array_equal of float arrays with equal_nan default
    assert u.groups() == ["bank", "eval", "static"]
    assert set(u.group("eval")) == {"step", "loss_raw"}


@pytest.mark.parametrize("series, fragment", [
    ({"eval/loss": np.ones(3)}, "no 'eval/step'"),
    ({"eval/step": np.arange(3), "eval/loss": np.ones(2)}, "rows"),
    ({"eval/step": np.array([0.0, 1.0])}, "integer"),
    ({"eval/step": np.array([2, 1])}, "non-decreasing"),
    ({"loss": np.ones(2)}, "GROUP/NAME"),
])
def test_trajectory_rejects_malformed_series(series, fragment):
    with pytest.raises(RunDirError, match=fragment):
        Trajectory(series)


def test_load_run_round_trip_and_strict_json(tmp_path):
    run = rundir.new_run_dir("theory", "x", out=tmp_path / "r")
    rundir.write_config(run, "theory", {"lr": 0.1, "bad": float("nan")}, command=["a"])
    rundir.write_env(run)
    _traj().save(run / "trajectory.npz")
    rundir.write_summary(run, "diverged", 20, last_finite={"loss": float("inf")})
    loaded = rundir.load_run(run)
    assert loaded.source == "theory"
    assert loaded.config["config"]["bad"] is None          # NaN written as null: strict JSON
    assert loaded.summary["last_finite"]["loss"] is None
    json.loads((run / "summary.json").read_text())         # parses with the strict stdlib parser


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(RunDirError, match="not a directory"):
        rundir.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="missing"):
        rundir.load_run(tmp_path / "empty")


def test_out_refuses_non_empty_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("keep me")
    with pytest.raises(RunDirError, match="not an empty directory"):
        rundir.new_run_dir("theory", "x", out=tmp_path / "d")
    assert (tmp_path / "d" / "f").read_text() == "keep me"


def test_failed_atomic_write_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    rundir.atomic_write_json(path, {"v": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        rundir.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_package_versions_agree_with_importlib_metadata():
    from importlib import metadata
    expected = {}
    for name in rundir.ALL_PACKAGES + ("no-such-distribution-xyz",):
        try:
            expected[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    assert rundir.package_versions(rundir.ALL_PACKAGES + ("no-such-distribution-xyz",)) == expected
    assert "numpy" in expected                             # the comparison is not vacuous


def test_encoded_json_is_spliced_verbatim_and_parses():
    inner = rundir.encoded({"v": np.array([1.0, np.inf, 3.0]), "s": "x"})
    text = rundir.to_json_text({"a": inner, "b": [1, inner], "c": "encoded-json-0:0"})
    assert json.loads(text) == {"a": {"s": "x", "v": [1.0, None, 3.0]}, "b": [1, {"s": "x", "v": [1.0, None, 3.0]}],
                                "c": "encoded-json-0:0"}
    with pytest.raises(TypeError):
        json.dumps(rundir._plain(inner, [0]))
