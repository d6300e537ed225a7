"""Post-hoc averaging: the weighted average of a run's kept constant-LR checkpoints whose noise kernel equals a
target LR schedule's (theory.md §3.6, §3.6a), evaluated exactly like every variant of a run.

    python -m empirical.posthoc RUN --schedule swa:H --from 600            # = the branch `--branch-schedule swa:H`
    python -m empirical.posthoc RUN --schedule half --from 600 --h 0.5     # λ/2 from step 600, at curvature 0.5
    python -m empirical.posthoc RUN --schedule linear:start=600,total=1500 --h 0.5 --at 1200   # theory/schedtext

RUN must have kept its checkpoints on a grid (``empirical.run ... --checkpoint-every K --checkpoint-keep-every K``).
``--schedule`` takes the branch syntax of ``empirical.run --branch-schedule`` together with ``--from STEP`` (the
branch point; the result is comparable with the branch run ``--branch-from RUN/checkpoints/step_STEP.pt``), or,
without ``--from``, a whole schedule in the command-line syntax of theory/schedtext.py (``lr`` defaults to the run's
peak LR, ``total`` to its length). The average emulates the target's iterate at step ``--at`` (default: the last kept
checkpoint of the constant-LR phase the target departs in).

The weights depend on one curvature h (1/LR units; α = λh per step): ``--h``, or the H named by ``swa:H`` /
``ema:GAMMA:H``. They are exact at that curvature for noise injected after the departure step, per step; the kept
checkpoints are coarser (``checkpoint_weights``: each per-step weight is split linearly between the two neighbouring
checkpoints), which the record quantifies (``coarse_cost``). The checkpoints are streamed — one loaded at a time into a
float64 accumulator — the BatchNorm statistics are recomputed on the run's own fixed batches (``bn_mode`` of the run,
empirical/bn.py) and the test and train-eval splits are evaluated with ``empirical.train.evaluate``, for the average
(variant ``posthoc``) and for the last checkpoint θ_T itself (``raw``). Writes a run directory (common/rundir.py):
config.json (the run's config plus a ``posthoc`` section: target, checkpoint steps, weights, negative mass, coarse
cost), env.json, summary.json, trajectory.npz (one eval row at step T; sketch/* when the run records sketches).

Exit status: 0 ok; 2 bad input (one line on stderr, nothing written): no checkpoints, a target the inverse map cannot
represent from these checkpoints, a step range they do not cover, a corrupt checkpoint; 1 anything else.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common import rundir
from common.cli import DefaultsFormatter, OneLineParser, command_note, pipe_safe_stdout
from empirical import config, schedules
from theory.branchspec import BranchSchedule

POSTHOC = "posthoc"          # the variant name of the average, and the config.json section
_REL = 1e-12                 # relative tolerance for "the target's LR equals the run's" and "a weight is zero"


class PosthocError(ValueError):
    """Bad input: the message is the one line printed before exit 2."""


# --------------------------------------------------------------------------------------------- the weights

@dataclass(frozen=True)
class GridWeights:
    """The weights over a grid of kept checkpoints (units in comments; the fields of :class:`Plan` that do not depend
    on how the target was written)."""

    h: float                           # curvature the weights are exact at, 1/LR units
    lr: float                          # the run's constant LR over the averaged range, LR units
    momentum: float
    departure: int                     # first step whose target LR differs from the run's (= at: never departs)
    at: int                            # the step T whose scheduled iterate the average emulates
    step_weights_from: int             # first step with a non-zero per-step weight
    checkpoint_steps: list[int]        # checkpoints used, ascending; the last one is T
    weights: list[float]               # one per checkpoint step; sum 1 (the bias coefficient included)
    negative_mass: float               # −Σ min(w, 0)
    n_negative: int
    max_spacing: int                   # largest gap between used checkpoints, steps
    alpha_eff_spacing: float           # α_eff·max_spacing at h (α_eff = λh/(1−μ)): ≪ 1 means the grid resolves h
    kernel_rel_error: float            # ‖κ_coarse − κ_target‖₂ / ‖κ_target‖₂ at h (noise after the first checkpoint)
    variance_ratio: float              # Σκ_coarse² / Σκ_target²: the noise variance of the average over the target's


@dataclass(frozen=True)
class Plan(GridWeights):
    """What to average: the weights over the checkpoint grid (:class:`GridWeights`), how the target was written, and
    the checkpoint files."""

    schedule: str = ""                 # the target as typed
    syntax: str = "branch"             # "branch" (empirical.run --branch-schedule) or "schedtext" (theory/schedtext)
    from_step: int | None = None       # the branch point of the branch syntax
    h_source: str = "schedule"         # "--h" or "schedule"
    paths: list[str] = field(default_factory=list)

    def record(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "paths"}
        d["sum_weights"] = float(np.sum(self.weights))
        return d


def checkpoint_weights(step_weights: np.ndarray, first_step: int, steps: Sequence[int]) -> np.ndarray:
    """Per-step weights c_t (t = first_step + i) onto the available checkpoint ``steps`` (ascending): each c_t is split
    linearly between the two checkpoints around t, so the total weight Σc and the mean step Σ c_t t are kept.

    What it costs (theory.md §3.6a): the average can no longer follow weights that change within one spacing K. For
    a direction of curvature h the iterates decorrelate after ~1/α_eff steps; with α_eff·K ≪ 1 neighbouring iterates
    are nearly equal and the split is harmless, with α_eff·K ≳ 1 the checkpoints are independent samples and the
    average keeps more of their noise than the per-step weights would (``variance_ratio`` > 1). Every t must lie in
    [steps[0], steps[-1]]. Example: c = [0, .5, 0, 0, .5] from step 0 onto steps [0, 2, 4] → [.25, .25, .5].
    """
    s = np.asarray(steps, dtype=float)
    c = np.asarray(step_weights, dtype=float)
    t = first_step + np.arange(c.size)
    if c.size and (t[c != 0].min(initial=s[0]) < s[0] or t[c != 0].max(initial=s[-1]) > s[-1]):
        raise ValueError("a non-zero per-step weight lies outside the checkpoint steps")
    out = np.zeros(s.size)
    j = np.clip(np.searchsorted(s, t, side="right") - 1, 0, max(s.size - 2, 0))
    if s.size == 1:
        out[0] = c.sum()
        return out
    lo, hi = s[j], s[j + 1]
    f = np.clip((t - lo) / (hi - lo), 0.0, 1.0)           # share of c_t that goes to the later checkpoint
    np.add.at(out, j, c * (1 - f))
    np.add.at(out, j + 1, c * f)
    return out


def coarse_cost(target_rates: np.ndarray, coarse: np.ndarray, alpha: float, momentum: float) -> tuple[float, float]:
    """(relative kernel error, variance ratio) of the average with per-step weights ``coarse`` (over θ_0..θ_L, zero
    off the checkpoints) against the target with rates α_0..α_{L−1}, both from θ_0 (theory.md §3.6a). The variance
    ratio Σκ_coarse²/Σκ_target² is that of the noise injected after θ_0, for i.i.d. noise of one variance per step."""
    from theory.inverse import average_kernel, schedule_kernel

    w = schedule_kernel(target_rates, momentum)
    k = average_kernel(coarse, alpha, momentum)
    n2 = float(np.dot(w, w))
    if n2 == 0:
        return 0.0, 1.0
    return float(np.linalg.norm(k - w) / math.sqrt(n2)), float(np.dot(k, k) / n2)


def target_lr(cfg: config.RunConfig, schedule: str, from_step: int | None) -> tuple[np.ndarray, str]:
    """LR of every update t < cfg.steps under the target, and which syntax it was written in (module docstring)."""
    if from_step is not None:
        if not 0 <= from_step < cfg.steps:
            raise PosthocError(f"--from {from_step}: the run has steps 0..{cfg.steps - 1}")
        try:
            return schedules.lr_table(cfg, (from_step, schedule)), "branch"
        except config.ConfigError as e:
            raise PosthocError(f"--schedule with --from takes the branch syntax: {e}") from None
    from theory.schedtext import parse_schedule

    if schedule.split(":", 1)[0] in ("half", "scale", "ema", "swa"):   # the kind word only: the text is schedtext's
        raise PosthocError(f"--schedule {schedule!r} is in the branch syntax (empirical.run --branch-schedule): give "
                           f"its branch point with --from STEP")
    try:
        sched = parse_schedule(schedule, cfg.peak_lr, cfg.steps, flag="--schedule")
    except ValueError as e:
        raise PosthocError(str(e)) from None
    return np.asarray(sched.lr_at(np.arange(cfg.steps)), dtype=float), "schedtext"


def _h_from(schedule: str, syntax: str) -> float | None:
    """The curvature H named by ``swa:H`` or ``ema:GAMMA:H`` (branch syntax), else None."""
    if syntax != "branch":
        return None
    return BranchSchedule.parse(schedule).h   # target_lr has parsed it already: no error here


def _constant_end(p: np.ndarray, start: int) -> int:
    """First step t > start with p[t] ≠ p[start] (len(p) if none): the run's LR is p[start] on [start, end)."""
    if start >= p.size:
        return p.size
    off = np.flatnonzero(np.abs(p[start:] - p[start]) > _REL * max(abs(p[start]), 1e-300))
    return int(start + off[0]) if off.size else int(p.size)


def make_plan(cfg: config.RunConfig, ckpt_steps: dict[int, str], schedule: str, from_step: int | None = None,
              at: int | None = None, h: float | None = None) -> Plan:
    """Validate the request and compute the checkpoint weights (no torch, nothing loaded). ``ckpt_steps`` maps each
    kept checkpoint's step to its path. Raises PosthocError (one line) on bad input."""
    if not ckpt_steps:
        raise PosthocError("the run kept no checkpoints (RUN/checkpoints/step_*.pt); train it with "
                           "--checkpoint-every K --checkpoint-keep-every K")
    if cfg.branch_from:
        raise PosthocError("the run is a branch run; post-hoc averaging reads the constant-LR checkpoints of a base "
                           "run")
    q, syntax = target_lr(cfg, schedule, from_step)
    p = schedules.lr_table(cfg)
    named = _h_from(schedule, syntax)
    if h is None and named is None:
        raise PosthocError(f"--schedule {schedule!r}: give --h H (curvature, 1/LR units): the weights are exact at one "
                           f"curvature (theory.md §3.6); swa:H and ema:GAMMA:H name theirs")
    h_used, h_src = (float(h), "--h") if h is not None else (float(named), "schedule")
    if not (math.isfinite(h_used) and h_used > 0):
        raise PosthocError(f"--h {h_used}: the curvature must be finite and > 0")
    g = grid_weights(p, q, sorted(ckpt_steps), h_used, cfg.momentum, at, target=f"--schedule {schedule!r}")
    return Plan(**{f.name: getattr(g, f.name) for f in fields(GridWeights)}, schedule=schedule, syntax=syntax,
                from_step=from_step, h_source=h_src, paths=[ckpt_steps[s] for s in g.checkpoint_steps])



def grid_weights(p: np.ndarray, q: np.ndarray, steps: Sequence[int], h: float, momentum: float,
                 at: int | None = None, *, target: str = "the target", at_flag: str = "--at") -> GridWeights:
    """Weights over the checkpoints at ``steps`` (ascending) whose average emulates, at curvature ``h``, the iterate
    at step ``at`` of a run with the per-update LRs ``q`` (the target), given the LRs ``p`` the run was trained with
    (both tables of the same length n, updates 0..n−1; every step ≤ n). The target departs from the run at the first
    update where they differ; the run's LR must be constant from there to ``at`` (theory.md §3.6a). ``at`` defaults to
    the last checkpoint of that constant stretch. ``target`` and ``at_flag`` name the target and ``at`` in the error
    messages (PosthocError, one line)."""
    from theory.inverse import rate_table_weights

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    n = int(p.size)
    if not steps:
        raise PosthocError("no checkpoint steps given")
    h_used, mu = float(h), momentum
    ckpt = set(steps)
    diff = np.flatnonzero(np.abs(q - p) > _REL * np.maximum(np.abs(p), 1e-300))
    departure = int(diff[0]) if diff.size else n
    end = _constant_end(p, departure) if departure < n else n
    if at is None:
        ok = [s for s in steps if s <= end]
        if not ok:
            raise PosthocError(f"no kept checkpoint at or before step {end} (kept: {_steps_text(steps)})")
        at = ok[-1]
    if at not in ckpt:
        raise PosthocError(f"{at_flag} {at}: no checkpoint at that step (kept: {_steps_text(steps)})")
    lam = float(p[min(departure, at, n - 1)])
    if at <= departure:      # the target equals the run up to T: its iterate is the last checkpoint itself
        c, first = np.array([1.0]), at
        used = [at]
        wts = np.array([1.0])
        kerr, vratio = 0.0, 1.0
    else:
        if at > end:
            raise PosthocError(f"the run's LR is not constant over steps {departure}..{at} (it changes at step {end}): "
                               f"the inverse map reads constant-LR iterates; choose {at_flag} ≤ {end}")
        if lam <= 0:
            raise PosthocError(f"the run's LR is {lam} at step {departure}; the inverse map needs a constant LR > 0")
        rates = q[departure:at] * h_used
        if np.any(~np.isfinite(rates)) or np.any(rates < 0):
            raise PosthocError(f"{target}: the target LR must be finite and >= 0 on steps {departure}..{at}")
        try:
            c = rate_table_weights(rates, lam * h_used, mu)       # over θ_departure..θ_at
        except ValueError as e:
            raise PosthocError(f"{target} is not representable: {e}") from None
        nz = np.flatnonzero(np.abs(c) > _REL * np.max(np.abs(c)))
        first = departure + int(nz[0])
        below = [s for s in steps if s <= first]
        if not below:
            raise PosthocError(f"the average needs iterates from step {first} to {at}; the kept checkpoints start at "
                               f"step {steps[0]} (kept: {_steps_text(steps)}); keep checkpoints from step {first} on")
        used = [s for s in steps if below[-1] <= s <= at]
        wts = checkpoint_weights(c[first - departure:], first, used)
        # the coarse average against the target, both from the first used checkpoint (the run is constant before
        # the departure, so the target's rates there are the run's)
        lo = used[0]
        coarse = np.zeros(at - lo + 1)
        coarse[np.asarray(used) - lo] = wts
        kerr, vratio = coarse_cost(q[lo:at] * h_used, coarse, lam * h_used, mu)
    gaps = np.diff(used)
    neg = wts[wts < -_REL * np.max(np.abs(wts))]
    return GridWeights(h=h_used, lr=lam, momentum=mu, departure=min(departure, at), at=int(at),
                       step_weights_from=int(first), checkpoint_steps=[int(s) for s in used],
                       weights=[float(x) for x in wts], negative_mass=float(-neg.sum()) if neg.size else 0.0,
                       n_negative=int(neg.size), max_spacing=int(gaps.max()) if gaps.size else 0,
                       alpha_eff_spacing=float(lam * h_used / (1 - mu) * (gaps.max() if gaps.size else 0)),
                       kernel_rel_error=kerr, variance_ratio=vratio)


def _steps_text(steps: Sequence[int]) -> str:
    s = list(steps)
    return ", ".join(map(str, s)) if len(s) <= 8 else f"{', '.join(map(str, s[:4]))}, …, {', '.join(map(str, s[-2:]))}"


# ------------------------------------------------------------------------------------------- streaming

def stream_average(paths: Sequence[str | Path], weights: Sequence[float], load: Callable | None = None):
    """Σ_j w_j θ_j of the ``model`` state dicts of checkpoint files, one file loaded at a time (never all in memory).

    Returns (average, last): ``average`` maps every floating entry to its weighted sum (float64, CPU); ``last`` is
    the last file's model state dict (θ_T: its integer entries and, outside bn_mode 'averaged', its BN buffers are
    the ones the average uses; it is also evaluated as ``raw``). Peak memory: the accumulator plus one checkpoint.
    """
    if load is None:
        from empirical.checkpoint import load
    import torch

    from empirical.checkpoint import CheckpointError

    acc, keys, last = None, None, None
    n = len(paths)
    for i, (path, w) in enumerate(zip(paths, weights)):
        state = load(path)
        sd = state["model"]
        if acc is None:
            keys = list(sd)
            acc = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in sd.items() if v.is_floating_point()}
        elif list(sd) != keys:
            raise CheckpointError(f"checkpoint {path}: its model has other entries than the first checkpoint's")
        for k, a in acc.items():
            a.add_(sd[k].to(torch.float64), alpha=float(w))
        if i == n - 1:
            last = sd
        del state, sd            # release this checkpoint before the next one is read
    return acc, last


# ------------------------------------------------------------------------------------------- evaluation

def _evaluate(cfg: config.RunConfig, average: dict, last: dict, device: str, data_dir: str | None) -> dict:
    """Load the average into the run's architecture, set BN as the run did (empirical/bn.py), evaluate it and θ_T on
    the run's fixed batches (empirical.train.fixed_batches: a function of the saved config and seed)."""
    import torch

    import dataclasses

    from empirical import bn, distributed, sampler, task
    from empirical.train import evaluate, fixed_batches

    env = distributed.setup(device, cfg.bf16)
    # the fixed batches use the un-augmented splits and the sampler's order only, so --shift-augment (which wraps
    # data.train) does not change them; data, model and loss are the run's task's (empirical/task.py)
    tk = task.for_config(cfg)
    data = task.load_data(dataclasses.replace(cfg, data_dir=data_dir or cfg.data_dir))
    smp = sampler.EpochSampler(len(data.train), cfg.batch_size, cfg.seed, 0, 1)
    fixed = fixed_batches(cfg, data, smp, env)
    model = task.build_model(cfg, data).to(env.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    buffers = {n for n, _ in model.named_buffers()}

    def call(m, batch):
        with env.ctx:
            return m(batch[0])

    out = {}
    sk = None
    if cfg.sketch_dim:
        from empirical.sketch import CountSketch
        params = list(model.parameters())
        sk = CountSketch([q.shape for q in params], cfg.sketch_dim, [q.device for q in params])
    for name in (POSTHOC, "raw"):
        if name == POSTHOC:   # averaged floats; integer entries, and BN buffers unless bn_mode 'averaged', from θ_T
            sd = {k: (average[k] if k in average and (k not in buffers or cfg.bn_mode == "averaged") else v)
                  for k, v in last.items()}
        else:
            sd = last
        model.load_state_dict(sd)
        if cfg.bn_mode == "recompute":
            bn.recompute_bn(model, fixed["bn"], call_fn=call)
        row = {}
        row["train_loss"], row["train_acc"] = evaluate(model, fixed["train_eval"], env, tk.loss_fn, tk.accuracy)
        row["loss"], row["acc"] = evaluate(model, fixed["test"], env, tk.loss_fn, tk.accuracy)
        if sk is not None:
            row["sketch"] = sk(list(model.parameters()))
        out[name] = row
    out["_env"] = env.info()
    return out


# ------------------------------------------------------------------------------------------- command line

def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m empirical.posthoc", description=__doc__.split("\n\n")[0],
                      epilog=command_note("empirical.posthoc"), formatter_class=DefaultsFormatter)
    p.add_argument("run", help="run directory whose kept checkpoints are averaged (RUN/checkpoints/step_*.pt)")
    p.add_argument("--schedule", required=True,
                   help="target LR schedule: branch syntax (half | scale:F | constant:LR | ema:GAMMA:H | swa:H | "
                        "hyperbolic:TAU) with --from, or theory/schedtext syntax (e.g. linear:start=600) without")
    p.add_argument("--from", dest="from_step", type=int, default=None,
                   help="branch point (step) of a branch-syntax schedule, as in empirical.run --branch-from")
    p.add_argument("--at", type=int, default=None,
                   help="step T whose scheduled iterate is emulated, a kept checkpoint (default: the last one of the "
                        "constant-LR phase the target departs in)")
    p.add_argument("--h", type=float, default=None,
                   help="curvature the weights are exact at, 1/LR units (default: the H of swa:H / ema:GAMMA:H)")
    p.add_argument("--from-report", dest="from_report", default=None, metavar="DIR",
                   help="a python -m compare.report output folder: --schedule ema:GAMMA or swa takes its H from the "
                        "calibration there, exactly as empirical.run --branch-schedule ... --from-report does")
    p.add_argument("--out", default=None,
                   help="run directory to write (default: runs/empirical/<stamp>-<preset>-s<seed>-posthoc-xxxx)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (for the evaluation)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the one in the run's config)")
    return p


def checkpoint_steps(run: Path) -> dict[int, str]:
    """{step: path} of the run's checkpoint files (empirical/checkpoint.py layout)."""
    from empirical.checkpoint import list_checkpoints

    return {int(pth.stem.rsplit("_", 1)[1]): str(pth) for pth in list_checkpoints(run)}   # step_000001200.pt


def main(argv: list[str] | None = None) -> Path:
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise PosthocError(f"{run}: not a run directory (no config.json)")
    doc = rundir.read_config(run, section=False)
    if doc.get("source") != "empirical" or POSTHOC in doc.get("config", {}):
        raise PosthocError(f"{run}: not an empirical training run (source {doc.get('source')!r})")
    cfg = config.from_dict(doc["config"])
    if args.from_report is not None:   # the same completion (and the same H) as a branch run given this report
        args.schedule, note = schedules.branch_schedule_from_report(args.schedule, args.from_report, cfg.ema_every)
        print(note, flush=True)
    plan = make_plan(cfg, checkpoint_steps(run), args.schedule, args.from_step, args.at, args.h)
    if args.out is not None and Path(args.out).exists() and (not Path(args.out).is_dir()
                                                             or any(Path(args.out).iterdir())):
        raise PosthocError(f"--out {args.out}: exists and is not empty; choose a new directory")
    _print_plan(run, plan)
    average, last = stream_average(plan.paths, plan.weights)
    res = _evaluate(cfg, average, last, args.device, args.data_dir)
    env_extra = res.pop("_env")
    for name, r in res.items():
        print(f"  {name:8s} test loss {r['loss']:.6g}  acc {r['acc']:.4f}   train loss {r['train_loss']:.6g}  "
              f"acc {r['train_acc']:.4f}")
    # everything is computed: only now is anything written (bad input above leaves no directory behind)
    out = rundir.new_run_dir("empirical", f"{cfg.preset}-s{cfg.seed}-posthoc", out=args.out)
    resolved = {**doc["config"], POSTHOC: {"source_run": str(run), **plan.record()}}
    rundir.write_config(out, "empirical", resolved,
                        ["python", "-m", "empirical.posthoc", *(sys.argv[1:] if argv is None else argv)])
    rundir.write_env(out, env_extra)
    series = {"eval/step": np.array([plan.at], dtype=np.int64),
              "static/posthoc_checkpoint_steps": np.array(plan.checkpoint_steps, dtype=np.int64),
              "static/posthoc_weights": np.array(plan.weights)}
    for name, r in res.items():
        for split, key in (("test", "loss"), ("test", "acc"), ("train", "loss"), ("train", "acc")):
            series[f"eval/{split}_{key}_{name}"] = np.array([r[key if split == "test" else f"train_{key}"]])
        if "sketch" in r:
            series["sketch/step"] = np.array([plan.at], dtype=np.int64)
            series[f"sketch/{name}"] = r["sketch"][None, :]
    rundir.Trajectory(series).save(out / "trajectory.npz")
    rundir.write_summary(out, "ok", plan.at, eval={n: {k: r[k] for k in ("loss", "acc", "train_loss", "train_acc")}
                                                   for n, r in res.items()},
                         negative_mass=plan.negative_mass, n_negative=plan.n_negative,
                         wall_s=time.perf_counter() - t0)
    print(out, flush=True)
    return out


def _print_plan(run: Path, p: Plan) -> None:
    w = np.asarray(p.weights)
    src = f"from step {p.from_step}, " if p.from_step is not None else ""
    print(f"empirical.posthoc  {run}  target {p.schedule} ({src}departs at step {p.departure}), emulated at step "
          f"{p.at}; h = {p.h:g} ({p.h_source}), λ = {p.lr:g}, μ = {p.momentum:g}, α_eff = "
          f"{p.lr * p.h / (1 - p.momentum):.4g}", flush=True)
    print(f"  checkpoints {_steps_text(p.checkpoint_steps)} ({len(w)}; largest spacing {p.max_spacing} steps, "
          f"α_eff·spacing = {p.alpha_eff_spacing:.3g})")
    print(f"  weights {', '.join(f'{x:.4g}' for x in w) if w.size <= 12 else f'min {w.min():.4g}, max {w.max():.4g}'}"
          f"; sum {w.sum():.6f}; " + (f"NEGATIVE: {p.n_negative} weight(s), mass {p.negative_mass:.4g}"
                                       if p.n_negative else "no negative weight"))
    print(f"  coarse grid vs per-step weights at h: kernel rel. error {p.kernel_rel_error:.3g}, noise variance "
          f"ratio {p.variance_ratio:.4g}", flush=True)


def cli(argv: list[str] | None = None) -> int:
    """The command avglr-posthoc and ``python -m empirical.posthoc``: bad input -> one line on stderr, exit 2."""
    with pipe_safe_stdout():
        try:
            main(argv)
        except OSError as e:   # a checkpoint that cannot be read, a full disk: which file, one line, exit 1
            print(f"empirical.posthoc: error: {rundir.os_error_text(e)}", file=sys.stderr)
            return 1
        except Exception as e:
            if not isinstance(e, _input_errors()):
                raise
            print(f"empirical.posthoc: error: {e}", file=sys.stderr)
            return 2
    return 0


def _input_errors() -> tuple[type, ...]:
    """Exception types that mean bad input (exit 2): ours, and a corrupt checkpoint or a missing data directory
    (looked up only if their torch-importing modules were loaded, as empirical.run does)."""
    found = [PosthocError, config.ConfigError, rundir.RunDirError]
    for mod, name in (("empirical.data", "DataError"), ("empirical.checkpoint", "CheckpointError")):
        if mod in sys.modules:
            found.append(getattr(sys.modules[mod], name))
    return tuple(found)


if __name__ == "__main__":
    sys.exit(cli())
