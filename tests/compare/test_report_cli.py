"""compare.report end to end on synthetic runs, and its bad-input table (exit 2, one line, nothing written)."""

import json

import pytest

from compare import report


@pytest.mark.slow
def test_report_end_to_end(synth_runs, synth_branches, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report.main([*map(str, synth_runs), *map(str, synth_branches), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["setups"][0]["n_seeds"] == 3
    ids = {c["id"]: c["verdict"] for c in m["setups"][0]["claims"]}
    notes = {c["id"]: c["note"] for c in m["setups"][0]["claims"]}
    assert ids["quadratic"] == "reproduced"
    # these branches recorded no prediction made before they ran: the equivalence claims are not judged, and say how
    assert ids["ema_branch"] == "not testable here" and "compare.branch_prediction" in notes["ema_branch"]
    assert m["setups"][0]["per_branch"] == []
    assert ids["converge"] == "not testable here"
    md = (out / "report.md").read_text()
    # compare draws nothing (it never imports figures): the report names the command that draws the figures
    assert f"python -m figures.build {synth_runs[0]}" in md
    assert not list(out.glob("*.png"))
    # stdout: a summary a user reads without opening report.md (structure, not numbers), the report path last
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out / "report.md")
    assert lines[0].startswith("setup 1: 3 seed run(s), ") and "calibration (" in lines[1]
    cells = [ln for ln in lines if ln.rstrip().endswith((" yes", " no"))]
    assert len(cells) == sum(len(v.get("per_seed", [])) for v in m["setups"][0]["variants"].values())
    verdicts = [ln for ln in lines if ln.startswith("  [")]
    assert len(verdicts) == len(m["setups"][0]["claims"])
    assert all(ln.split("]")[0][3:] in ("reproduced", "not reproduced", "not testable here") for ln in verdicts)
    assert sum(ln.startswith("  branch ") for ln in lines) == len(synth_branches)


def _bad_run(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    for f in ("config.json", "env.json", "summary.json"):
        (d / f).write_text("{not json")
    (d / "trajectory.npz").write_bytes(b"nope")
    return d


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing", "not a directory"),
    (lambda p: p, "not a run directory"),
    (_bad_run, "unreadable JSON"),
])
def test_bad_input(tmp_path, capsys, make, fragment):
    out = tmp_path / "out"
    assert report.main([str(make(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_run_without_its_averaging_record_is_bad_input(synth_runs, tmp_path, capsys):
    """compare reads each average from config.json's averaging.specs alone: without it the report refuses the run in
    one line that names the file and how to re-record it."""
    import shutil
    run = shutil.copytree(synth_runs[0], tmp_path / "old")
    doc = json.loads((run / "config.json").read_text())
    del doc["config"]["averaging"]               # the flat keys (ema_decays, swa_start, ...) stay
    (run / "config.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert report.main([str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{run}/config.json has no averaging.specs" in err and "re-record the run" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_branch_without_parent_is_bad_input(synth_branches, tmp_path, capsys):
    assert report.main([str(synth_branches[0]), "--out", str(tmp_path / "o")]) == 2
    assert "parent" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("module, outputs", [("compare.report", ("report.md", "metrics.json")),
                                             ("figures.build", ("ema_equivalence.png",))])
def test_closed_stdout_still_writes_everything(synth_runs, tmp_path, module, outputs):
    """`python -m compare.report RUN | head -0`: the reader is gone before the first line; exit 0, files written."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", module, *map(str, synth_runs), "--out", str(out)], cwd=tmp_path,
                         env={"PYTHONPATH": str(repo), "PATH": "", "MPLBACKEND": "Agg"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert all((out / name).is_file() for name in outputs)
