"""The Python stages of scripts/gpu_check.sh: GPU readiness on ImageNet-shaped synthetic data, no dataset needed.

    python scripts/gpu_check.py throughput --out DIR     # (a) ours with every recording vs a bare loop, (d) memory
    python scripts/gpu_check.py run --out DIR            # (b) python -m empirical.run synthetic-imagenet, (d) memory
    python scripts/gpu_check.py verify RUN_DIR --out DIR --stage NAME   # checks a run written by another process
    torchrun --nproc_per_node=1 scripts/gpu_check.py ddp --out DIR     # the bare loop inside DistributedDataParallel
    python scripts/gpu_check.py summary DIR              # one compact table of every stage; writes DIR/summary.txt

Every stage writes DIR/<stage>.json (what it measured, ``ok``, and the reason when not ok) as soon as it knows it, so
a stage killed by its time limit still leaves what it had. Defaults are the GPU sizes (ResNet-50, 224², B = 256,
bf16, channels_last); ``--device cpu --image-size 32 --arch resnet8 --batch-size 8 --steps 3`` is a seconds-long CPU
smoke test of the same code (tests/empirical/test_synthetic_imagenet.py).

(a) Throughput. Both loops train the same model on the same generated batches (data.SyntheticImages, generated on
the device, same sample order), in this one process, bare / ours / bare. *Bare*: channels_last, bf16 autocast, SGD
(momentum, weight decay, foreach), ``loss.item()`` every step (as torchvision's reference loop logs it). *Ours*:
``empirical.run.main`` itself with the synthetic-imagenet preset, every average on (2 EMAs, SWA, 4 two-point, one
N-point), the imagenet preset's measurement sizes (bank K, fraction, probe LRs, alignment and curvature batches,
BN batches) and cadences chosen so that each measurement fires alone on some steps of the timed window. Each loop is
timed per step (time between consecutive batch requests; every step ends in a device sync). Reported:

* steady ratio: bare step / ours on steps where no measurement is due (what averaging and bookkeeping cost);
* the headline ratio at the imagenet preset's cadences: bare / (ours' steady step + Σ_m extra_m / every_m), extra_m
  = the median extra time of the steps where measurement m alone fires (bank, probe, align, curv), every_m the
  imagenet preset's cadence (steps); the target is >= 0.90. Evaluations (every 5005 steps there) are not included;
* the window ratio: bare / ours averaged over the whole timed window, in which each measurement fires once
  within ``--steps`` + ~10 steps (a dense worst case).

The run inside (a) is stopped at the end of the window (no final evaluation, no checkpoint), so the window is all
that is timed and (a) stays short.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MEASUREMENTS = ("bank", "probe", "align", "curv")
TARGET = 0.90        # throughput ratio ours / bare at the imagenet preset's cadences
GIB = float(1 << 30)


# ----------------------------------------------------------------------------------------------------- helpers

def write_json(out: Path, stage: str, doc: dict) -> None:
    """DIR/<stage>.json, written atomically (a stage killed by its timeout leaves the last complete write)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    os.replace(tmp, out / f"{stage}.json")


def setup_device(name: str):
    """torch.device plus the global flags empirical.distributed.setup sets on CUDA (cudnn autotuning, TF32), set
    here before the bare loop so that both loops run under the same flags."""
    import torch

    dev = torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: CUDA is not available here; use --device cpu for the smoke mode")
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, GiB; None on CPU (no allocator statistics)."""
    import torch

    return torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else None


def device_info(dev) -> dict:
    import torch
    import torchvision

    info = {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(name=p.name, memory_gib=round(p.total_memory / GIB, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=f"{p.major}.{p.minor}")
    return info


def set_image_size(side: int) -> None:
    """load_data('synthetic-imagenet') reads its side from empirical.data.SYNTHETIC_IMAGENET at each call."""
    from empirical import data

    data.SYNTHETIC_IMAGENET["image_size"] = int(side)


def optional_flags() -> list[str]:
    """Flags of RunConfig fields that exist only in some versions of empirical/config.py: branch-point checkpoints
    would write a checkpoint inside the timed window."""
    from dataclasses import fields

    from empirical.config import RunConfig

    names = {f.name for f in fields(RunConfig)}
    return ["--no-checkpoint-branch-points"] if "checkpoint_branch_points" in names else []


# --------------------------------------------------------------------------------------------- (a) throughput

def generator_rate(ds, batch: int, dev, reps: int = 5) -> float:
    """Images per second of data.SyntheticImages.make_batch alone (after one warm-up batch)."""
    ds.make_batch(range(batch))
    sync(dev)
    t = time.perf_counter()
    for r in range(reps):
        ds.make_batch(range((r + 1) * batch, (r + 2) * batch))
    sync(dev)
    return reps * batch / (time.perf_counter() - t)


def bare_loop(a, ds, dev, steps: int) -> dict:
    """Seconds per step of a bare channels_last + bf16 SGD loop on ``ds`` (same model, sampler and optimiser
    settings as ours), per step after ``a.warmup`` warm-up steps; and its peak memory."""
    import torch
    import torch.nn.functional as F

    from empirical.presets import PRESETS
    from empirical.models import build_model
    from empirical.sampler import EpochSampler

    p = PRESETS["synthetic-imagenet"]
    torch.manual_seed(0)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = build_model(a.arch, ds.num_classes, 3, ds.image_size).to(dev).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=p.lr * a.batch_size / 256, momentum=p.momentum,
                          weight_decay=p.weight_decay, foreach=True)
    smp = EpochSampler(len(ds), a.batch_size, 0)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    model.train()
    reset_peak(dev)
    stamps = []
    for step in range(a.warmup + steps + 1):
        stamps.append(time.perf_counter())
        if step == a.warmup + steps:
            break
        x, y = ds.batch(torch.from_numpy(smp.indices(step)), step)
        x = x.contiguous(memory_format=fmt)
        with ctx:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()                      # one device sync per step, as in ours
    sync(dev)
    times = [stamps[s + 1] - stamps[s] for s in range(a.warmup, a.warmup + steps)]
    del model, opt
    return {"step_s": statistics.median(times), "steps": steps, "peak_gib": peak_gib(dev),
            "times_ms": [round(1e3 * x, 2) for x in times]}


def measurement_sizes(light: bool) -> dict:
    """The imagenet preset's measurement sizes (bank, probe, alignment, curvature, BN recomputation), or with
    ``light`` the smallest ones (the CPU smoke mode, which checks the plumbing, not the speed)."""
    from empirical.presets import PRESETS

    names = ("bank_size", "bank_fraction", "probe_etas", "align_batches", "curv_batches", "curv_iters", "bn_batches")
    if light:
        return dict(zip(names, (2, PRESETS["imagenet"].bank_fraction, 3, 1, 1, 2, 2)))
    return {f: getattr(PRESETS["imagenet"], f) for f in names}


class _WindowDone(Exception):
    """Raised from the batch request after the timed window: ends the run without final evaluation or checkpoint."""


def window_plan(a) -> tuple[dict, int]:
    """Cadence (steps) of each measurement in the ours-run, and the step at which the run is stopped.

    The timed window [warmup, stop) starts with ``a.steps`` plain steps; then measurement j fires every p_j steps,
    p_j the j-th prime from warmup + steps on with p_j >= p_{j-1} + 2, and stop = p_4 + 2. So each measurement
    fires at step 0 (a warm-up of its shapes) and alone at p_j, and (once the window is longer than the first prime,
    i.e. on the CPU smoke sizes) at its multiples; two primes share no multiple below their product."""
    primes, k = [], a.warmup + a.steps
    while len(primes) < len(MEASUREMENTS):
        if k > 1 and all(k % d for d in range(2, int(k ** 0.5) + 1)) and (not primes or k >= primes[-1] + 2):
            primes.append(k)
        k += 1
    return dict(zip(MEASUREMENTS, primes)), primes[-1] + 2


def ours_loop(a, dev, tmp: Path) -> dict:
    """empirical.run.main with every recording on, timed per step by wrapping SyntheticImages.batch (the request
    for each training batch), stopped after the window."""
    from empirical import data, run
    from empirical.presets import PRESETS

    imnet = PRESETS["imagenet"]
    every, stop = window_plan(a)
    n = stop + 1                          # the run's length; it is stopped at the request for batch `stop`
    # two-point gaps and the N-point gap: 4 gaps like the imagenet preset, all shorter than the run
    gaps = ",".join(str(g) for g in sorted({max(1, (n - 1) * k // 5) for k in (1, 2, 3, 4)}))
    argv = ["synthetic-imagenet", "--device", str(dev), "--arch", a.arch, "--batch-size", str(a.batch_size),
            "--lr", "0.1", "--lr-ref-batch", "256",
            "--steps", str(n), "--eval-every", str(n), "--schedule", "constant", "--decay-start", "0",
            "--warmup-steps", "0", "--ema-decays", ",".join(map(str, imnet.ema_decays)), "--ema-start", "2",
            "--swa-start", "2", "--two-point-gaps", gaps, "--n-points", "4", "--n-point-gap", str(max(1, n // 5)),
            *[x for f, v in measurement_sizes(a.light).items() for x in (f"--{f.replace('_', '-')}", str(v))],
            "--sketch-dim", str(imnet.sketch_dim), "--log-every", str(imnet.log_every),
            "--max-test", str(a.max_test), "--train-eval-size", str(a.max_test), "--checkpoint-every", "0",
            *[x for m in MEASUREMENTS for x in (f"--{m}-every", str(every[m]))],
            "--channels-last" if a.channels_last else "--no-channels-last",
            "--bf16" if dev.type == "cuda" else "--no-bf16", "--out", str(tmp / "ours"), *optional_flags()]
    stamps: dict[int, float] = {}
    orig = data.SyntheticImages.batch

    def stamped(self, idx, step=0, rank=0):
        stamps[step] = time.perf_counter()
        if step >= stop:
            raise _WindowDone()
        return orig(self, idx, step, rank)

    data.SyntheticImages.batch = stamped
    reset_peak(dev)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            run.main(argv)
        raise RuntimeError("the run ended before the timed window did; was --steps changed by a preset rule?")
    except _WindowDone:
        pass
    finally:
        data.SyntheticImages.batch = orig
    if len(stamps) != stop + 1 or min(stamps) != 0:
        raise RuntimeError(f"got {len(stamps)} batch stamps, expected {stop + 1}: the training loop did not request "
                           f"its batches through SyntheticImages.batch (sampler.train_batches)")
    t = {s: stamps[s + 1] - stamps[s] for s in range(a.warmup, stop)}
    due = {s: [m for m in MEASUREMENTS if s % every[m] == 0] for s in t}
    plain = [t[s] for s in t if not due[s]]
    base = statistics.median(plain)
    extra = {m: max(0.0, statistics.median([t[s] for s in t if due[s] == [m]]) - base)
             for m in MEASUREMENTS if any(due[s] == [m] for s in t)}
    imnet_every = {m: getattr(imnet, f"{m}_every") for m in MEASUREMENTS}
    amortised = base + sum(extra[m] / imnet_every[m] for m in extra if imnet_every[m] > 0)
    return {"steady_step_s": base, "window_step_s": sum(t.values()) / len(t), "imagenet_step_s": amortised,
            "extra_s": extra, "every_in_window": every, "imagenet_every": imnet_every, "timed_steps": len(t),
            "plain_steps": len(plain), "peak_gib": peak_gib(dev), "argv": argv,
            "times_ms": {s: [round(1e3 * t[s], 2), due[s]] for s in t}}


def throughput(a) -> int:
    import torch

    from empirical.data import SYNTHETIC_IMAGENET, SyntheticImages

    out = Path(a.out)
    dev = setup_device(a.device)
    set_image_size(a.image_size)
    doc: dict = {"stage": "throughput", "ok": False, "env": device_info(dev), "arch": a.arch,
                 "batch_size": a.batch_size, "image_size": a.image_size, "target": TARGET}
    write_json(out, "throughput", doc)
    try:
        ds = SyntheticImages(SYNTHETIC_IMAGENET["num_train"], SYNTHETIC_IMAGENET["num_classes"], a.image_size, 0,
                             device=dev)
        doc["generator_img_s"] = generator_rate(ds, a.batch_size, dev)
        probe = [0, 1, len(ds) - 1]                     # the same images generated on the CPU: bit for bit?
        doc["generator_same_on_cpu"] = torch.equal(ds.make_batch(probe)[0].cpu(), ds.to("cpu").make_batch(probe)[0])
        steps = window_plan(a)[1] - a.warmup           # as many timed steps as ours
        doc["bare"] = [bare_loop(a, ds, dev, steps)]
        write_json(out, "throughput", doc)
        with tempfile.TemporaryDirectory() as tmp:
            doc["ours"] = ours_loop(a, dev, Path(tmp))
        write_json(out, "throughput", doc)
        import gc
        gc.collect()                                    # free ours' models before the second bare loop's peak
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        doc["bare"].append(bare_loop(a, ds, dev, steps))   # after ours too: a drift in clocks shows as a spread
        bare = min(b["step_s"] for b in doc["bare"])       # the faster bare run: the stricter ratio
        o = doc["ours"]
        doc.update(bare_step_s=bare, bare_img_s=a.batch_size / bare,
                   ours_img_s_imagenet=a.batch_size / o["imagenet_step_s"],
                   ratio_imagenet=bare / o["imagenet_step_s"], ratio_steady=bare / o["steady_step_s"],
                   ratio_window=bare / o["window_step_s"],
                   generator_share=a.batch_size / doc["generator_img_s"] / bare)
        doc["pass"] = doc["ratio_imagenet"] >= TARGET
        doc["ok"] = math.isfinite(doc["ratio_imagenet"]) and doc["ratio_imagenet"] > 0
    except Exception as e:   # recorded, so that the summary says what failed; the traceback goes to the log
        traceback.print_exc()
        doc["error"] = f"{type(e).__name__}: {e}"
    write_json(out, "throughput", doc)
    if doc["ok"]:
        print(f"throughput ratio ours/bare = {doc['ratio_imagenet']:.3f} at the imagenet preset's cadences "
              f"(target >= {TARGET:.2f}: {'PASS' if doc['pass'] else 'FAIL'}); steady {doc['ratio_steady']:.3f}, "
              f"dense window {doc['ratio_window']:.3f}; bare {doc['bare_img_s']:.0f} img/s, "
              f"ours {doc['ours_img_s_imagenet']:.0f} img/s")
        for m, x in doc["ours"]["extra_s"].items():
            print(f"  {m}: +{x:.3f} s when it fires (every {doc['ours']['imagenet_every'][m]} steps in imagenet)")
        print(f"  generator {doc['generator_img_s']:.0f} img/s ({100 * doc['generator_share']:.1f} % of a bare "
              f"step, in both loops; same images on the CPU: {doc['generator_same_on_cpu']}); peak memory bare "
              f"{fmt_gib(doc['bare'][0]['peak_gib'])}, ours {fmt_gib(doc['ours']['peak_gib'])}")
    return 0 if doc["ok"] else 1


def fmt_gib(x) -> str:
    return "n/a (cpu)" if x is None else f"{x:.2f} GiB"


# ------------------------------------------------------------------------------------------------- (b) the run

def check_run_dir(run_dir: Path, steps: int | None = None) -> dict:
    """What a finished empirical.run directory holds: status, steps, every kind of average evaluated, the bank
    and probe series, the final checkpoint, the first and last training loss. Reads files only (no torch)."""
    import numpy as np

    from common import rundir

    doc: dict = {"run_dir": str(run_dir)}
    missing = [f for f in ("config.json", "env.json", "summary.json", "metrics.csv", "trajectory.npz")
               if not (run_dir / f).is_file()]
    if missing:
        return {**doc, "ok": False, "error": f"missing {', '.join(missing)}"}
    try:
        run = rundir.load_run(run_dir)
    except rundir.RunDirError as e:
        return {**doc, "ok": False, "error": str(e)}
    summary, cfg, z = run.summary, run.config.get("config", {}), run.trajectory
    doc.update(status=summary.get("status"), steps=summary.get("steps"), wall_s=summary.get("wall_s"))
    want = steps if steps is not None else cfg.get("steps")
    variants = cfg.get("variants", [])
    kinds = {k: any(v.startswith(k) for v in variants) for k in ("ema_", "swa", "two_point_", "points_")}
    series = {k: f"{k}/step" in z and len(z[f"{k}/step"]) > 0 for k in ("bank", "probe", "align", "curv")}
    loss = z["train/loss"] if "train/loss" in z else np.array([])
    doc.update(variants=variants, averages=kinds, series=series,
               train_loss_first=float(loss[0]) if len(loss) else None,
               train_loss_last=float(loss[-1]) if len(loss) else None,
               checkpoints=sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")))
    problems = [p for p, bad in ((f"status {doc['status']!r}", doc["status"] != "ok"),
                                 (f"steps {doc['steps']} != {want}", doc["steps"] != want),
                                 ("an average kind missing", not all(kinds.values())),
                                 ("a measurement series missing", not all(series.values())),
                                 ("no checkpoint", not doc["checkpoints"])) if bad]
    doc["ok"] = not problems
    if problems:
        doc["error"] = "; ".join(problems)
    return doc


def run_stage(a) -> int:
    """(b): the synthetic-imagenet preset through empirical.run's own entry point (the function `python -m
    empirical.run` calls), in this process so that its peak GPU memory can be read."""
    from empirical import run

    out = Path(a.out)
    dev = setup_device(a.device)
    set_image_size(a.image_size)
    run_dir = out / "run"
    argv = ["synthetic-imagenet", "--device", str(dev), "--out", str(run_dir), *a.extra]
    doc: dict = {"stage": "run", "ok": False, "argv": ["python", "-m", "empirical.run", *argv]}
    write_json(out, "run", doc)
    reset_peak(dev)
    t = time.perf_counter()
    with open(out / "run.stdout", "w") as log, contextlib.redirect_stdout(log):
        rc = run.cli(argv)
    doc.update(rc=rc, seconds=time.perf_counter() - t, peak_gib=peak_gib(dev))
    doc.update(check_run_dir(run_dir) if rc == 0 else {"error": f"empirical.run exited {rc}"})
    write_json(out, "run", doc)
    print(f"run: rc {rc}, {'ok' if doc['ok'] else 'FAILED: ' + doc.get('error', '')}, {doc['seconds']:.0f} s, "
          f"train loss {doc.get('train_loss_first')} -> {doc.get('train_loss_last')}, "
          f"peak memory {fmt_gib(doc['peak_gib'])}")
    return 0 if doc["ok"] else 1


def verify_stage(a) -> int:
    """A run directory written by another process (the torchrun stage): the same checks as (b)."""
    doc = {"stage": a.stage, **check_run_dir(Path(a.run_dir))}
    write_json(Path(a.out), a.stage, doc)
    print(f"{a.stage}: {'ok' if doc['ok'] else 'FAILED: ' + doc.get('error', '')}")
    return 0 if doc["ok"] else 1


# ------------------------------------------------------------------------------------------- (c) DDP wrapper

def ddp_stage(a) -> int:
    """The bare loop inside DistributedDataParallel, world size from torchrun (1 here). empirical.run itself
    builds no process group at WORLD_SIZE 1, so this is what exercises NCCL and the DDP wrapper on one GPU."""
    import warnings

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from empirical.data import SYNTHETIC_IMAGENET, SyntheticImages
    from empirical.models import build_model
    from empirical.sampler import EpochSampler

    out = Path(a.out)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = setup_device(f"cuda:{local}" if a.device in ("cuda", "auto") and torch.cuda.is_available() else a.device)
    doc: dict = {"stage": "ddp", "ok": False, "world_size": world}
    if rank == 0:
        write_json(out, "ddp", doc)
    if "MASTER_ADDR" not in os.environ:      # started without torchrun: a one-process group of its own
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        ds = SyntheticImages(SYNTHETIC_IMAGENET["num_train"], SYNTHETIC_IMAGENET["num_classes"], a.image_size, 0,
                             device=dev)
        torch.manual_seed(0)
        fmt = torch.channels_last if a.channels_last else torch.contiguous_format
        model = build_model(a.arch, ds.num_classes, 3, a.image_size).to(dev).to(memory_format=fmt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda"
                                                            else None)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
            smp = EpochSampler(len(ds), a.batch_size, 0, rank, world)
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
            reset_peak(dev)
            stamps = []
            for step in range(a.warmup + a.steps + 1):
                stamps.append(time.perf_counter())
                if step == a.warmup + a.steps:
                    break
                x, y = ds.batch(torch.from_numpy(smp.indices(step)), step, rank)
                with ctx:
                    loss = F.cross_entropy(ddp(x.contiguous(memory_format=fmt)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()
            sync(dev)
        step_s = statistics.median(stamps[s + 1] - stamps[s] for s in range(a.warmup, a.warmup + a.steps))
        doc.update(backend=backend, step_s=step_s, img_s=a.batch_size / step_s, peak_gib=peak_gib(dev),
                   warnings=sorted({str(w.message).splitlines()[0][:200] for w in caught}), ok=True)
    except Exception as e:
        traceback.print_exc()
        doc["error"] = f"{type(e).__name__}: {e}"
    finally:
        dist.destroy_process_group()
    if rank == 0:
        write_json(out, "ddp", doc)
        print(f"ddp: {'ok' if doc['ok'] else 'FAILED: ' + doc.get('error', '')}"
              + (f", {doc['img_s']:.0f} img/s, {len(doc['warnings'])} warnings" if doc["ok"] else ""))
    return 0 if doc["ok"] else 1


# ------------------------------------------------------------------------------------------------ summary

def summary_stage(a) -> int:
    """One line per stage from DIR/<stage>.json and DIR/<stage>.rc (exit status and seconds written by the shell
    script); prints it and writes DIR/summary.txt and DIR/summary.json. Exit 0 only if every stage is ok."""
    out = Path(a.dir)
    rows, docs, all_ok = [], {}, True

    def load(name):
        p = out / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def rc_of(name):
        p = out / f"{name}.rc"
        if not p.is_file():
            return None, None
        rc, secs = (p.read_text().split() + ["", ""])[:2]
        return int(rc), secs

    for name, label in (("throughput", "(a)+(d) throughput, all recording vs bare"),
                        ("run", "(b)+(d) empirical.run synthetic-imagenet"),
                        ("ddp_run", "(c) torchrun --nproc_per_node=1 -m empirical.run"),
                        ("ddp", "(c) DDP wrapper, 1 process (NCCL on CUDA)")):
        d, (rc, secs) = load(name), rc_of(name)
        if d is None and rc is None:
            continue
        docs[name] = d
        ok = bool(d and d.get("ok")) and rc in (0, None)
        why = "timed out" if rc in (124, 137) else (d or {}).get("error", f"exit {rc}" if rc else "")
        if name == "throughput" and d and d.get("ok"):
            what = (f"ratio {d['ratio_imagenet']:.3f} (target >= {d['target']:.2f}: "
                    f"{'PASS' if d['pass'] else 'FAIL'}), steady {d['ratio_steady']:.3f}, window "
                    f"{d['ratio_window']:.3f}; bare {d['bare_img_s']:.0f} img/s; generator "
                    f"{100 * d.get('generator_share', math.nan):.1f} % of a step, same on CPU "
                    f"{d.get('generator_same_on_cpu')}; peak bare "
                    f"{fmt_gib(d['bare'][0]['peak_gib'])}, ours {fmt_gib(d['ours']['peak_gib'])}")
        elif name == "run" and d and d.get("ok"):
            what = (f"{d['steps']} steps in {d['seconds']:.0f} s, loss {d['train_loss_first']:.3f} -> "
                    f"{d['train_loss_last']:.3f}, peak {fmt_gib(d['peak_gib'])}")
        elif name == "ddp_run" and d and d.get("ok"):
            what = f"{d['steps']} steps, status {d['status']}"
        elif name == "ddp" and d and d.get("ok"):
            what = f"{d['img_s']:.0f} img/s, {len(d['warnings'])} warnings" + (
                f" ({d['warnings'][0]})" if d["warnings"] else "")
        else:
            what = why or "no result"
        all_ok &= ok
        rows.append(f"{'ok  ' if ok else 'FAIL'} {label:<50} {what}" + (f"  [{secs} s]" if secs else ""))
    env = (docs.get("throughput") or {}).get("env", {})
    head = (f"gpu_check {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: {env.get('name', env.get('device'))}"
            f", torch {env.get('torch')}, torchvision {env.get('torchvision')}")
    text = "\n".join([head, *rows, "ALL OK" if all_ok and rows else "SOME CHECKS FAILED"]) + "\n"
    print(text, end="")
    (out / "summary.txt").write_text(text)
    write_json(out, "summary", {"ok": all_ok and bool(rows), "lines": rows, "stages": docs})
    return 0 if all_ok and rows else 1


# --------------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def sizes(q, steps: int):
        q.add_argument("--out", required=True, help="folder for <stage>.json")
        q.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: smoke mode at tiny sizes)")
        q.add_argument("--arch", default="resnet50", help="a key of empirical.models.ARCHS")
        q.add_argument("--image-size", type=int, default=224, help="side of the synthetic images, pixels")
        q.add_argument("--batch-size", type=int, default=256, help="images per step")
        q.add_argument("--steps", type=int, default=steps, help="timed plain steps per loop")
        q.add_argument("--warmup", type=int, default=10, help="untimed steps before the window")
        q.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last model and inputs (default: on CUDA only; on CPU it is ~10x slower)")

    q = sub.add_parser("throughput", allow_abbrev=False, help="(a) ours with every recording vs a bare loop, same process")
    sizes(q, 30)
    q.add_argument("--max-test", type=int, default=512, help="test / train-eval images of the ours-run")
    q.add_argument("--light", action="store_true", help="smallest measurement sizes instead of the imagenet "
                                                         "preset's (CPU smoke mode)")
    q = sub.add_parser("run", allow_abbrev=False, help="(b) empirical.run synthetic-imagenet; further arguments go to empirical.run")
    q.add_argument("--out", required=True)
    q.add_argument("--device", default="cuda")
    q.add_argument("--image-size", type=int, default=224)
    q = sub.add_parser("verify", help="check a run directory written by another process")
    q.add_argument("run_dir")
    q.add_argument("--out", required=True)
    q.add_argument("--stage", default="ddp_run")
    q = sub.add_parser("ddp", allow_abbrev=False, help="(c) the bare loop in DistributedDataParallel (start with torchrun)")
    sizes(q, 20)
    q = sub.add_parser("summary", help="print and write the summary of a gpu_check output folder")
    q.add_argument("dir")
    a, extra = p.parse_known_args(argv)
    if extra and a.cmd != "run":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    a.extra = extra
    if getattr(a, "channels_last", False) is None:
        a.channels_last = a.device != "cpu"
    return {"throughput": throughput, "run": run_stage, "verify": verify_stage, "ddp": ddp_stage,
            "summary": summary_stage}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
