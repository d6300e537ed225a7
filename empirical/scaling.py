"""--steps / --epochs: a preset's timeline scaled to another run length (:func:`scale_to_steps`), and the steps of
E epochs (:func:`epochs_to_steps`). Imports no torch."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from empirical.config import DECAY_SCHEDULES, ConfigError, RunConfig

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
