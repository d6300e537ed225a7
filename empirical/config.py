"""Run configuration of ``python -m empirical.run``: the schema, one frozen dataclass, and its field helpers.

Every field of :class:`RunConfig` carries its unit and meaning in its ``help`` metadata; the command line is
generated from the fields by ``empirical/flags.py``. The presets are in ``empirical/presets.py``, the --steps /
--epochs scaling in ``empirical/scaling.py``, the LR schedule (``build_schedule``, ``lr_table``) in
``empirical/schedules.py`` and the checks of a whole config in ``empirical/validation.py``.

This module does not import torch, so a bad command line fails in well under a second.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields

from theory.spec import EMA, SWA, Averaging, NPoint, TwoPoint

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
    # ---- weight averaging (theory.md §3.3-3.5; as theory.spec objects: RunConfig.averages())
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
                                                "wrote for this branch before it ran (its schedule is the default "
                                                "--branch-schedule); its SHA-256 goes into config.json and "
                                                "compare.report judges the branch against it",
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

    def averages(self) -> list[Averaging]:
        """The run's averages as theory.spec objects (theory.md §3.3-3.5), the one translation of the averaging
        fields: an EMA per ``ema_decays`` (all from ``ema_start``, every ``ema_every`` steps), the SWA from
        ``swa_start`` every ``swa_every`` steps (none when swa_start is None), a TwoPoint per ``two_point_gaps`` and
        an NPoint per ``n_points`` with gap ``n_point_gap``. What empirical.WeightAverages takes."""
        return ([EMA(d, start=self.ema_start, every=self.ema_every) for d in self.ema_decays]
                + ([SWA(start=self.swa_start, every=self.swa_every)] if self.swa_start is not None else [])
                + [TwoPoint(k) for k in self.two_point_gaps] + [NPoint(n, self.n_point_gap) for n in self.n_points])

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
