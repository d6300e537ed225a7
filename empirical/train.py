"""The training loop behind ``python -m empirical.run`` (theory.md §4): data, model, SGD,
averages, every recording, checkpoints, branches. ``empirical.run`` parses and validates the command line without
importing torch and then calls :func:`train`.

Evaluation procedure (docs/run-series.md): every variant — the raw weights included — is evaluated by
``empirical.bn.prepare_variant`` (in ``--bn-mode recompute``: BN statistics recomputed on the same fixed batches);
the raw weights with their training-time running statistics are the variant ``raw_running_bn``. The probes, bank,
alignment and curvature measure the same BN-consistent raw model (``bn.ConsistentRaw``, one recomputation per step
shared with the evaluation at that step).

The task (empirical/task.py) gives the data, the model and the loss: cross-entropy on the classification datasets,
the exact quadratic of docs/theory.md §2.1 on ``quadratic`` (empirical/quadratic.py; with --drift its training minima
move with the step, in the data).

Console output (header, progress rows with every variant's test loss, final table): ``empirical.console``. The
last stdout line is the run directory. SIGINT, SIGTERM and SIGHUP (a closed ssh session) end the run as
"interrupted" with a resumable checkpoint.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from empirical import checkpoint, config, console, distributed, sampler, schedules, task
from empirical.cadence import Cadence, bank_uses
from empirical.bn import ConsistentRaw, evaluated_variants, prepare_variant
from empirical.recorder import Recorder
from empirical.stopped import Stopped
from empirical.sketch import CountSketch
from common import prediction, rundir


# ------------------------------------------------------------------------------------------------- helpers

@dataclass
class TrainState:
    """What the evaluation, the measurements and the checkpoints of one run share (instead of 8-9 positional
    arguments): the config, the device env, the raw model (the one trained; DDP wraps it separately), the scratch
    model each average is copied into (``eval_model``), the per-step BN-consistent raw model (``consistent``), the
    averages, the fixed batches (``fixed_batches``), the recorder, the optimiser, the evaluated variant names, and
    the task's evaluation loss (``loss_fn``, None = mean cross-entropy) and whether accuracy means anything."""

    cfg: config.RunConfig
    env: Any = None
    raw_model: torch.nn.Module | None = None
    eval_model: torch.nn.Module | None = None
    consistent: ConsistentRaw | None = None
    avg: Any = None                          # empirical.averaging.WeightAverages
    fixed: dict = field(default_factory=dict)
    rec: Any = None                          # Recorder (or anything with its ``log``)
    opt: torch.optim.Optimizer | None = None
    variants: list[str] = field(default_factory=list)
    loss_fn: Callable | None = None
    accuracy: bool = True
    cadence: Cadence | None = None           # when evaluations and measurements are due (default: from ``cfg``)

    def __post_init__(self):
        if self.cadence is None:
            self.cadence = Cadence.of(self.cfg)


def to_device(x, y, env, channels_last: bool):
    x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x), y


def evaluate(model, batches, env, loss_fn=None, accuracy: bool = True) -> tuple[float, float]:
    """Mean loss (``loss_fn``, default cross-entropy) and accuracy (NaN unless ``accuracy``) of ``model`` (eval mode)
    over ``batches`` under the run's autocast (empirical.measure.evaluate, the one evaluation function)."""
    from empirical.measure import evaluate as _evaluate

    loss, acc = _evaluate(model, batches, ctx=env.ctx, loss_fn=loss_fn)
    return loss, acc if accuracy else math.nan


def evaluation_names(cfg, avg) -> list[str]:
    """Variants evaluated now (empirical.bn.evaluated_variants): raw, raw_running_bn, every average defined now."""
    return evaluated_variants(cfg.bn_mode, avg.names())


def evaluate_all(ts: TrainState, step: int, dense_only: bool = False) -> None:
    """eval/* for every variant through one procedure (bn.prepare_variant; raw via the per-step cache
    ``consistent``), dist/* and sketch/*. ``dense_only``: a step of the dense window, test split only (train_* NaN)."""
    cfg, raw_model, avg, fixed, env, rec, consistent = ts.cfg, ts.raw_model, ts.avg, ts.fixed, ts.env, ts.rec, \
        ts.consistent
    row = {}
    for name in evaluation_names(cfg, avg):
        model = consistent(raw_model, step) if name == "raw" else prepare_variant(
            avg, name, ts.eval_model, raw_model, cfg.bn_mode, fixed["bn"], call_fn=consistent.call_fn)
        if not dense_only:
            row[f"train_loss_{name}"], row[f"train_acc_{name}"] = evaluate(model, fixed["train_eval"], env,
                                                                           ts.loss_fn, ts.accuracy)
        row[f"test_loss_{name}"], row[f"test_acc_{name}"] = evaluate(model, fixed["test"], env, ts.loss_fn,
                                                                     ts.accuracy)
    rec.log("eval", step, **row)
    rec.log("dist", step, **avg.distances(raw_model))
    if "sketch" in fixed:   # S θ of raw and each defined average: distances across runs (branch vs parent average)
        sk = fixed["sketch"]
        rec.log("sketch", step, raw=sk(list(raw_model.parameters())),
                **{name: sk(avg.parameters_of(name)) for name in avg.names()})
    raw_model.train()


def _ctx_call(m, x, env):
    with env.ctx:
        return m(x)


def measure(step: int, ts: TrainState, lr: float, x, y, model_at: Callable[[], torch.nn.Module] | None = None) -> None:
    """Cheap measurements on θ_step at their cadences (run-series.md bank/probe/align/curv), main rank only; ``x, y``
    the batch of update ``step`` (the alignment's g_B), ``lr`` its LR (the probe's η grid). ``model_at()`` gives the
    BN-consistent raw model (evaluated exactly as the variants are; default ``ts.consistent(ts.raw_model, step)``);
    it is called only when a measurement is due, since in bn_mode 'recompute' it may cost one BN recomputation."""
    from empirical import measure as M

    cfg, fixed, env, rec, loss_fn = ts.cfg, ts.fixed, ts.env, ts.rec, ts.loss_fn
    if model_at is None:
        model_at = lambda: ts.consistent(ts.raw_model, step)  # noqa: E731

    due = ts.cadence.measurements(step)
    if not due:
        return
    model = model_at()
    if "bank" in due:
        n = cfg.bank_images                      # the first ceil(f·B) images of each bank batch (config.py)
        k = len(fixed["bank"])
        losses = M.batch_losses(model, [(x[:n], y[:n]) for x, y in (*fixed["bank"], *fixed["held"])],
                                loss_fn=loss_fn)        # training and held-out batches in one call
        rec.log("bank", step, train_loss=losses[:k], heldout_loss=losses[k:])
    if "probe" in due:
        etas = M.probe_etas(max(lr, 1e-12), cfg.momentum, n=cfg.probe_etas, lo=cfg.probe_lo, hi=cfg.probe_hi)
        (xb, yb), (xh, yh) = fixed["bank"][0], fixed["held"][0]
        rec.log("probe", step, eta=etas, **M.one_step_probe(model, xb, yb, xh, yh, etas, loss_fn=loss_fn))
    if "align" in due:
        xd, yd = to_device(x, y, env, cfg.channels_last)
        rec.log("align", step, cos=M.grad_alignment(model, xd, yd, fixed["bank"].head(cfg.align_batches),
                                                    loss_fn=loss_fn))
    if "curv" in due:
        rec.log("curv", step, top_eig=M.top_curvature(model, fixed["bank"].head(cfg.curv_batches),
                                                        iters=cfg.curv_iters, seed=cfg.seed + step, loss_fn=loss_fn))
    model.train()


def with_shift(data, pad: int, seed: int):
    """``data`` whose training set is randomly shifted by up to ``pad`` pixels (train_eval, test stay plain)."""
    import dataclasses

    base = sampler.in_memory(data.train)
    if base is None or data.train is not data.train_eval:
        raise config.ConfigError(f"--shift-augment applies to the in-memory datasets (digits, mnist, smoke); "
                                 f"{data.name} has its own augmentation: use --shift-augment 0")
    fill = base[0].amin(dim=(0, 2, 3))   # per-channel minimum = the background of digits / MNIST after normalising
    details = {**data.details, "augmentation": f"random shift of up to {pad} px per axis (border = channel minimum "
                                               f"{[round(float(f), 4) for f in fill]}), seeded by (seed, step, rank)"}
    return dataclasses.replace(data, train=sampler.RandomShift(data.train, pad, fill, seed), details=details)


def fixed_batches(cfg, data, smp, env) -> dict:
    """Fixed, un-augmented batches: the bank (K training batches that update ``bank_used_at[k]`` trains on, and K
    held-out test batches), BN-recompute batches, and the train-eval / test sets for evaluation."""
    K, B = cfg.bank_size, cfg.batch_size
    used = bank_uses(cfg)
    rng = np.random.default_rng([cfg.seed, 7])
    n_test, n_tr = len(data.test), len(data.train_eval)
    held = ([c for c in np.split(rng.permutation(n_test)[:K * B], K)] if K * B <= n_test
            else [rng.permutation(n_test)[:min(B, n_test)] for _ in range(K)])
    bn = np.split(rng.permutation(n_tr)[:min(cfg.bn_batches * B, n_tr // B * B)], min(cfg.bn_batches, n_tr // B))
    tr_eval = np.sort(rng.permutation(n_tr)[:cfg.train_eval_size]) if 0 < cfg.train_eval_size < n_tr \
        else np.arange(n_tr)
    eb = max(B, 256)
    mk = lambda ds, chunks: sampler.FixedBatches(ds, chunks, env.device, cfg.channels_last)  # noqa: E731
    return {"bank_used_at": used, "bank": mk(data.train_eval, [smp.global_indices(u) for u in used]),
            "held": mk(data.test, held), "bn": mk(data.train_eval, bn),
            "train_eval": mk(data.train_eval, [tr_eval[a:a + eb] for a in range(0, len(tr_eval), eb)]),
            "test": mk(data.test, [np.arange(a, min(a + eb, n_test)) for a in range(0, n_test, eb)])}


def checkpoint_state(ts: TrainState, ref_loss: float | None) -> dict:
    """Everything a resume needs (checkpoint.save adds the step): config, weights, optimiser, averages, bank steps,
    RNG states, the recorder's buffers, and the reference loss of the divergence test."""
    return {"config": config.to_json(ts.cfg), "model": ts.raw_model.state_dict(), "optimizer": ts.opt.state_dict(),
            "averages": ts.avg.state_dict(), "bank_used_at": list(ts.fixed["bank_used_at"]),
            "rng": checkpoint.rng_state(), "recorder": ts.rec.state_dict(), "ref_loss": ref_loss}


def restore(state: dict, ts: TrainState) -> tuple[int, float | None]:
    """Load a :func:`checkpoint_state` into ``ts``; returns (step, ref_loss)."""
    ts.raw_model.load_state_dict(state["model"])
    ts.opt.load_state_dict(state["optimizer"])
    ts.avg.load_state_dict(state["averages"])
    if list(state["bank_used_at"]) != list(ts.fixed["bank_used_at"]):
        raise checkpoint.CheckpointError("checkpoint bank steps differ from this run's; was --max-steps changed? "
                                         "resume with the original --max-steps")
    ts.rec.load_state_dict(state["recorder"])
    checkpoint.set_rng_state(state["rng"])
    return int(state["step"]), state["ref_loss"]


# Signals that end a run as "interrupted" with a resumable checkpoint: Ctrl-C, kill / a scheduler's stop, and a
# closed terminal or ssh session (SIGHUP, where the platform has it).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _stop_handler(flag: dict) -> Callable:
    def handler(signum, _frame):
        flag["interrupted"] = True
        if signum == getattr(signal, "SIGHUP", None):   # the terminal is gone: writes to it would fail (EIO) and
            devnull = os.open(os.devnull, os.O_WRONLY)  # end the run before its checkpoint; files are the record
            for fd in (1, 2):
                try:
                    if os.isatty(fd):
                        os.dup2(devnull, fd)
                except OSError:
                    pass
            os.close(devnull)
    return handler


def tensorboard_available() -> None:
    """Raise ConfigError (exit 2, one line, nothing written) when --tensorboard is asked for without the package."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as e:
        why = " ".join(str(e).split())   # one line, whatever the import error says
        raise config.ConfigError(f"--tensorboard needs the tensorboard package ({why}); install the optional extra "
                                 f"(pip install 'avglr[tensorboard]', or make setup) or drop --tensorboard") from None


# --------------------------------------------------------------------------------------------------- main

@dataclass
class Session:
    """Everything the loop needs, built by :func:`setup`: the shared state ``ts``, the (possibly DDP-wrapped) model
    that is trained, the data and its sampler, the task, the LR of every update, the run directory, the step to start
    from and the divergence reference loss (the first training loss)."""

    ts: TrainState
    model: torch.nn.Module
    data: Any
    smp: Any
    tk: Any
    lrs: list[float]
    run_dir: Path | None
    start: int
    ref_loss: float | None


def already_finished(cfg: config.RunConfig) -> bool:
    """A --resume of a run that already reached its end (or diverged): say so; nothing to do."""
    summary = Path(cfg.out) / "summary.json"
    s = rundir.read_json(summary) if summary.is_file() else {}
    if s.get("status") == "diverged" or (s.get("status") == "ok" and s.get("steps", -1) >= cfg.stop):
        print(f"{cfg.out}: already finished (status {s['status']} at step {s['steps']}); nothing to resume")
        print(cfg.out)
        return True
    return False


def setup(cfg: config.RunConfig, state: dict | None, kind: str, branch_at: int | None,
          argv: list[str] | None = None) -> Session:
    """Device, data, models, optimiser, LR table, averages, fixed batches, recorder, checkpoint restore, and the
    run directory's config.json / env.json (main rank): everything before the first update."""
    from empirical.averaging import WeightAverages

    if cfg.tensorboard:
        tensorboard_available()
    env = distributed.setup(cfg.device, cfg.bf16)
    data = task.load_data(cfg)
    tk = task.for_config(cfg)
    if cfg.shift_augment:
        data = with_shift(data, cfg.shift_augment, cfg.seed)
    try:
        smp = sampler.EpochSampler(len(data.train), cfg.batch_size, cfg.seed, env.rank, env.world_size)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    raw_model = task.build_model(cfg, data).to(env.device)
    # eval_model receives each average; bn_model the raw weights with recomputed BN (cached per step, shared by the
    # evaluation and the measurements at that step): two extra weight copies
    eval_model, bn_model = (task.build_model(cfg, data).to(env.device) for _ in range(2))
    if cfg.channels_last:
        raw_model, eval_model, bn_model = (m.to(memory_format=torch.channels_last)
                                           for m in (raw_model, eval_model, bn_model))
    model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=[env.device.index] if env.is_cuda
                                                      else None) if env.ddp else raw_model
    opt = torch.optim.SGD(raw_model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, foreach=True)
    lrs = schedules.lr_table(cfg, (branch_at, cfg.branch_schedule) if branch_at is not None else None).tolist()
    dense_steps = cfg.dense_eval_steps()   # the dense test-split window (computed once; the averages keep its lags)
    avg = WeightAverages(raw_model, cfg.averages(), eval_every=cfg.eval_every,
                         average_buffers=cfg.bn_mode == "averaged", total_steps=cfg.stop,
                         extra_eval_steps=dense_steps)
    variants = evaluated_variants(cfg.bn_mode, avg.all_names())
    fixed = fixed_batches(cfg, data, smp, env)
    consistent = ConsistentRaw(bn_model, cfg.bn_mode, fixed["bn"], call_fn=lambda m, batch: _ctx_call(m, batch[0], env))
    if cfg.sketch_dim:
        params = list(raw_model.parameters())
        fixed["sketch"] = CountSketch([p.shape for p in params], cfg.sketch_dim, [p.device for p in params])
    run_dir = Path(cfg.out) if cfg.out else None
    if env.is_main and kind != "resume":
        run_dir = rundir.new_run_dir("empirical", f"{cfg.preset}-s{cfg.seed}", out=cfg.out)
    rec = Recorder(run_dir if env.is_main else None,
                   [f"{s}_{m}_{v}" for v in variants for s in ("test", "train") for m in ("loss", "acc")],
                   tensorboard=cfg.tensorboard)
    ts = TrainState(cfg=cfg, env=env, raw_model=raw_model, eval_model=eval_model, consistent=consistent, avg=avg,
                    fixed=fixed, rec=rec, opt=opt, variants=variants, loss_fn=tk.loss_fn, accuracy=tk.accuracy)
    start, ref_loss = 0, None
    if kind == "resume":
        state, path = checkpoint.load_latest(run_dir)
        print(f"resuming {run_dir} from {path.name if path else 'the start (no valid checkpoint)'}", flush=True)
    if state is not None:
        start, ref_loss = restore(state, ts)
    rec.set_static("bank_used_at", [u if u < cfg.stop else -1 for u in fixed["bank_used_at"]])
    resolved = {**cfg.to_dict(), "averaging": avg.config(), "variants": variants, "steps_per_epoch":
                smp.steps_per_epoch, "schedule_params": schedules.build_schedule(cfg).params(), "data": data.describe(),
                "branch_step": branch_at, "bank_used_at": fixed["bank_used_at"],
                "prediction_sha256": prediction.sha256_of(cfg.prediction) if cfg.prediction else None}
    if cfg.dataset == "quadratic":   # what compare/ must recover (empirical/quadratic.py)
        from empirical import quadratic
        resolved["truth"] = quadratic.truth(cfg)
    if env.is_main:
        # a short header on stdout; the whole resolved config is in config.json
        print(console.header(cfg, data.describe(), sum(p.numel() for p in raw_model.parameters()), env.info(),
                             run_dir, kind, start, variants), flush=True)
        if kind != "resume" or not (run_dir / "env.json").exists():
            rec.write_start(resolved, ["python", "-m", "empirical.run", *(sys.argv[1:] if argv is None else argv)],
                            env.info())
        rec.rewrite_metrics()
    return Session(ts=ts, model=model, data=data, smp=smp, tk=tk, lrs=lrs, run_dir=run_dir, start=start,
                   ref_loss=ref_loss)


def train(cfg: config.RunConfig, state: dict | None, kind: str, branch_at: int | None,
          argv: list[str] | None = None) -> Path:
    """Run ``cfg`` (as resolved by ``empirical.run.resolve``: kind new / resume / branch, ``state`` the checkpoint
    to start from); returns the run directory, raises ``empirical.stopped.Stopped`` on divergence or interruption.
    :func:`setup` builds everything; the loop below is one update per batch, then whatever is due at that step."""
    if kind == "resume" and already_finished(cfg):
        return Path(cfg.out)
    se = setup(cfg, state, kind, branch_at, argv)
    ts, env, rec, avg, opt, lrs, variants = se.ts, se.ts.env, se.ts.rec, se.ts.avg, se.ts.opt, se.lrs, se.ts.variants
    ref_loss, run_dir = se.ref_loss, se.run_dir
    stop_flag = {"interrupted": False}
    # a signal the caller ignores stays ignored: under `nohup` (SIGHUP = SIG_IGN) a closed session must not stop it
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    for s in handlers:
        signal.signal(s, _stop_handler(stop_flag))
    progress = console.Progress(cfg.stop, variants, on=env.is_main, eval_every=cfg.eval_every)
    t0, status, last_finite, step, lv = time.perf_counter(), "ok", {}, se.start - 1, math.nan

    def save(step):  # checkpoint + files, main rank only
        if env.is_main:
            checkpoint.save(run_dir, step, checkpoint_state(ts, ref_loss), keep_every=cfg.checkpoint_keep_every,
                            keep_steps=cfg.branch_points())   # EMA/SWA/decay starts: kept for --branch-from

    def write(status, step, **extra):
        rec.write(status, step, eval=rec.final_eval(variants), wall_s=time.perf_counter() - t0, **extra)

    try:
        if se.start == 0 and env.is_main:
            evaluate_all(ts, 0)
            write("running", 0)
            rec.append_metrics()
        progress.begin(se.start, rec)   # after the step-0 evaluation: the bar and the ETA measure training
        se.model.train()
        for step, x, y in sampler.train_batches(se.data.train, se.smp, se.start, cfg.stop, cfg.workers, env.is_cuda):
            if env.is_main:
                measure(step, ts, lrs[step], x, y)  # on θ_step, before update `step`
            x, y = to_device(x, y, env, cfg.channels_last)
            for g in opt.param_groups:
                g["lr"] = lrs[step]
            with env.ctx:
                loss = se.tk.train_loss(se.model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg.update(ts.raw_model, step + 1)
            lv = loss.item()
            ref_loss = lv if ref_loss is None else ref_loss
            if step % cfg.log_every == 0:
                rec.log("train", step, loss=lv, lr=lrs[step])
            bad = not math.isfinite(lv) or lv > cfg.diverge_factor * ref_loss
            diverged, interrupted = distributed.broadcast_flags([bad, stop_flag["interrupted"]], env)
            if diverged:
                status, last_finite = "diverged", {**last_finite, "eval": rec.final_eval(variants)}
                break
            last_finite = {"step": step, "train_loss": lv}
            done = step + 1
            progress.step(done, lv, lrs[step])
            due = ts.cadence.evaluation(done)
            if due and env.is_main:
                evaluate_all(ts, done, dense_only=due != "regular")
                rec.append_metrics()
                if due == "regular":   # the files and the progress row at the regular cadence only
                    write("running", done)
                    progress.row(done, lrs[step], rec)
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.stop or interrupted \
                    or done in cfg.branch_points():
                save(done)
            if interrupted:
                status = "interrupted"
                break
    finally:
        progress.close()
        rec.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    return finish(se, status, step, lv, last_finite, write)


def finish(se: Session, status: str, step: int, lv: float, last_finite: dict, write: Callable) -> Path:
    """The run's last summary.json, the teardown, and the outcome: the run directory, or Stopped (diverged: exit 3;
    interrupted: exit 130, resumable)."""
    cfg, env, rec, variants, run_dir = se.ts.cfg, se.ts.env, se.ts.rec, se.ts.variants, se.run_dir
    if env.is_main:
        if status == "diverged":
            write("diverged", step, diverged_at=step, last_finite=last_finite)
        else:
            write(status, step + 1 if status == "interrupted" else cfg.stop)
    distributed.barrier(env)
    distributed.teardown(env)
    if status != "ok":
        msg = (f"diverged at step {step} (loss {lv:.4g}); summary.json has status 'diverged'" if status == "diverged"
               else f"interrupted after step {step + 1}; continue with --out {run_dir} --resume")
        raise Stopped(run_dir, status, 3 if status == "diverged" else 130, msg)
    if env.is_main:
        print(console.summary(rec.final_eval(variants), int(rec.last("eval").get("step", cfg.stop)), len(se.data.test),
                              run_dir), flush=True)
        print(run_dir, flush=True)
    return run_dir
