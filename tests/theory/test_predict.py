"""`python -m theory.predict`: --json on the test values of theory.md §3.3-3.5, the human path, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from common import rundir
from theory import predict

# theory.md §3.3 / §3.5 anchor tables (σ² = 1, h = 1 so LR = α); printed to 7 significant digits.
ANCHOR_RTOL = 5e-7


def run_json(capsys, tmp_path, *args):
    out = tmp_path / "run"
    predict.main([*args, "--json", "--out", str(out)])
    text = capsys.readouterr().out
    assert text.count("\n") == 1, "exactly one JSON object on one line"
    return json.loads(text), out


@pytest.mark.parametrize("alpha, gamma, var_ema, alpha_eq, harmonic", [
    (0.05, 0.995, 2.283252e-3, 4.556101e-3, 4.545455e-3),
    (0.1, 0.999, 4.955532e-4, 9.906155e-4, 9.900990e-4),
    (0.01, 0.99, 2.512626e-3, 5.012658e-3, 5.000000e-3),
    (0.5, 0.9, 4.625199e-2, 8.841463e-2, 8.333333e-2),
])
def test_json_ema_anchors(capsys, tmp_path, alpha, gamma, var_ema, alpha_eq, harmonic):
    res, out = run_json(capsys, tmp_path, "--avg", "ema", "--lr", str(alpha), "--decay", str(gamma), "--steps", "2000")
    assert res["iterate_variance"] == pytest.approx(alpha / (2 - alpha), rel=1e-12)  # v∞ = ασ²/(2−α), by hand
    assert res["averaged_variance"] == pytest.approx(var_ema, rel=ANCHOR_RTOL)
    assert res["equivalent_lr"] == pytest.approx(alpha_eq, rel=ANCHOR_RTOL)
    assert res["equivalent_lr_approx"] == pytest.approx(harmonic, rel=ANCHOR_RTOL)
    assert res["run_dir"] == str(out)
    assert rundir.load_run(out).summary["prediction"]["equivalent_lr"] == pytest.approx(alpha_eq, rel=ANCHOR_RTOL)


@pytest.mark.parametrize("alpha, k, var_z, alpha_eq", [
    (0.05, 200, 1.282096e-2, 2.531733e-2), (0.05, 20, 1.741649e-2, 3.423669e-2), (0.1, 10, 3.549154e-2, 6.855013e-2)])
def test_json_two_point_anchors(capsys, tmp_path, alpha, k, var_z, alpha_eq):
    res, _ = run_json(capsys, tmp_path, "--avg", "two-point", "--lr", str(alpha), "--gap", str(k), "--steps", "1000")
    assert res["averaged_variance"] == pytest.approx(var_z, rel=ANCHOR_RTOL)
    assert res["equivalent_lr"] == pytest.approx(alpha_eq, rel=ANCHOR_RTOL)


@pytest.mark.parametrize("n, var_n, alpha_eq", [(50, 1.280490e-2, 2.528602e-2), (400, 2.378205e-3, 4.745125e-3)])
def test_json_swa_anchors(capsys, tmp_path, n, var_n, alpha_eq):
    res, _ = run_json(capsys, tmp_path, "--avg", "swa", "--lr", "0.05", "--window", str(n), "--start", "500",
                      "--steps", "1000")
    assert res["averaged_variance"] == pytest.approx(var_n, rel=ANCHOR_RTOL)
    assert res["equivalent_lr"] == pytest.approx(alpha_eq, rel=ANCHOR_RTOL)


def test_json_spectrum_gives_per_direction_lists_and_total_losses(capsys, tmp_path):
    res, _ = run_json(capsys, tmp_path, "--avg", "ema", "--spectrum", "logspace:1e-2:1:5", "--lr", "0.1")
    h = np.logspace(-2, 0, 5)
    assert len(res["equivalent_lr"]) == 5
    np.testing.assert_allclose(res["iterate_variance"], 0.1 * h / (2 - 0.1 * h), rtol=1e-12)
    assert set(res["excess_loss"]) >= {"raw", "averaged", "equivalent", "equivalent_scalar"}
    assert res["excess_loss"]["averaged"] < res["excess_loss"]["raw"]


def test_unstable_lr_says_diverges_without_inf_or_nan(capsys, tmp_path):
    res, out = run_json(capsys, tmp_path, "--lr", "2.5", "--momentum", "0.1")  # α = 2.5 ≥ 2(1+μ) = 2.2
    assert res["status"] == "diverges" and res["diverges"] is True
    assert rundir.load_run(out).summary["status"] == "diverged"


def test_human_output_table_figure_and_run_dir_last(tmp_path):
    out = tmp_path / "human"
    r = subprocess.run([sys.executable, "-m", "theory.predict", "--avg", "swa", "--steps", "1000", "--out", str(out)],
                       capture_output=True, text=True, check=True)
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == str(out)
    assert any("equivalent schedule" in l and "hyperbolic" in l for l in lines)
    assert (out / "prediction.png").stat().st_size > 1000


def test_inverse_reachable_from_cli(capsys, tmp_path):
    res, out = run_json(capsys, tmp_path, "--schedule", "linear:start=1000", "--steps", "2000", "--inverse")
    assert res["negative_weights"] is False
    assert res["sum_weights"] == pytest.approx(1.0, abs=1e-9)
    assert res["kernel_error"] < 1e-12
    w = rundir.load_run(out).trajectory["inverse/weight"]
    assert w.size == 2001 and np.all(w >= -1e-15)


BAD = [
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"), (["--decay", "1.0"], "decay"),
    (["--avg", "two-point", "--gap", "5000", "--steps", "100"], "longer than the run"),
    (["--avg", "bogus"], "invalid choice"), (["--bogus", "1"], "unrecognized"),
    (["--spectrum", "logspace:1:x:3"], "--spectrum"), (["--spectrum", "nofile.npy"], "--spectrum"),
    (["--schedule", "wiggly"], "unknown schedule"), (["--schedule", "cosine:total"], "key=value"),
    (["--momentum", "1.5"], "momentum"), (["--steps", "0"], "--steps"),
]


@pytest.mark.parametrize("args, fragment", BAD)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-m", "theory.predict", *args, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


@given(st.lists(st.sampled_from(["--lr", "--decay", "--gap", "--spectrum", "--schedule", "--steps", "--avg", "-1",
                                 "0", "nan", "1e9", "logspace:0:1:2", "cosine:start=-3", "ema", "x", "--json"]),
                max_size=6))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_argv_gives_result_or_clean_error(tmp_path_factory, argv):
    out = tmp_path_factory.mktemp("fz") / "r"
    try:
        code = predict.cli([*argv, "--out", str(out), "--steps", "50", "--json"])
    except SystemExit as e:  # argparse usage errors exit 2 by themselves
        code = e.code
    assert code in (0, 2)
