"""The training loop behind ``python -m empirical.run`` (design.md §3.3-3.6, theory.md §4): data, model, SGD,
averages, every recording, checkpoints, branches. ``empirical.run`` parses and validates the command line without
importing torch and then calls :func:`train`.

Evaluation procedure (docs/run-series.md): every variant — the raw weights included — is evaluated by
``empirical.bn.prepare_variant`` (in ``--bn-mode recompute``: BN statistics recomputed on the same fixed batches);
the raw weights with their training-time running statistics are the variant ``raw_running_bn``. The probes, bank,
alignment and curvature measure the same BN-consistent raw model (``bn.ConsistentRaw``, one recomputation per step
shared with the evaluation at that step).
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from empirical import checkpoint, config, distributed, sampler
from empirical.bn import RAW_RUNNING_BN, ConsistentRaw, prepare_variant
from empirical.recorder import Recorder
from empirical.run import Stopped
from empirical.sketch import CountSketch
from common import rundir


# ------------------------------------------------------------------------------------------------- helpers

def to_device(x, y, env, channels_last: bool):
    x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x), y


@torch.no_grad()
def evaluate(model, batches, env) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over ``batches`` — the one evaluation function
    used for the raw weights and for every averaged variant."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=env.device)
    correct, n = torch.zeros((), dtype=torch.int64, device=env.device), 0
    for x, y in batches:
        with env.ctx:
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    return loss.item() / max(n, 1), correct.item() / max(n, 1)


def evaluation_names(cfg, avg) -> list[str]:
    """Variants evaluated now: raw, raw_running_bn (only in bn_mode 'recompute'; in the other modes the running
    statistics are the procedure itself, so it would equal raw), and every average defined at this step."""
    return ["raw", *([RAW_RUNNING_BN] if cfg.bn_mode == "recompute" else []), *avg.names()]


def evaluate_all(step, cfg, raw_model, eval_model, consistent, avg, fixed, env, rec, dense_only=False) -> None:
    """eval/* for every variant through one procedure (bn.prepare_variant; raw via the per-step cache
    ``consistent``), dist/* and sketch/*. ``dense_only``: a step of the dense window, test split only (train_* NaN)."""
    row = {}
    for name in evaluation_names(cfg, avg):
        model = consistent(raw_model, step) if name == "raw" else prepare_variant(
            avg, name, eval_model, raw_model, cfg.bn_mode, fixed["bn"], call_fn=consistent.call_fn)
        if not dense_only:
            row[f"train_loss_{name}"], row[f"train_acc_{name}"] = evaluate(model, fixed["train_eval"], env)
        row[f"test_loss_{name}"], row[f"test_acc_{name}"] = evaluate(model, fixed["test"], env)
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


def measure(step, cfg, model_at, fixed, lr, x, y, env, rec) -> None:
    """Cheap measurements on θ_step at their cadences (run-series.md bank/probe/align/curv), main rank only.
    ``model_at()`` gives the BN-consistent raw model (evaluated exactly as the variants are); it is called only
    when a measurement is due, since in bn_mode 'recompute' it may cost one BN recomputation."""
    from empirical import measure as M

    due = lambda every: every > 0 and step % every == 0  # noqa: E731
    if not any(due(e) for e in (cfg.bank_every, cfg.probe_every, cfg.align_every, cfg.curv_every)):
        return
    model = model_at()
    if due(cfg.bank_every):
        n = cfg.bank_images                      # the first ceil(f·B) images of each bank batch (config.py)
        losses = lambda batches: M.batch_losses(model, [(x[:n], y[:n]) for x, y in batches])  # noqa: E731
        rec.log("bank", step, train_loss=losses(fixed["bank"]), heldout_loss=losses(fixed["held"]))
    if due(cfg.probe_every):
        etas = M.probe_etas(max(lr, 1e-12), cfg.momentum, n=cfg.probe_etas, lo=cfg.probe_lo, hi=cfg.probe_hi)
        (xb, yb), (xh, yh) = fixed["bank"][0], fixed["held"][0]
        rec.log("probe", step, eta=etas, **M.one_step_probe(model, xb, yb, xh, yh, etas))
    if due(cfg.align_every):
        xd, yd = to_device(x, y, env, cfg.channels_last)
        rec.log("align", step, cos=M.grad_alignment(model, xd, yd, fixed["bank"].head(cfg.align_batches)))
    if due(cfg.curv_every):
        rec.log("curv", step, top_eig=M.top_curvature(model, fixed["bank"].head(cfg.curv_batches),
                                                        iters=cfg.curv_iters, seed=cfg.seed + step))
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
    stride = max(cfg.bank_every, 1)
    used = [min(stride * round((k + 0.5) * cfg.steps / K / stride), cfg.steps - 1) for k in range(K)]
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


def checkpoint_state(step, cfg, raw_model, opt, avg, fixed, rec, ref_loss) -> dict:
    return {"config": config.to_json(cfg), "model": raw_model.state_dict(), "optimizer": opt.state_dict(),
            "averages": avg.state_dict(), "bank_used_at": list(fixed["bank_used_at"]),
            "rng": checkpoint.rng_state(), "recorder": rec.state_dict(), "ref_loss": ref_loss}


def restore(state, raw_model, opt, avg, fixed, rec) -> tuple[int, float | None]:
    raw_model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    avg.load_state_dict(state["averages"])
    if list(state["bank_used_at"]) != list(fixed["bank_used_at"]):
        raise checkpoint.CheckpointError("checkpoint bank steps differ from this run's; was --max-steps changed? "
                                         "resume with the original --max-steps")
    rec.load_state_dict(state["recorder"])
    checkpoint.set_rng_state(state["rng"])
    return int(state["step"]), state["ref_loss"]


class Progress:
    """tqdm bar on a terminal, else one fixed-width row per evaluation (airbench's print_columns)."""

    def __init__(self, start, stop, variants, on):
        self.on, self.variants = on, variants
        self.bar = None
        cols = ["step", "lr", "train_loss", "test_loss", *[f"acc_{v}" for v in variants], "wall_s"]
        self.widths = [max(10, len(c)) for c in cols]
        header = "| " + " | ".join(f"{c:>{w}}" for c, w in zip(cols, self.widths)) + " |"
        if on and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=stop, initial=start, unit="step", dynamic_ncols=True)
            self.bar.write(header)
        elif on:
            print(header, flush=True)

    def step(self, loss):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def row(self, step, lr, rec, wall):
        if not self.on:
            return
        ev, tr = rec.last("eval"), rec.last("train")
        vals = [step, lr, tr.get("loss", math.nan), ev.get("test_loss_raw", math.nan),
                *[ev.get(f"test_acc_{v}", math.nan) for v in self.variants], wall]
        text = "| " + " | ".join(f"{v:>{w}d}" if isinstance(v, int) else f"{v:>{w}.5g}"
                                 for v, w in zip(vals, self.widths)) + " |"
        (self.bar.write(text) if self.bar is not None else print(text, flush=True))

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------------- main

def train(cfg: config.RunConfig, state: dict | None, kind: str, branch_at: int | None,
          argv: list[str] | None = None) -> Path:
    """Run ``cfg`` (as resolved by ``empirical.run.resolve``: kind new / resume / branch, ``state`` the checkpoint
    to start from); returns the run directory, raises ``empirical.run.Stopped`` on divergence or interruption."""
    from empirical.averaging import WeightAverages
    from empirical.data import load_data
    from empirical.models import build_model

    if kind == "resume":  # nothing to do if the run already reached its end
        summary = (Path(cfg.out) / "summary.json")
        s = rundir.read_json(summary) if summary.is_file() else {}
        if s.get("status") == "diverged" or (s.get("status") == "ok" and s.get("steps", -1) >= cfg.stop):
            print(f"{cfg.out}: already finished (status {s['status']} at step {s['steps']}); nothing to resume")
            print(cfg.out)
            return Path(cfg.out)
    env = distributed.setup(cfg.device, cfg.bf16)
    data = load_data(cfg.dataset, cfg.data_dir, seed=cfg.seed, max_train=cfg.max_train, max_test=cfg.max_test)
    if cfg.shift_augment:
        data = with_shift(data, cfg.shift_augment, cfg.seed)
    try:
        smp = sampler.EpochSampler(len(data.train), cfg.batch_size, cfg.seed, env.rank, env.world_size)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    raw_model = build_model(cfg.arch, data.num_classes, data.in_channels, data.image_size).to(env.device)
    # eval_model receives each average; bn_model the raw weights with recomputed BN (cached per step, shared by the
    # evaluation and the measurements at that step): two extra weight copies
    eval_model, bn_model = (build_model(cfg.arch, data.num_classes, data.in_channels, data.image_size).to(env.device)
                            for _ in range(2))
    if cfg.channels_last:
        raw_model, eval_model, bn_model = (m.to(memory_format=torch.channels_last)
                                           for m in (raw_model, eval_model, bn_model))
    model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=[env.device.index] if env.is_cuda
                                                      else None) if env.ddp else raw_model
    opt = torch.optim.SGD(raw_model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, foreach=True)
    lrs = config.lr_table(cfg, (branch_at, cfg.branch_schedule) if branch_at is not None else None).tolist()
    avg = WeightAverages(raw_model, ema_decays=cfg.ema_decays, ema_start=cfg.ema_start, ema_every=cfg.ema_every,
                         swa_start=cfg.swa_start, swa_every=cfg.swa_every, two_point_gaps=cfg.two_point_gaps,
                         n_points=cfg.n_points, n_point_gap=cfg.n_point_gap, eval_every=cfg.eval_every,
                         average_buffers=cfg.bn_mode == "averaged", total_steps=cfg.stop,
                         extra_eval_steps=cfg.dense_eval_steps())
    variants = ["raw", *([RAW_RUNNING_BN] if cfg.bn_mode == "recompute" else []), *avg.all_names()]
    dense = set(cfg.dense_eval_steps())
    fixed = fixed_batches(cfg, data, smp, env)
    consistent = ConsistentRaw(bn_model, cfg.bn_mode, fixed["bn"], call_fn=lambda m, batch: _ctx_call(m, batch[0], env))
    if cfg.sketch_dim:
        params = list(raw_model.parameters())
        fixed["sketch"] = CountSketch([p.shape for p in params], cfg.sketch_dim, [p.device for p in params])
    run_dir = Path(cfg.out) if cfg.out else None
    if env.is_main and kind != "resume":
        run_dir = rundir.new_run_dir("empirical", f"{cfg.preset}-s{cfg.seed}", out=cfg.out)
    rec = Recorder(run_dir if env.is_main else None,
                   [f"{s}_{m}_{v}" for v in variants for s in ("test", "train") for m in ("loss", "acc")])
    start, ref_loss = 0, None
    if kind == "resume":
        state, path = checkpoint.load_latest(run_dir)
        print(f"resuming {run_dir} from {path.name if path else 'the start (no valid checkpoint)'}", flush=True)
    if state is not None:
        start, ref_loss = restore(state, raw_model, opt, avg, fixed, rec)
    rec.set_static("bank_used_at", [u if u < cfg.stop else -1 for u in fixed["bank_used_at"]])
    resolved = {**cfg.to_dict(), "averaging": avg.config(), "variants": variants, "steps_per_epoch":
                smp.steps_per_epoch, "schedule_params": config.build_schedule(cfg).params(), "data": data.describe(),
                "branch_step": branch_at, "bank_used_at": fixed["bank_used_at"]}
    if env.is_main:
        print(json.dumps(rundir.json.loads(rundir.to_json_text(resolved)), separators=(",", ":")), flush=True)
        if kind != "resume" or not (run_dir / "env.json").exists():
            rec.write_start(resolved, ["python", "-m", "empirical.run", *(sys.argv[1:] if argv is None else argv)],
                            env.info())
        rec.rewrite_metrics()
    stop_flag = {"interrupted": False}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in handlers:
        signal.signal(s, lambda *_: stop_flag.update(interrupted=True))
    progress = Progress(start, cfg.stop, variants, env.is_main)
    t0, status, last_finite, step, lv = time.perf_counter(), "ok", {}, start - 1, math.nan

    def save(step):  # checkpoint + files, main rank only
        if env.is_main:
            checkpoint.save(run_dir, step, checkpoint_state(step, cfg, raw_model, opt, avg, fixed, rec, ref_loss),
                            keep_every=cfg.checkpoint_keep_every)

    def write(status, step, **extra):
        rec.write(status, step, eval=rec.final_eval(variants), wall_s=time.perf_counter() - t0, **extra)

    if start == 0 and env.is_main:
        evaluate_all(0, cfg, raw_model, eval_model, consistent, avg, fixed, env, rec)
        write("running", 0)
        rec.append_metrics()
    try:
        model.train()
        for step, x, y in sampler.train_batches(data.train, smp, start, cfg.stop, cfg.workers, env.is_cuda):
            if env.is_main:
                measure(step, cfg, lambda: consistent(raw_model, step), fixed, lrs[step], x, y, env,
                        rec)  # on θ_step, before update `step`
            x, y = to_device(x, y, env, cfg.channels_last)
            for g in opt.param_groups:
                g["lr"] = lrs[step]
            with env.ctx:
                loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg.update(raw_model, step + 1)
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
            progress.step(lv)
            done = step + 1
            regular = done % cfg.eval_every == 0 or done == cfg.stop
            if (regular or done in dense) and env.is_main:
                evaluate_all(done, cfg, raw_model, eval_model, consistent, avg, fixed, env, rec,
                             dense_only=not regular)
                rec.append_metrics()
                if regular:   # the files and the progress row at the regular cadence only
                    write("running", done)
                    progress.row(done, lrs[step], rec, time.perf_counter() - t0)
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.stop or interrupted:
                save(done)
            if interrupted:
                status = "interrupted"
                break
    finally:
        progress.close()
        for s, h in handlers.items():
            signal.signal(s, h)
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
        print(run_dir, flush=True)
    return run_dir


