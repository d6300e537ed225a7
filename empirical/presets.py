"""The presets of ``python -m empirical.run`` (positional PRESET): complete :class:`empirical.config.RunConfig`
values, each with the reasons for its numbers."""
from __future__ import annotations

from dataclasses import replace

from empirical.config import RunConfig

_PRESET_BASE = RunConfig()
# Two-point lags (steps) of the small presets: compare/ estimates the trajectory's structure function D(τ) from the
# two-point averages at these lags (theory.md §3.8a), using only pairs whose both iterates lie in the quasi-stationary
# window (the last half of the constant-LR phase) and only lags up to a third of it. On digits D(τ) measured that way
# saturates by ~50 steps, so 300 resolves the slowest scale that matters. Each lag k holds ≈ k/eval_dense_every + 1
# weight copies (ResNet-8: 0.3 MB each).
LAG_GRID = (10, 20, 50, 100, 200, 300)
PRESETS: dict[str, RunConfig] = {
    # Synthetic 3x16x16, 512 examples: the whole pipeline in seconds (tests).
    "smoke": _PRESET_BASE,
    # Embedded default: sklearn digits (1437 train / 360 test, 8x8). Constant LR for 2100 steps (~94 epochs; the
    # loss plateaus by ~600), then a 300-step cosine cooldown to 0. The window compare/ calibrates on is steps
    # 1050-2100: three times the longest lag; the test split is evaluated densely from 1000 on.
    # Random 1-px shifts keep mini-batch noise alive: without them ResNet-8 interpolates the 1,437 images (training
    # loss ~1e-3 by step 600) and the averages gain nothing measurable over the raw weights (theory.md §6 item 4).
    "digits": replace(_PRESET_BASE, preset="digits", dataset="digits", arch="resnet8", steps=2400, batch_size=64,
                      shift_augment=1, lr=0.05, weight_decay=5e-4, schedule="cosine", decay_start=2100, ema_decays=(0.99, 0.998),
                      ema_start=200, swa_start=1050, two_point_gaps=LAG_GRID, eval_every=100, eval_dense_every=10,
                      eval_dense_from=1000, bank_every=10, bank_span=50,
                      bank_size=4, probe_every=600, align_every=600, curv_every=0, bn_batches=8,
                      checkpoint_every=500),
    "mnist": replace(_PRESET_BASE, preset="mnist", dataset="mnist", arch="resnet14", steps=3000, batch_size=128,
                     shift_augment=2, lr=0.05, schedule="cosine", decay_start=2400, ema_decays=(0.99, 0.999),
                     ema_start=500, swa_start=1200, two_point_gaps=(*LAG_GRID, 400), eval_every=200, eval_dense_every=10,
                     eval_dense_from=1150, bank_every=20, bank_span=100, bank_size=8, bank_fraction=0.125,
                     probe_every=1200, align_every=1200, curv_every=0, bn_batches=8, checkpoint_every=1000),
    # CIFAR (theory.md §4.3): B 128, lr 0.1, wd 5e-4; 390 steps/epoch; 200 epochs = 78,000 steps, constant for
    # 120 epochs, then cosine. EMA 0.999/0.9999, SWA from epoch 60; two-point lags of 1, 3, 10 and 20 epochs (the
    # D(τ) grid, 21 weight copies of 1 MB) with the test split evaluated every epoch from epoch 40 to the cooldown.
    "cifar10": replace(_PRESET_BASE, preset="cifar10", dataset="cifar10", arch="resnet20", steps=78000,
                       batch_size=128, lr=0.1, weight_decay=5e-4, schedule="cosine", decay_start=46800,
                       ema_decays=(0.999, 0.9999), ema_start=3900, swa_start=23400,
                       two_point_gaps=(390, 1170, 3900, 7800), eval_dense_every=390, eval_dense_from=15600,
                       train_eval_size=10000, eval_every=1950, bank_every=50, bank_span=250, bank_size=8,
                       probe_every=1950, align_every=1950, curv_every=7800, bn_batches=32, channels_last=True, bf16=True,
                       workers=4, checkpoint_every=3900, checkpoint_keep_every=7800),
}
PRESETS["cifar100"] = replace(PRESETS["cifar10"], preset="cifar100", dataset="cifar100")
# ImageNet (theory.md §4.1/4.3): ResNet-34, SGD mu 0.9, wd 1e-4, B 256, lr 0.1 x B/256; 5005 steps/epoch,
# 90 epochs; constant for 60 epochs (quasi-stationary phase to branch from), then a cosine over the last 30.
# Two-point lags of 1, 3, 6 and 10 epochs, all on the evaluation grid: 11 weight copies (~1 GB for ResNet-34).
PRESETS["imagenet"] = replace(_PRESET_BASE, preset="imagenet", dataset="imagenet", arch="resnet34",
                              steps=450450, batch_size=256, lr=0.1, lr_ref_batch=256, weight_decay=1e-4,
                              schedule="cosine", decay_start=300300, ema_decays=(0.999, 0.9999),
                              ema_start=25025, ema_every=1, swa_start=150150, swa_every=1,
                              two_point_gaps=(5005, 15015, 30030, 50050), train_eval_size=10000, eval_every=5005,
                              log_every=10,
                              bank_every=500, bank_span=2500, bank_size=8, probe_every=5005, probe_etas=25,
                              align_every=5005,
                              align_batches=4, curv_every=25025, bn_batches=100, channels_last=True, bf16=True,
                              workers=8, checkpoint_every=5005, checkpoint_keep_every=50050)
# GPU check without a dataset (scripts/gpu_check.sh): ImageNet-shaped images generated on the device (3x224x224,
# 1000 classes), ResNet-50 with the imagenet recipe's optimiser, bf16 + channels_last; 200 steps (about a minute on
# one H100-class GPU, estimated) with every average and every measurement firing several times.
PRESETS["synthetic-imagenet"] = replace(
    _PRESET_BASE, preset="synthetic-imagenet", dataset="synthetic-imagenet", arch="resnet50", steps=200,
    batch_size=256, lr=0.1, lr_ref_batch=256, weight_decay=1e-4, schedule="cosine", decay_start=150,
    ema_decays=(0.9, 0.99), ema_start=20, swa_start=100, two_point_gaps=(10, 50), n_points=(4,), n_point_gap=10,
    max_test=2048, train_eval_size=1024, eval_every=100, bank_every=10, bank_size=8, probe_every=100,
    align_every=50, curv_every=100, curv_iters=5, bn_batches=8, channels_last=True, bf16=True)

# The closure test (empirical/quadratic.py, theory.md §2.1): every batch's loss is exactly ½(θ − θ_B)ᵀH(θ − θ_B) +
# const with a known spectrum, trained by the same loop as the ResNets, so compare/ must recover the truth written to
# config.json (config["truth"]). Two scales (QUAD_SPECTRUM): h = 0.2 over 16 directions relaxes in
# (1 − μ)/(λh) = 10 steps, h = 0.002 over 64 in 1,000 steps (the time scale of the slower EMA, 1/(1 − 0.998) = 500);
# their stationary excess losses Σ½h·v ≈ ¼λ_eff·h²·noise are equal (5e-3 each), so neither hides the other. Constant
# LR for 8,000 steps, then a 1,000-step cosine to 0; the start sits 3 stationary s.d. off the minimum, a descent
# that has decayed (e^-8) by the window compare uses, the last half of the constant phase (4,000-8,000). Seven lags
# from 10 to 1,000 (window / 4): two scales and a drift term leave two degrees of freedom to test the fit. Only
# in-window pairs count, so the dense test evaluation starts at the window (a little before). No weight decay (it
# would change H); no BatchNorm, so the BN recomputation is a no-op. The sketch is 128-wide (the model has 80
# parameters; the default 1,024 made the trajectory file 40 MB).
PRESETS["quadratic"] = replace(
    _PRESET_BASE, preset="quadratic", dataset="quadratic", arch="quadratic", steps=9000, batch_size=32, lr=0.05,
    momentum=0.9, weight_decay=0.0, schedule="cosine", decay_start=8000, ema_decays=(0.99, 0.998), ema_start=1000,
    swa_start=4000, two_point_gaps=(10, 20, 50, 100, 200, 500, 1000), eval_every=100, eval_dense_every=10,
    eval_dense_from=3900, bank_every=20, bank_span=200, probe_every=1000, align_every=1000, curv_every=0,
    bn_batches=1,
    train_eval_size=1024, sketch_dim=128, checkpoint_every=1000)
