"""Run configuration of ``python -m empirical.run``: one frozen dataclass, presets, step scaling and validation.

Every field of :class:`RunConfig` carries its unit and meaning in its ``help`` metadata; the command line is
generated from the fields by ``empirical/flags.py``.

The LR schedule is a ``theory.spec`` schedule (:func:`build_schedule`), so the LR used by training at step t is
by construction the one the theory side computes (``lr_table``). Steps are optimiser steps, 0-based for updates:
update t uses ``lr_table(cfg)[t]``.

This module does not import torch, so a bad command line fails in well under a second.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from common import rundir
from theory.branchspec import BranchSchedule
from theory import spec
from theory.stationary import harmonic_equivalent_lr

DATASETS = ("digits", "mnist", "smoke", "synthetic-imagenet", "cifar10", "cifar100",
            "imagenet", "quadratic")  # = empirical.data.NAMES (tested)
ARCHS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet18_cifar", "resnet18", "resnet34", "resnet50",
         "quadratic")
# The quadratic closure test (empirical/quadratic.py): scales h:noise:directions, h the Hessian eigenvalue (1/LR),
# noise the batch-minimum variance summed over the scale's directions (param²). A fast scale (relaxation 10 steps at
# lr 0.05, momentum 0.9) and a slow one (1,000 steps) with comparable stationary excess losses.
QUAD_SPECTRUM = "0.2:1:16,0.002:1e4:64"
SCHEDULES = ("constant", "step", "cosine", "linear", "wsd", "hyperbolic")
DECAY_SCHEDULES = ("cosine", "linear", "wsd", "hyperbolic")   # the schedules --decay-start applies to
BN_MODES = ("recompute", "averaged", "raw")  # = empirical.bn.BN_MODES (tested)
# Fields that control how a run is executed, not what it computes: they may differ between a run and its resume.
RUN_CONTROL = ("out", "resume", "device", "workers", "max_steps", "checkpoint_every", "checkpoint_keep_every",
               "checkpoint_branch_points",
               "tensorboard")  # logging only: a resume may turn it on (the whole history is written)


class ConfigError(ValueError):
    """Bad command-line input. One line: what is wrong and how to fix it. The CLI prints it and exits with 2."""


def _f(default, help: str, group: str):
    return field(default=default, metadata={"help": help, "group": group})


@dataclass(frozen=True)
class RunConfig:
    # ---- what to train
    preset: str = _f("smoke", "preset these values started from (positional PRESET)", "data and model")
    dataset: str = _f("smoke", f"dataset, one of {', '.join(DATASETS)}", "data and model")
    data_dir: typing.Optional[str] = _f(None, "folder holding cifar10/cifar100/imagenet files (imagenet: else "
                                              "$IMAGENET_DIR)", "data and model")
    max_train: typing.Optional[int] = _f(None, "keep this many training examples (stratified); none = all",
                                         "data and model")
    max_test: typing.Optional[int] = _f(None, "keep this many test examples (stratified); none = all",
                                        "data and model")
    train_eval_size: int = _f(0, "training examples used for eval/train_* (un-augmented, fixed); 0 = all",
                              "data and model")
    arch: str = _f("resnet8", f"network, one of {', '.join(ARCHS)}", "data and model")
    shift_augment: int = _f(0, "random translation of training images by up to this many pixels (zero-padded random "
                                 "crop, border = channel minimum) for digits, mnist, smoke; 0 = none. cifar and "
                                 "imagenet always use their standard augmentation", "data and model")
    seed: int = _f(0, "seed of init, data order, data split, bank choice (integer >= 0)", "data and model")
    quad_spectrum: str = _f(QUAD_SPECTRUM, "dataset quadratic: its Hessian spectrum as scales h:noise:directions, "
                                           "comma-separated; h the eigenvalue (1/LR units), noise the variance of "
                                           "the batch minimum summed over the scale's directions (param²)",
                            "data and model")
    drift: float = _f(0.0, "dataset quadratic: the minimum moves at this speed (parameter units per step) along "
                           "the directions of the flattest scale; 0 = fixed", "data and model")
    # ---- optimiser (PyTorch SGD convention: v <- mu v + g + wd theta; theta <- theta - lr v; theory.md §2.6)
    steps: int = _f(80, "run length T in optimiser steps (the schedule's horizon). Giving --steps (or --epochs) "
                        "scales every step-based value of the preset not given explicitly by --steps / the preset's "
                        "steps: decay start, warmup, milestones, hyperbolic tau, EMA and SWA starts, two-point and "
                        "N-point gaps, the dense-evaluation window; the eval, bank, probe, align, curv and checkpoint "
                        "cadences only up (a shorter run keeps the preset's cadences, so its cost per step)", "optimiser and schedule")
    max_steps: int = _f(0, "stop after this many steps without changing the schedule; 0 = --steps",
                        "optimiser and schedule")
    batch_size: int = _f(32, "global batch size B in examples per step (split evenly across DDP ranks)",
                         "optimiser and schedule")
    lr: float = _f(0.05, "peak learning rate lambda (LR units)", "optimiser and schedule")
    lr_ref_batch: int = _f(0, "if > 0, --lr is the LR at this batch size and the used peak LR is "
                              "lr * batch_size / lr_ref_batch (linear scaling); 0 = use --lr as is",
                           "optimiser and schedule")
    momentum: float = _f(0.9, "heavy-ball momentum mu in [0, 1)", "optimiser and schedule")
    weight_decay: float = _f(5e-4, "L2 weight decay coefficient (per step, added to the gradient), >= 0",
                             "optimiser and schedule")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing in [0, 1)", "optimiser and schedule")
    schedule: str = _f("constant", f"LR schedule after warmup, one of {', '.join(SCHEDULES)} (theory.spec)",
                       "optimiser and schedule")
    warmup_steps: int = _f(0, "linear warmup: lr * (t + 1) / warmup_steps for steps t < warmup_steps",
                           "optimiser and schedule")
    decay_start: int = _f(0, "step where cosine/linear/wsd/hyperbolic leave the constant phase (no effect with "
                             "constant and step, which have no such phase)", "optimiser and schedule")
    final_lr: float = _f(0.0, "LR at the end of a cosine/linear/wsd decay (LR units)", "optimiser and schedule")
    milestones: typing.Tuple[int, ...] = _f((), "step schedule: steps at which the LR is multiplied by "
                                                "--step-factor, e.g. 3000,6000", "optimiser and schedule")
    step_factor: float = _f(0.1, "step schedule: factor per milestone, in (0, 1]", "optimiser and schedule")
    hyperbolic_tau: float = _f(100.0, "hyperbolic schedule: lr * tau / (tau + t - decay_start), tau in steps",
                               "optimiser and schedule")
    wsd_shape: str = _f("linear", "wsd decay shape: linear or sqrt", "optimiser and schedule")
    diverge_factor: float = _f(1e3, "stop as diverged when the training loss exceeds this multiple of the "
                                    "first step's loss (or is NaN/inf)", "optimiser and schedule")
    # ---- weight averaging (theory.md §3.3-3.5; semantics recorded from WeightAverages.config())
    ema_decays: typing.Tuple[float, ...] = _f((0.9, 0.98), "EMA decays gamma per optimiser step, each in [0, 1)",
                                              "averaging")
    ema_start: int = _f(0, "step at which every EMA is initialised to the iterate", "averaging")
    ema_every: int = _f(1, "update EMAs every this many steps (decay gamma**every per update)", "averaging")
    swa_start: typing.Optional[int] = _f(10, "step where the uniform (SWA) average starts; none = no SWA",
                                         "averaging")
    swa_every: int = _f(1, "SWA sampling period in steps", "averaging")
    two_point_gaps: typing.Tuple[int, ...] = _f((5,), "two-point averages (theta_t + theta_{t-k}) / 2, "
                                                       "gaps k in steps", "averaging")
    n_points: typing.Tuple[int, ...] = _f((), "N-point averages over theta_{t - i * gap}, i < N; N values",
                                          "averaging")
    n_point_gap: int = _f(0, "gap between the N points, in steps", "averaging")
    bn_mode: str = _f("recompute", f"BatchNorm statistics of averaged weights, one of {', '.join(BN_MODES)}",
                      "averaging")
    bn_batches: int = _f(4, "fixed un-augmented training batches used to recompute BN statistics", "averaging")
    # ---- measurements (cadences in optimiser steps; 0 = never)
    eval_every: int = _f(20, "evaluate raw and averaged weights every this many steps (and at the end)",
                         "measurements")
    eval_dense_every: int = _f(0, "also evaluate the TEST split of every variant every this many steps inside "
                                  "[--eval-dense-from, --eval-dense-until] (the two-point lag grid that compare/ "
                                  "calibrates on needs the raw loss at both ends of every lag); 0 = off",
                               "measurements")
    eval_dense_from: int = _f(0, "first step of the dense evaluation window", "measurements")
    eval_dense_until: typing.Optional[int] = _f(None, "last step of the dense evaluation window; none = the end of "
                                                      "the constant-LR phase (--decay-start, or --steps without one)",
                                                "measurements")
    log_every: int = _f(1, "record train/loss and train/lr every this many steps", "measurements")
    bank_every: int = _f(5, "eval-mode loss of the fixed bank batches every this many steps; 0 = off",
                         "measurements")
    bank_span: int = _f(0, "steps either side of each bank batch's use where the bank is measured every "
                           "--bank-every steps; elsewhere only at steps that are also evaluated (their BN "
                           "recomputation is shared); 0 = every --bank-every steps over the whole run",
                        "measurements")
    bank_size: int = _f(4, "K: number of fixed training batches (and of held-out batches) in the bank",
                        "measurements")
    bank_fraction: float = _f(0.25, "fraction f of each bank batch whose loss is recorded: the first ceil(f·B) "
                                    "images of the training (held-out) batch; 1 = whole batches. The NQM's dip after "
                                    "use is the same for any subset of the trained batch, only the level rises by "
                                    "½Σhσ²(1/f − 1) (theory.probes.fixed_batch_loss); each recorded image is one "
                                    "eval-mode forward, so the bank costs ~2·K·f·r/bank_every of a training step (r ≈ "
                                    "0.25: an eval forward over a training step). Probe, alignment and curvature "
                                    "always use whole batches", "measurements")
    probe_every: int = _f(20, "one-step probe every this many steps; 0 = off", "measurements")
    probe_etas: int = _f(13, "number of log-spaced probe LRs eta", "measurements")
    probe_lo: float = _f(1e-3, "smallest probe LR, as a multiple of lambda_eff = lr / (1 - mu)", "measurements")
    probe_hi: float = _f(1e3, "largest probe LR, as a multiple of lambda_eff", "measurements")
    align_every: int = _f(20, "gradient alignment cos(g_B, mean bank gradient) every this many steps; 0 = off",
                          "measurements")
    align_batches: int = _f(4, "bank batches averaged for the reference gradient of the alignment",
                            "measurements")
    curv_every: int = _f(40, "top Hessian eigenvalue every this many steps; 0 = off", "measurements")
    curv_batches: int = _f(2, "bank batches whose mean loss the curvature is measured on", "measurements")
    curv_iters: int = _f(10, "power-iteration steps (one HVP each) for the top eigenvalue", "measurements")
    sketch_dim: int = _f(1024, "d of the CountSketch S θ recorded for raw and averaged weights at each evaluation "
                              "(distances across runs, rel. s.d. <= 1/sqrt(2d)); 0 = off", "measurements")
    # ---- system and run control
    device: str = _f("auto", "auto, cpu, cuda or cuda:N (auto: cuda if available)", "system")
    bf16: bool = _f(False, "bfloat16 autocast for training and evaluation (CUDA only; ignored on CPU)", "system")
    channels_last: bool = _f(False, "channels_last memory format for the model and inputs", "system")
    workers: int = _f(0, "DataLoader worker processes for datasets with per-sample transforms; without --workers "
                         "a preset's value is a maximum, lowered to the CPUs available less one", "system")
    tensorboard: bool = _f(False, "also write every metrics.csv series as TensorBoard scalars to RUN_DIR/tensorboard/ "
                                  "(needs the optional extra tensorboard: pip install '.[tensorboard]')", "system")
    out: typing.Optional[str] = _f(None, "run directory (default: runs/empirical/<stamp>-<preset>-s<seed>-xxxx)",
                                   "system")
    resume: bool = _f(False, "continue the run in --out from its newest valid checkpoint", "system")
    checkpoint_every: int = _f(0, "checkpoint every this many steps (and always at the end); 0 = end only",
                               "system")
    checkpoint_keep_every: int = _f(0, "never delete checkpoints at multiples of this step (branch points); "
                                       "0 = keep the newest two and the branch points", "system")
    checkpoint_branch_points: bool = _f(True, "also checkpoint at the EMA start, the SWA start and the decay start "
                                              "(the steps --branch-from and post-hoc averages start from) and never "
                                              "delete those checkpoints", "system")
    branch_from: typing.Optional[str] = _f(None, "checkpoint file to branch from: same data order, new LR "
                                                 "schedule from its step on", "system")
    branch_schedule: typing.Optional[str] = _f(None, "LR from the branch step on: half | scale:F | constant:LR | "
                                                     "ema:GAMMA:H | swa:H | hyperbolic:TAU (H: curvature, "
                                                     "1/LR units; TAU: steps). ema:GAMMA and swa without H take H "
                                                     "from --from-report", "system")
    prediction: typing.Optional[str] = _f(None, "with --branch-from: the file python -m compare.branch_prediction "
                                                "wrote for this branch before it ran; its SHA-256 goes into "
                                                "config.json and compare.report judges the branch against it",
                                          "system")

    # --------------------------------------------------------------------------------------------- derived
    @property
    def peak_lr(self) -> float:
        """The peak LR actually used (after linear batch-size scaling when ``lr_ref_batch`` > 0)."""
        return self.lr * self.batch_size / self.lr_ref_batch if self.lr_ref_batch > 0 else self.lr

    @property
    def stop(self) -> int:
        """Number of optimiser steps this invocation trains to."""
        return self.max_steps if self.max_steps > 0 else self.steps

    @property
    def bank_images(self) -> int:
        """Images of each bank batch whose loss is recorded: ceil(bank_fraction · B), at least 1."""
        return max(1, math.ceil(self.bank_fraction * self.batch_size - 1e-9))   # −1e-9: 0.1·30 = 3.0000000000000004

    def branch_points(self) -> tuple[int, ...]:
        """Steps in (0, stop) checkpointed and kept by default (``checkpoint_branch_points``): the EMA start (with
        EMAs), the SWA start and the decay start (end of the constant phase, for schedules that have one). These are
        where the branch and post-hoc workflows start (docs/tools.md: --branch-from RUN/checkpoints/step_T.pt)."""
        if not self.checkpoint_branch_points:
            return ()
        steps = {self.ema_start if self.ema_decays else 0, self.swa_start or 0,
                 self.decay_start if self.schedule in DECAY_SCHEDULES else 0}
        return tuple(sorted(t for t in steps if 0 < t < self.stop))

    def dense_window_end(self) -> int:
        """Last step of the dense evaluation window on the full timeline (--steps): --eval-dense-until, else the
        decay start of a decaying schedule, else the end of the run."""
        if self.eval_dense_until is not None:
            return self.eval_dense_until
        return self.decay_start if self.schedule in DECAY_SCHEDULES and self.decay_start > 0 else self.steps

    def dense_eval_steps(self) -> list[int]:
        """Steps of the dense evaluation window (test split only), in [1, stop]; [] when --eval-dense-every is 0."""
        if self.eval_dense_every <= 0:
            return []
        until = self.dense_window_end()
        first = -(-max(self.eval_dense_from, 1) // self.eval_dense_every) * self.eval_dense_every
        return list(range(first, min(until, self.stop) + 1, self.eval_dense_every))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["peak_lr"], d["bank_images"] = self.peak_lr, self.bank_images
        return d


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

# --------------------------------------------------------------------------------------- --steps / --epochs
# A preset's step-based values describe one timeline (digits: EMAs from 200, SWA from 1,050, constant LR to 2,100 of
# 2,400 steps, lags 10-300, dense test evaluation every 10 steps from 1,000). `--steps N` keeps that timeline in
# proportion: every such value not given explicitly is multiplied by N / preset.steps (what a user of
# `digits --steps 300` means; each refusal used to name one value at a time).
SCALED_POSITIONS = ("warmup_steps", "decay_start", "ema_start", "swa_start", "eval_dense_from", "eval_dense_until")
SCALED_CADENCES = ("eval_every", "eval_dense_every", "bank_every", "bank_span", "probe_every", "align_every",
                   "curv_every", "checkpoint_every", "checkpoint_keep_every")    # 0 = off stays 0; never below the preset's
# Cadences scale up with a longer run (the same number of measurements) but never down: a measurement costs the same
# forward passes whatever the run length, so dividing the cadences by 5 for a 5× shorter run multiplies the cost per
# step by 5 (digits --steps 200 measured: dense evaluation and the bank every step, 16 steps in 6 min under load).
SCALED_OTHER = ("milestones", "hyperbolic_tau", "two_point_gaps", "n_point_gap")
STEP_SCALED = SCALED_POSITIONS + SCALED_CADENCES + SCALED_OTHER
# Not scaled: ema_every / swa_every / log_every (how often the averages and the log sample the trajectory, not
# where on the timeline something happens: the EMA decay is per optimiser step) and max_steps (run control).


def _round(x: float) -> int:
    """Round half up (Python's round() rounds 2.5 to 2): 0.2 · 10 = 2, 0.25 · 10 = 2.5 -> 3."""
    return int(math.floor(x + 0.5))


def scale_to_steps(base: RunConfig, steps: int, given: dict | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """``base`` (a preset) with ``steps`` and its step-based values (STEP_SCALED) scaled by f = steps / base.steps,
    except those in ``given`` (the flags given explicitly, applied on top by the caller, never scaled); returns
    (config, {field: new value} of the values that changed).

    Positions (decay, EMA/SWA starts, warmup, milestones, dense window) are rounded and kept inside the run
    (< steps; the dense window's end <= steps); cadences are scaled only up, never below the preset's (0 = off
    stays 0: see SCALED_CADENCES). Two-point and
    N-point gaps that are multiples of the dense-evaluation cadence stay multiples of the scaled cadence (the
    calibration needs the raw loss at both ends of every lag: compare/pairs.py); gaps >= steps are dropped."""
    f = steps / base.steps
    given = given or {}
    explicit = set(given)
    new: dict[str, Any] = {"steps": steps}
    if f == 1:
        return replace(base, steps=steps), {}

    schedule = given.get("schedule", base.schedule)
    unused = {"decay_start"} if schedule not in DECAY_SCHEDULES else set()   # schedule parameters the run ignores
    unused |= {"hyperbolic_tau"} if schedule != "hyperbolic" else set()
    unused |= {"milestones"} if schedule != "step" else set()

    def want(name):
        return name not in explicit and name not in unused

    for name in SCALED_POSITIONS:
        v = getattr(base, name)
        if want(name) and v is not None:
            limit = steps if name in ("eval_dense_from", "eval_dense_until") else steps - 1
            new[name] = max(0, min(_round(v * f), limit))
    for name in SCALED_CADENCES:
        v = getattr(base, name)
        if want(name) and v:
            new[name] = max(v, _round(v * f))
    if want("milestones") and base.milestones:
        new["milestones"] = tuple(sorted({min(_round(m * f), steps - 1) for m in base.milestones}))
    if want("hyperbolic_tau"):
        new["hyperbolic_tau"] = base.hyperbolic_tau * f           # a time constant in steps: not rounded
    c0 = base.eval_dense_every
    c1 = given.get("eval_dense_every", new.get("eval_dense_every", c0))   # the cadence the run will use

    def gap(k: int, aligned: bool) -> int:
        return c1 * max(1, _round(k * f / c1)) if aligned else max(1, _round(k * f))

    if want("two_point_gaps") and base.two_point_gaps:
        aligned = bool(c0 and c1 and all(k % c0 == 0 for k in base.two_point_gaps))
        gaps = [gap(k, aligned) for k in base.two_point_gaps]
        new["two_point_gaps"] = tuple(dict.fromkeys(k for k in gaps if k < steps))   # unique, in order
    if want("n_point_gap") and base.n_point_gap:
        new["n_point_gap"] = gap(base.n_point_gap, bool(c0 and c1 and base.n_point_gap % c0 == 0))
    cfg = replace(base, **new)
    return cfg, {k: v for k, v in new.items() if k != "steps" and v != getattr(base, k)}


# Training-set sizes (examples) known without loading the data, for --epochs: digits and mnist are the stratified
# splits of empirical/data.py (1,797 − 360 test; 5,000 − 1,000 test), smoke its 512 synthetic training images,
# CIFAR the 5 × 10,000 images of data_batch_1..5, synthetic-imagenet ImageNet-1k's 1,281,167. imagenet is counted
# in --data-dir (train_size).
TRAIN_SIZES = {"digits": 1437, "mnist": 4000, "smoke": 512, "cifar10": 50000, "cifar100": 50000,
               "synthetic-imagenet": 1281167}
# torchvision.datasets.folder.IMG_EXTENSIONS: the files ImageFolder (empirical/data.py's imagenet) counts as images
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def train_size(cfg: RunConfig) -> int:
    """Number of training examples the run's sampler will see (after --max-train), without importing torch."""
    if cfg.dataset in TRAIN_SIZES:
        n = TRAIN_SIZES[cfg.dataset]
    elif cfg.dataset == "imagenet":
        import os
        root = cfg.data_dir if cfg.data_dir is not None else os.environ.get("IMAGENET_DIR")
        train = Path(root) / "train" if root else None
        if train is None or not train.is_dir():
            raise ConfigError("--epochs with imagenet counts the training images in DIR/train/<class>/: give "
                              "--data-dir DIR (or set IMAGENET_DIR), or give --steps")
        n = sum(1 for _, _, files in os.walk(train, followlinks=True) for f in files
                if f.lower().endswith(_IMAGE_SUFFIXES))
    else:
        raise ConfigError(f"--epochs: the training-set size of {cfg.dataset} is not known before loading it; give "
                          f"--steps")
    return min(n, cfg.max_train) if cfg.max_train is not None else n


def epochs_to_steps(cfg: RunConfig, epochs: float) -> tuple[int, str]:
    """(steps, note) for ``--epochs E``: round(E × steps per epoch), steps per epoch = training examples // batch
    size (empirical/sampler.py drops the incomplete last batch)."""
    if not (math.isfinite(epochs) and epochs > 0):
        raise ConfigError(f"--epochs {epochs:g}: must be a number > 0")
    if not (isinstance(cfg.batch_size, int) and cfg.batch_size >= 1):
        raise ConfigError(f"--batch-size {cfg.batch_size}: must be an integer >= 1")
    n = train_size(cfg)
    per_epoch = n // cfg.batch_size
    if per_epoch < 1:
        raise ConfigError(f"--batch-size {cfg.batch_size}: larger than the {n:,} training examples of "
                          f"{cfg.dataset}; lower it")
    steps = max(1, _round(epochs * per_epoch))
    return steps, (f"--epochs {epochs:g} = {steps:,} steps ({per_epoch:,} steps per epoch: {n:,} training examples "
                   f"of {cfg.dataset} // batch size {cfg.batch_size})")


# ------------------------------------------------------------------------------------------------- schedules

# Longest run accepted by validate(): lr_table() holds one float64 per step (and empirical.run a list of them),
# 10^7 steps = 80 MB; 10^7 is ~22 ImageNet runs of 90 epochs at batch 256 (450,450 steps).
MAX_STEPS = 10 ** 7


def build_schedule(cfg: RunConfig) -> spec.Schedule:
    """The theory.spec schedule of ``cfg``: spec.Warmup(base, --warmup-steps) around the base schedule (WSD has its
    own warmup, so its wrapper has 0 steps). Always a Warmup, so ``params()`` keeps one shape: {"name", the base's
    parameters, "warmup_steps"}."""
    lr, s = cfg.peak_lr, cfg.schedule
    if s == "constant":
        base = spec.Constant(lr)
    elif s == "step":
        base = spec.Step(lr, milestones=tuple(cfg.milestones), factor=cfg.step_factor)
    elif s in ("cosine", "linear"):
        base = spec.make_schedule(s, lr=lr, total=cfg.steps, start=cfg.decay_start, final_lr=cfg.final_lr)
    elif s == "wsd":
        return spec.Warmup(spec.WSD(lr, warmup=cfg.warmup_steps, decay_start=cfg.decay_start,
                                    decay=cfg.steps - cfg.decay_start, final_lr=cfg.final_lr,
                                    shape=cfg.wsd_shape), 0)
    elif s == "hyperbolic":
        base = spec.Hyperbolic(lr, start=cfg.decay_start, tau=cfg.hyperbolic_tau)
    else:
        raise ConfigError(f"--schedule {s!r}: choose one of {', '.join(SCHEDULES)}")
    return spec.Warmup(base, cfg.warmup_steps)


def schedule_text(cfg: RunConfig) -> str:
    """The run's schedule in the one schedule syntax of the command lines (theory/schedtext.py), e.g.
    ``cosine:lr=0.05,total=1500,start=1200,final_lr=0.0,warmup=50``: paste it into ``theory.predict --schedule``."""
    from theory.schedtext import format_schedule
    return format_schedule(build_schedule(cfg))


def parse_branch_schedule(text: str) -> BranchSchedule:
    """``--branch-schedule`` text -> :class:`theory.branchspec.BranchSchedule` (its one parser), a malformed
    text -> ConfigError (one line: what is wrong and the accepted forms)."""
    try:
        return BranchSchedule.parse(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def branch_lr(text: str, lr0: float, momentum: float, start: int) -> spec.Schedule:
    """LR schedule from the branch step ``start`` on (:meth:`theory.branchspec.BranchSchedule.lr_schedule`, the one
    definition), given the parent's LR ``lr0`` there; ConfigError (what to add) where H is missing."""
    b = parse_branch_schedule(str(text))
    if b.needs_h:
        raise ConfigError(missing_h_message(text))
    return b.lr_schedule(lr0, momentum, start)


def missing_h_message(text: str) -> str:
    """What to do about ``ema:GAMMA`` / ``swa`` given without the curvature H."""
    rule = ("sets the EMA's equivalent LR λβ/(β + λ_eff·H)" if parse_branch_schedule(text).kind == "ema"
            else "sets the cooldown's τ = 1/(λ_eff·H) steps")
    return (f"--branch-schedule {text!r} needs H, the curvature (1/LR units) that {rule}: add --from-report DIR "
            f"(the folder python -m compare.report wrote for the parent run; H comes from the calibration in its "
            f"metrics.json) or write {text}:H")


def branch_schedule_from_report(text: str, report: str, ema_every: int = 1) -> tuple[str, str]:
    """``ema:GAMMA`` or ``swa`` completed with the H a compare.report folder's calibration gives:
    (``ema:GAMMA:H`` / ``swa:H``, a one-line note of where H came from).

    The calibration (``setups[0].calibration`` of REPORT/metrics.json: lr, momentum, h, noise_mass; read by
    common.rundir.read_calibration) is the NQM spectrum fitted to the parent's raw trajectory. EMA: H makes the harmonic
    rule return the spectrum's equivalent LR of the EMA (theory.stationary.ema_branch_curvature); SWA:
    H = 1/(λ_eff·τ) with τ the spectrum's cooldown constant (theory.stationary.swa_branch_curvature). The same
    functions scripts/reproduce.py's calibrated_h uses on the runs themselves."""
    b = parse_branch_schedule(text)
    if not b.needs_h:
        raise ConfigError(f"--from-report {report}: it completes --branch-schedule ema:GAMMA or swa (H from the "
                          f"report); {text!r} needs none, drop one of the two")
    try:
        rep = rundir.read_calibration(report)
    except rundir.RunDirError as e:
        raise ConfigError(f"--from-report {e}") from None
    from theory import stationary
    lr, mu, h = rep["lr"], rep["momentum"], rep["h"]
    s2 = np.broadcast_to(rep["sigma2"], h.shape).astype(float)
    where = f"{report} (h = {', '.join(f'{x:.4g}' for x in h)} 1/LR, lr {lr:g}, momentum {mu:g})"
    if b.kind == "swa":
        tau = stationary.spectrum_cooldown_tau(lr, h, s2, mu)
        hb = stationary.swa_cooldown_curvature(lr, tau, mu)
        done = _completed(b, hb)
        return done, f"--branch-schedule {done}: H from the cooldown τ = {tau:.4g} steps of {where}"
    gamma = b.value
    hb = stationary.ema_branch_curvature(lr, gamma, h, s2, mu, every=ema_every)
    if not hb > 0:
        raise ConfigError(f"--from-report {report}: the calibrated spectrum gives EMA {gamma:g} no equivalent LR "
                          f"below the LR {lr:g}; give H explicitly as ema:{gamma:g}:H")
    lam_eq = float(harmonic_equivalent_lr(lr, gamma, hb, mu))
    done = _completed(b, hb)
    return done, (f"--branch-schedule {done}: H makes the harmonic rule give the EMA's equivalent LR "
                  f"λ_eq = {lam_eq:.4g} of {where}")


def _completed(b: BranchSchedule, h: float) -> str:
    """The text of ``b`` with the curvature ``h`` (6 significant digits, as recorded in config.json)."""
    try:
        return str(b.with_h(float(f"{h:.6g}")))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def lr_table(cfg: RunConfig, branch: tuple[int, str] | None = None) -> np.ndarray:
    """LR of every update t in [0, steps) as float64; with ``branch=(T0, text)`` the branch schedule from T0."""
    t = np.arange(cfg.steps)
    lrs = build_schedule(cfg).lr_at(t)
    if branch is not None:
        t0, text = branch
        b = branch_lr(text, float(lrs[min(t0, cfg.steps - 1)]), cfg.momentum, t0)
        lrs[t0:] = b.lr_at(t[t0:])
    return lrs


# ----------------------------------------------------------------------------------- fields and their flags

def flag_of(name: str) -> str:
    """The command-line flag of a RunConfig field: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def field_type(tp) -> tuple[type, bool, bool]:
    """(element type, is_tuple, is_optional) of a field annotation."""
    optional = False
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _valid_decay(d) -> bool:
    """The EMA decay check has one home, theory.spec.check_ema_decay (0 ≤ γ < 1 per optimiser step)."""
    try:
        spec.check_ema_decay(d)
    except ValueError:
        return False
    return True


def parse_spectrum(text: str) -> tuple[tuple[float, float, int], ...]:
    """``--quad-spectrum`` text -> ((h, noise, directions), ...) (units: RunConfig.quad_spectrum's help). Raises
    ConfigError, one line, on anything else."""
    scales = []
    for part in str(text).split(","):
        try:
            h, noise, n = part.split(":")
            h, noise, n_f = float(h), float(noise), float(n)
        except ValueError:
            scales = []
            break
        if not (math.isfinite(h) and h > 0 and math.isfinite(noise) and noise >= 0 and n_f == int(n_f) >= 1):
            scales = []
            break
        scales.append((h, noise, int(n_f)))
    if not scales:
        raise ConfigError(f"--quad-spectrum {text!r}: give scales h:noise:directions separated by commas, h > 0 "
                          f"(1/LR units), noise >= 0 (param²), directions an integer >= 1, e.g. {QUAD_SPECTRUM}")
    return tuple(scales)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the message, and the fields it involves (two or more: a conflict)."""
    message: str
    fields: tuple[str, ...]


def problems(cfg: RunConfig) -> list[Problem]:
    """Everything wrong with ``cfg``, each with what is allowed (empty list: valid)."""
    out: list[Problem] = []

    def need(ok: bool, msg: str, *names: str) -> bool:
        if not ok:
            out.append(Problem(msg, names))
        return ok

    need(cfg.dataset in DATASETS, f"--dataset {cfg.dataset!r}: choose one of {', '.join(DATASETS)}", "dataset")
    need(cfg.arch in ARCHS, f"--arch {cfg.arch!r}: choose one of {', '.join(ARCHS)}", "arch")
    need(cfg.schedule in SCHEDULES, f"--schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}", "schedule")
    need(cfg.bn_mode in BN_MODES, f"--bn-mode {cfg.bn_mode!r}: choose one of {', '.join(BN_MODES)}", "bn_mode")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.split(":")[0] == "cuda",
         f"--device {cfg.device!r}: use auto, cpu, cuda or cuda:N", "device")
    need(cfg.wsd_shape in ("linear", "sqrt"), f"--wsd-shape {cfg.wsd_shape!r}: choose linear or sqrt", "wsd_shape")
    finite = set()   # the number fields that are finite and >= 0: only those take part in further checks
    for name in ("lr", "weight_decay", "final_lr", "hyperbolic_tau", "diverge_factor", "probe_lo", "probe_hi",
                 "step_factor", "label_smoothing", "momentum"):
        v = getattr(cfg, name)
        if need(_is_num(v) and v >= 0, f"{flag_of(name)} {v}: must be a finite number >= 0", name):
            finite.add(name)
    numbers_ok = len(finite) == 10
    ok = finite.__contains__
    if ok("lr"):
        need(cfg.lr > 0, f"--lr {cfg.lr}: must be > 0 (LR units)", "lr")
    if ok("momentum"):
        need(cfg.momentum < 1, f"--momentum {cfg.momentum}: must be in [0, 1)", "momentum")
    if ok("label_smoothing"):
        need(cfg.label_smoothing < 1, f"--label-smoothing {cfg.label_smoothing}: must be in [0, 1)", "label_smoothing")
    if ok("step_factor"):
        need(0 < cfg.step_factor <= 1, f"--step-factor {cfg.step_factor}: must be in (0, 1]", "step_factor")
    if ok("final_lr") and ok("lr"):
        need(cfg.final_lr <= cfg.peak_lr, f"--final-lr {cfg.final_lr}: must be <= the peak LR {cfg.peak_lr}",
             "final_lr", "lr")
    if ok("hyperbolic_tau"):
        need(cfg.hyperbolic_tau > 0, "--hyperbolic-tau must be > 0 (steps)", "hyperbolic_tau")
    if ok("diverge_factor"):
        need(cfg.diverge_factor > 1, "--diverge-factor must be > 1", "diverge_factor")
    if ok("probe_lo") and ok("probe_hi"):
        need(0 < cfg.probe_lo < cfg.probe_hi, f"--probe-lo/--probe-hi: need 0 < lo < hi, got {cfg.probe_lo}, "
                                              f"{cfg.probe_hi}", "probe_lo", "probe_hi")
    positive = ("steps", "batch_size", "ema_every", "swa_every", "eval_every", "log_every", "bank_size",
                "bn_batches", "probe_etas", "align_batches", "curv_batches", "curv_iters")
    ints_ok = True
    for name in positive:
        v = getattr(cfg, name)
        ints_ok &= need(isinstance(v, int) and v >= 1, f"{flag_of(name)} {v}: must be an integer >= 1", name)
    non_negative = ("seed", "max_steps", "lr_ref_batch", "warmup_steps", "decay_start", "ema_start", "n_point_gap",
                    "train_eval_size", "eval_dense_every", "eval_dense_from", "bank_every", "bank_span", "probe_every",
                    "align_every", "curv_every", "workers", "sketch_dim", "shift_augment", "checkpoint_every",
                    "checkpoint_keep_every")
    for name in non_negative:
        v = getattr(cfg, name)
        ints_ok &= need(isinstance(v, int) and v >= 0, f"{flag_of(name)} {v}: must be an integer >= 0", name)
    for name in ("max_train", "max_test"):
        v = getattr(cfg, name)
        need(v is None or v >= 1, f"{flag_of(name)} {v}: must be an integer >= 1 or none", name)
    need(_is_num(cfg.bank_fraction) and 0 < cfg.bank_fraction <= 1,
         f"--bank-fraction {cfg.bank_fraction}: must be in (0, 1] (the share of each bank batch recorded; 1 = all)",
         "bank_fraction")
    for d in cfg.ema_decays:
        need(_valid_decay(d), f"--ema-decays: decay {d} is outside [0, 1); give the per-step decay "
                                        f"gamma, e.g. 0.999", "ema_decays")
    try:
        spec.check_distinct("EMA decay", cfg.ema_decays)
    except ValueError as e:
        need(False, f"--ema-decays: {e}", "ema_decays")
    need(len(set(cfg.two_point_gaps)) == len(cfg.two_point_gaps), "--two-point-gaps: each gap at most once",
         "two_point_gaps")
    for n in cfg.n_points:
        need(n >= 2, f"--n-points: N = {n} must be >= 2", "n_points")
    T = cfg.steps
    if ints_ok:   # the run-length conflicts: each names the value and the run length it must fit in
        need(T <= MAX_STEPS, f"--steps {T:,}: at most {MAX_STEPS:,} steps (the LR table holds one number per step)",
             "steps")
        need(cfg.max_steps <= T, f"--max-steps {cfg.max_steps}: must be <= --steps {T} (0 = --steps)",
             "max_steps", "steps")
        need(cfg.warmup_steps < T, f"--warmup-steps {cfg.warmup_steps}: must be shorter than the run (--steps {T})",
             "warmup_steps", "steps")
        if cfg.schedule in DECAY_SCHEDULES:   # constant and step have no decay phase: --decay-start is moot there
            need(cfg.decay_start < T, f"--decay-start {cfg.decay_start}: must be < --steps {T} (the decay needs "
                                      f"at least one step)", "decay_start", "steps")
        if cfg.schedule == "wsd":
            need(cfg.decay_start >= cfg.warmup_steps, f"--decay-start {cfg.decay_start} must be >= --warmup-steps "
                                                      f"{cfg.warmup_steps} for wsd", "decay_start", "warmup_steps")
        need(cfg.eval_dense_until is None or 0 <= cfg.eval_dense_until <= T,
             f"--eval-dense-until {cfg.eval_dense_until}: must be a step in [0, --steps {T}] or none",
             "eval_dense_until", "steps")
        need(all(0 <= m < T for m in cfg.milestones) and list(cfg.milestones) == sorted(set(cfg.milestones)),
             f"--milestones {','.join(map(str, cfg.milestones))}: increasing steps in [0, {T})", "milestones", "steps")
        need(cfg.ema_start < T, f"--ema-start {cfg.ema_start}: must be < --steps {T}", "ema_start", "steps")
        need(cfg.swa_start is None or 0 <= cfg.swa_start < T,
             f"--swa-start {cfg.swa_start}: must be a step in [0, {T}) or none", "swa_start", "steps")
        for k in cfg.two_point_gaps:
            need(1 <= k < T, f"--two-point-gaps: gap {k} must be in [1, --steps {T}); a gap as long as the run "
                             f"never yields an average", "two_point_gaps", "steps")
        for n in cfg.n_points:
            need(n < 2 or (cfg.n_point_gap >= 1 and (n - 1) * cfg.n_point_gap < T),
                 f"--n-points {n} with --n-point-gap {cfg.n_point_gap}: need gap >= 1 and (N-1)*gap < --steps {T}",
                 "n_points", "n_point_gap", "steps")
    need(cfg.prediction is None or cfg.branch_from is not None,
         f"--prediction {cfg.prediction}: a prediction is about a branch; use it with --branch-from and "
         f"--branch-schedule", "prediction", "branch_from")
    if cfg.branch_from is not None or cfg.branch_schedule is not None:
        if need(cfg.branch_from is not None and cfg.branch_schedule is not None,
                "--branch-from and --branch-schedule go together: give both", "branch_from", "branch_schedule"):
            try:
                branch_lr(cfg.branch_schedule, cfg.peak_lr if numbers_ok else 1.0, 0.0, 0)  # syntax check
            except ValueError as e:   # ConfigError, or theory's own check of a value
                need(False, str(e), "branch_schedule")
    need(not cfg.resume or cfg.out is not None, "--resume needs --out RUN_DIR (the run to continue)", "resume")
    quad = cfg.dataset == "quadratic"
    need(quad == (cfg.arch == "quadratic"), f"--dataset {cfg.dataset} with --arch {cfg.arch}: the quadratic task "
                                            f"is dataset and arch quadratic together", "dataset", "arch")
    need(_is_num(cfg.drift) and cfg.drift >= 0, f"--drift {cfg.drift}: must be a finite speed >= 0 (parameter "
                                                f"units per step)", "drift")
    try:
        parse_spectrum(cfg.quad_spectrum)
    except ConfigError as e:
        need(False, str(e), "quad_spectrum")
    for name, moot in (("drift", cfg.drift == 0), ("quad_spectrum", cfg.quad_spectrum == QUAD_SPECTRUM)):
        need(quad or moot, f"{flag_of(name)} shapes the quadratic task: use it with the quadratic preset, not "
                           f"--dataset {cfg.dataset}", name, "dataset")
    if quad:   # the truth written to config.json assumes the plain quadratic (empirical/quadratic.py)
        need(cfg.weight_decay == 0, f"--weight-decay {cfg.weight_decay}: the quadratic task needs 0 (weight decay "
                                    f"adds to every h and pulls the minimum towards 0)", "weight_decay", "dataset")
        need(cfg.max_train is None, "--max-train: the quadratic task draws steps × batch size fresh examples (none "
                                    "reused); drop it", "max_train", "dataset")
        need(cfg.shift_augment == 0, "--shift-augment: the quadratic task has no images; use 0",
             "shift_augment", "dataset")
    if not out:
        try:
            build_schedule(cfg)
        except ValueError as e:
            need(False, f"schedule: {e}", "schedule")
    return out


def problem_text(found: list[Problem]) -> str:
    """One line: the problem, or "N problems: a; b; c"."""
    if len(found) == 1:
        return found[0].message
    return f"{len(found)} problems: " + "; ".join(p.message for p in found)


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError listing every bad value and what is allowed (one line); return ``cfg`` unchanged
    otherwise."""
    found = problems(cfg)
    if found:
        raise ConfigError(problem_text(found))
    return cfg


def from_dict(d: dict) -> RunConfig:
    """RunConfig from a saved ``config.json['config']`` (lists back to tuples; derived keys ignored)."""
    hints = typing.get_type_hints(RunConfig)
    kw = {}
    if "bank_fraction" not in d and "bank_batch_size" in d:   # a run saved before --bank-fraction (0 = whole)
        d = {**d, "bank_fraction": (d["bank_batch_size"] or d["batch_size"]) / d["batch_size"]}
    for f in fields(RunConfig):
        if f.name in d:
            v = d[f.name]
            kw[f.name] = tuple(v) if field_type(hints[f.name])[1] and v is not None else v
    return RunConfig(**kw)


def differing(a: RunConfig, b: RunConfig, ignore=RUN_CONTROL) -> list[str]:
    """Names of fields (outside ``ignore``) whose values differ."""
    return [f.name for f in fields(RunConfig) if f.name not in ignore and getattr(a, f.name) != getattr(b, f.name)]


def to_json(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), separators=(",", ":"), sort_keys=False)
