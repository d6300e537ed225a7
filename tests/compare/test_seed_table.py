"""scripts/seed_table.py on synthetic run directories: one row per variant, values from the files, clean errors."""
import importlib.util
from pathlib import Path

import numpy as np

from common.rundir import load_run

import synthetic_runs

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("seed_table", ROOT / "scripts" / "seed_table.py")
seed_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_table)


def test_table_rows_and_raw_final_loss(tmp_path, capsys):
    cfg = synthetic_runs.SynthSetup(steps=600, swa_start=300, d=(50,), two_point_gaps=(10,), n_point_gap=50)
    for s in (0, 1):
        synthetic_runs.write_run(tmp_path / f"s{s}", cfg, seed=s)
    assert seed_table.main([str(tmp_path), "--window", "300", "600"]) == 0
    out = capsys.readouterr().out
    runs = [load_run(tmp_path / f"s{s}") for s in (0, 1)]
    finals = [r.summary["eval"]["raw"]["loss"] for r in runs]
    raw_row = next(line for line in out.splitlines() if line.startswith("| raw |"))
    assert f"{np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f}" in raw_row
    variants = [k for k in runs[0].summary["eval"]]
    assert sum(line.startswith("| ") and not line.startswith("| variant") for line in out.splitlines()) == len(variants)


def test_no_runs_is_a_clean_error(tmp_path, capsys):
    assert seed_table.main([str(tmp_path)]) == 2
    assert "no base run directory" in capsys.readouterr().err
