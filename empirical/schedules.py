"""The LR schedule of a run: a ``theory.spec`` schedule (:func:`build_schedule`), so the LR used by training at step
t is by construction the one the theory side computes (``lr_table``). Steps are optimiser steps, 0-based for updates:
update t uses ``lr_table(cfg)[t]``. Also the --branch-schedule glue (parse, complete H from a report, the branch's LR).
Imports no torch."""
from __future__ import annotations

import numpy as np

from common import rundir
from empirical.config import SCHEDULES, ConfigError, RunConfig
from theory.branchspec import BranchSchedule
from theory import spec
from theory.stationary import harmonic_equivalent_lr

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
