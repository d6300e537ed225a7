"""Validation of a whole :class:`empirical.config.RunConfig`: :func:`problems` lists everything wrong (each with what
is allowed), :func:`validate` raises one ConfigError line. Imports no torch."""
from __future__ import annotations

import math
from dataclasses import dataclass

from empirical.config import (ARCHS, BN_MODES, DATASETS, DECAY_SCHEDULES, QUAD_SPECTRUM, SCHEDULES, ConfigError,
                              RunConfig, flag_of)
from empirical.schedules import MAX_STEPS, branch_lr, build_schedule
from theory import spec


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
