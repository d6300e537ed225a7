"""What ``python -m empirical.run`` prints, by the structure of its output, not its numbers: a short
human header instead of a one-line JSON config, progress rows with every variant's test loss (and, piped, an ETA
and an early row), a final table of raw vs each average with the best marked, the next command, and the run
directory as the last line. Plus the progress object alone: the terminal bar starts after the step-0 evaluation."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import rundir
from empirical import console

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# 40 steps, evaluations at 0, 20, 40; two EMAs, SWA from 10, two two-point gaps (one shared column); the costly
# measurements off (they print nothing)
ARGS = ["smoke", "--steps", "40", "--eval-every", "20", "--ema-decays", "0.9,0.98", "--swa-start", "10",
        "--two-point-gaps", "5,10", "--probe-every", "0", "--align-every", "0", "--curv-every", "0"]
LOSS_COLUMNS = ["raw", "raw_running_bn", "ema_0.9", "ema_0.98", "swa", "best_2pt"]
CLOCK = r"(\d+:)?\d+:\d\d"


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    out = tmp_path_factory.mktemp("console") / "run"
    r = subprocess.run([sys.executable, "-m", "empirical.run", *ARGS, "--out", str(out)], cwd=REPO, env=ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)   # piped: not a terminal
    assert r.returncode == 0, r.stderr
    # lines of empirical.run's own notices ("empirical.run: ...", e.g. how --steps scaled the preset) are not ours
    return out, [line for line in r.stdout.splitlines() if not line.startswith("empirical.run: ")]


def _cells(line: str) -> tuple[list[str], list[str], list[str]]:
    left, losses, right = line.split(" | ")
    return left.split(), losses.split(), right.split()


def _table(lines):
    at = next(i for i, line in enumerate(lines) if line.split(" | ")[0].split() == ["step", "lr", "train"])
    rows = []
    for line in lines[at + 1:]:
        if line.count(" | ") != 2:
            break
        rows.append(line)
    return lines[at], rows


def test_header_is_short_and_human(printed):
    out, lines = printed
    first = lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)
    assert not any(line.lstrip().startswith("{") for line in lines)
    from empirical.models import build_model
    n_params = sum(p.numel() for p in build_model("resnet8", 10, 3, 16).parameters())   # smoke: 10 classes, 3x16x16
    assert "preset smoke" in first and "resnet8" in first and f"{n_params:,} parameters" in first
    assert "40 steps" in first and len(first) < 120
    head = lines[1:lines.index(next(line for line in lines if " | " in line))]
    keys = [line.split()[0] for line in head if line.startswith("  ")]
    assert keys == ["data", "training", "schedule", "averages", "recordings", "device", "output"]
    data = next(line for line in head if line.split()[0] == "data")
    assert "512 train / 256 test" in data                  # smoke: 512 training and 256 test images
    assert str(out) in next(line for line in head if line.split()[0] == "output")
    assert all(len(line) < 200 for line in head)


def test_progress_rows_show_every_variants_test_loss(printed):
    out, lines = printed
    header, rows = _table(lines)
    left, losses, right = _cells(header)
    assert losses == LOSS_COLUMNS and right == ["acc_raw", "elapsed", "eta"]
    widths = {len(row) for row in rows}
    assert len(widths) == 1 and len(header) in widths                 # fixed widths
    by_step = {int(_cells(row)[0][0]): row for row in rows}
    assert sorted(by_step) == [0, 10, 20, 40]                         # 10: the early row of piped output
    assert _cells(by_step[10])[1] == [] and re.fullmatch(CLOCK, _cells(by_step[10])[2][-1])   # ETA, no losses yet
    with open(out / "metrics.csv", newline="") as f:
        metrics = {int(r["step"]): r for r in csv.DictReader(f)}
    for step in (20, 40):
        cells = _cells(by_step[step])[1]
        assert len(cells) == len(LOSS_COLUMNS) and sum(c.endswith("*") for c in cells) == 1
        values = [float(c.rstrip("*")) for c in cells]
        # raw's cell is metrics.csv's test_loss_raw at 4 significant digits; best_2pt the lower of the two gaps
        assert values[0] == pytest.approx(float(metrics[step]["test_loss_raw"]), rel=1e-3)
        two = min(float(metrics[step][f"test_loss_two_point_k{g}"]) for g in (5, 10))
        assert values[-1] == pytest.approx(two, rel=1e-3)
        assert re.fullmatch(CLOCK, _cells(by_step[step])[2][-1])
    assert _cells(by_step[40])[2][-1] == "0:00"                        # nothing left at the end


def test_final_table_marks_the_best_and_names_the_next_command(printed):
    out, lines = printed
    assert lines[-1] == str(out)
    nxt = lines[-2]
    assert nxt.startswith("next: python -m compare.report ") and str(out) in nxt
    final = rundir.load_run(out).summary["eval"]
    at = next(i for i, line in enumerate(lines) if line.startswith("final evaluation at step 40"))
    table = lines[at + 2:len(lines) - 2]
    assert lines[at + 1].split() == ["variant", "test_loss", "vs", "raw", "test_acc"]
    assert sorted(line.split()[0] for line in table) == sorted(final)    # every variant, once
    marked = [line.split()[0] for line in table if line.endswith("* best")]
    assert marked == [min(final, key=lambda v: final[v]["loss"])]


def test_terminal_bar_starts_after_the_step_0_evaluation():
    stream = io.StringIO()
    p = console.Progress(100, ["raw", "ema_0.9"], tty=True, stream=stream)
    assert p.bar is None                    # nothing runs (or times) during the start-up evaluation
    before = time.time()
    p.begin(0)
    assert p.bar is not None and p.bar.n == 0 and p.bar.start_t >= before
    p.step(1, 0.5, 0.1)
    assert p.bar.n == 1
    p.close()


def test_piped_rows_have_an_eta_and_an_early_row_after_a_resume():
    stream = io.StringIO()
    p = console.Progress(200, ["raw", "two_point_k5", "two_point_k9"], tty=False, stream=stream, early=3)
    p.begin(100)                            # resumed at step 100
    for done in range(101, 106):
        p.step(done, 1.0, 0.1)
    lines = stream.getvalue().splitlines()
    header = lines[1].split(" | ")[1].split()
    assert header == ["raw", "best_2pt"]     # the two-point averages share one column
    rows = [line for line in lines[2:] if " | " in line]
    assert [int(r.split()[0]) for r in rows] == [103]
    assert re.fullmatch(CLOCK, rows[0].split()[-1]) and rows[0].split()[2] == "1"   # mean training loss since start
