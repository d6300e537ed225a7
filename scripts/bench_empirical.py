"""Speed of empirical.run's training loop, measured side by side in one process on the same model and batches.

    .venv/bin/python scripts/bench_empirical.py                 # CPU: resnet20, synthetic 32x32, batch 64
    .venv/bin/python scripts/bench_empirical.py --steps 40      # longer = less noise

(a) recorder overhead: our loop with the measurements of a real run (a fixed bank of K = 4 training batches and
    4 held-out batches every 10 steps, of which the default --bank-fraction 0.25 records the first B/4 images, or
    whole batches; two EMAs; two two-point averages) over the same loop with every measurement and average off;
    target <= 10 % (this configuration recomputes BN at every bank step: --bank-span 0). Also timed: one eval-mode forward of a batch, whose ratio r to a training step gives the bank's
    unavoidable cost 2·K·(N/B)·r/10 (each recorded image is one eval-mode forward).
(b) throughput: our loop (all measurements off) over a plain torchvision-reference-style loop (DataLoader over the
    same tensors, model(x), cross-entropy, zero_grad, backward, step, loss.item()); target >= 1.0x. Three pairs:
    each as it ships (ours in channels_last as the cifar/imagenet presets run, the reference contiguous as
    torchvision's reference script runs), and both loops in the same memory format (contiguous; channels_last),
    which isolates the loop's own cost.
(d) what the two-point calibration costs (compare/pairs.py, theory.md §3.8a): the digits preset as shipped (lag grid
    10-500 steps, test split of every variant every 10 steps in 100-1200, BN-consistent raw weights) against the
    same preset with the previous recordings (two-point gaps 50 and 300, no dense window), the training-loop wall
    time of real digits runs (summary.json wall_s), interleaved, best of --digits-repeats; skip with
    --digits-repeats 0.
(c) on CUDA only: ResNet-50 on synthetic 224x224 (bf16 autocast, channels_last) vs a bare loop doing the same.
(e) each preset's own recording (--presets; --only-presets runs it alone): the seconds of every event kind (a
    training step, one update of all averages, one BN recomputation of the raw weights, each measurement, each
    evaluation) timed inside empirical.run's loop on the preset's model, batch size and measurement sizes (digits,
    mnist, quadratic on their own data; CIFAR and ImageNet on synthetic images, ImageNet at 64x64 and batch 32 on a
    CPU), then counted over the preset's full timeline by empirical.cadence (which steps measure, which of them
    need their own BN recomputation): measurements target <= 5 % of the training steps' time.

Our loop is timed inside ``empirical.run.main`` itself (data replaced by synthetic tensors, the batch iterator
wrapped to timestamp each step), from step 25 (after the longest two-point gap, so every average is live) on; the
reference is timed after 3 warmup steps. Configurations are interleaved (each repeat in a rotated order) and repeated;
times are the best (minimum) of the repeats, since other jobs on the CPU only ever add time, and throughput ratios
the median of the repeats' paired ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from empirical import config, presets  # noqa: E402
from empirical import data as D  # noqa: E402
from empirical import run, train  # noqa: E402
from empirical.models import build_model  # noqa: E402

BANK_EVERY = 10   # steps between bank evaluations in the measured configurations (the cadence the ≤ 10 % overhead target is set for)


def synthetic(n: int, side: int, classes: int = 10, seed: int = 0) -> D.DataBundle:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, side, side, generator=g), torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    test = TensorDataset(x[:256], y[:256])
    return D.DataBundle(ds, ds, test, classes, 3, side, "synthetic", {"source": "bench"})


def our_step_time(bundle, argv: list[str], warmup: int, steps: int, account: dict | None = None) -> float:
    """Seconds per step of the loop inside ``empirical.run.main``: the time between the loop fetching batch
    ``warmup`` and batch ``warmup + steps`` (the step-0 and final evaluations and the checkpoint fall outside).

    With ``account``, the time spent inside the recorder (``run.measure``) and the averages
    (``WeightAverages.update``) during those steps is added to account["measure"] / account["averages"] (seconds):
    both sides of the overhead ratio then come from the same steps of the same run."""
    import contextlib
    import io

    import empirical.data as data_mod
    from empirical import sampler
    from empirical.averaging import WeightAverages

    stamps: dict[int, float] = {}
    orig_load, orig_batches = data_mod.load_data, sampler.train_batches
    orig_measure, orig_update = train.measure, WeightAverages.update
    window = range(warmup, warmup + steps)

    def clocked(key, fn, step_of):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if step_of(a) in window:
                account[key] = account.get(key, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    if account is not None:
        train.measure = clocked("measure", orig_measure, lambda a: a[0])             # measure(step, ...)
        WeightAverages.update = clocked("averages", orig_update, lambda a: a[2] - 1)  # update(self, model, step + 1)

    def timed(*a, **k):
        for step, x, y in orig_batches(*a, **k):
            stamps[step] = time.perf_counter()
            yield step, x, y

    data_mod.load_data = lambda *a, **k: bundle  # run.main imports load_data at call time
    sampler.train_batches = timed
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            n = warmup + steps + 1
            run.main([*argv, "--steps", str(n), "--eval-every", str(n), "--out", str(Path(tmp) / "r")])
    finally:
        data_mod.load_data, sampler.train_batches = orig_load, orig_batches
        train.measure, WeightAverages.update = orig_measure, orig_update
    return (stamps[warmup + steps] - stamps[warmup]) / steps


def reference_step_time(bundle, arch, batch, steps, device, channels_last, bf16) -> float:
    """torchvision references/classification style train_one_epoch, timed after 3 warmup steps."""
    torch.manual_seed(0)
    model = build_model(arch, bundle.num_classes, 3, bundle.image_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(bundle.train, batch_size=batch, shuffle=True, drop_last=True)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    model.train()
    done, t = 0, None
    while done < steps + 3:
        for x, y in loader:
            if done == 3:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with ctx:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the reference's MetricLogger reads the loss every step
            done += 1
            if done == steps + 3:
                break
    return (time.perf_counter() - t) / steps


def eval_forward_time(bundle, arch, batch, steps, device, channels_last) -> float:
    """One eval-mode, no-grad forward of a fixed batch (what each bank batch costs), after 2 warmup calls."""
    torch.manual_seed(0)
    model = build_model(arch, bundle.num_classes, 3, bundle.image_size).to(device).eval()
    x = bundle.train[:batch][0].to(device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for i in range(steps + 2):
            if i == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
            model(x).sum().item()
    return (time.perf_counter() - t) / steps


def paired(num: list[float], den: list[float]) -> tuple[float, str]:
    """Median over repeats of den/num (times → throughput ratio num-side over den-side), and each repeat's ratio."""
    ratios = [d / n for n, d in zip(num, den)]
    return statistics.median(ratios), ", ".join(f"{r:.3f}" for r in ratios)


def digits_wall(extra: list[str]) -> float:
    """Training-loop seconds (summary.json wall_s) of ``python -m empirical.run digits`` with ``extra`` flags."""
    import subprocess

    from common import rundir
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        subprocess.run([sys.executable, "-m", "empirical.run", "digits", "--out", str(out), *extra], check=True,
                       stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
        return float(rundir.load_run(out).summary["wall_s"])


def calibration_cost(repeats: int) -> None:
    """(d): the digits preset as shipped vs with the previous recordings, interleaved, best of ``repeats``."""
    configs = {"digits as shipped (lag grid, dense test eval)": [],
               "digits, previous recordings (gaps 50,300)": ["--two-point-gaps", "50,300", "--eval-dense-every", "0"]}
    walls: dict[str, list[float]] = {n: [] for n in configs}
    for rep in range(repeats):
        for n in (list(configs) if rep % 2 == 0 else list(configs)[::-1]):
            walls[n].append(digits_wall(configs[n]))
    best = {n: min(v) for n, v in walls.items()}
    base = best[list(configs)[1]]
    print("(d) cost of the two-point calibration's recordings (training-loop wall time of real digits runs, best of "
          f"{repeats} [each]):")
    for n, v in walls.items():
        print(f"    {n:<50}: {best[n]:7.1f} s  x{best[n] / base:.2f}   [{', '.join(f'{x:.1f}' for x in v)}]")


# (e) each preset's own recording. Per-event costs are timed inside empirical.run's loop on the preset's model, batch
# size and measurement sizes, with every cadence shortened so each kind fires several times in a short segment
# (EVENT_FLAGS); the preset's own timeline (empirical.cadence.Cadence.counts over its full run) says how often each
# event happens; cost = Σ count · seconds per event over stop · seconds per bare step.
EVENT_FLAGS = ["--bank-every", "3", "--bank-span", "0", "--probe-every", "7", "--align-every", "5", "--curv-every",
               "11", "--eval-every", "13", "--eval-dense-every", "0", "--ema-start", "1", "--swa-start", "1",
               "--checkpoint-every", "0", "--no-checkpoint-branch-points"]
AVERAGES_FLAGS = ["--bank-every", "0", "--probe-every", "0", "--align-every", "0", "--curv-every", "0",
                  "--ema-start", "1", "--swa-start", "1", "--checkpoint-every", "0", "--no-checkpoint-branch-points"]
# shapes that fit a 2-core CPU: ImageNet's ResNet-34 at 64x64 with batch 32 (costs are ratios of forwards and
# backwards of the same network, so they carry over to 224x224 / B 256 up to kernel-efficiency differences)
CPU_SHAPES = {"cifar10": (32, None), "cifar100": (32, None), "imagenet": (64, 32)}
KIND_OF = {"batch_losses": "bank", "one_step_probe": "probe", "grad_alignment": "align", "top_curvature": "curv"}


def event_costs(preset: str, segment: int) -> dict[str, float]:
    """Seconds per event of ``preset`` (module comment above): "step" (a training step without anything else),
    "averages" (one update of every average), "recompute" (one BN recomputation of the raw weights), each
    measurement kind, "regular" / "dense" evaluations (per evaluation of every defined variant)."""
    import contextlib
    import io

    import empirical.data as data_mod
    from empirical import bn, sampler
    from empirical import measure as M
    from empirical.averaging import WeightAverages

    cfg = presets.PRESETS[preset]
    argv = [preset, "--max-steps", str(segment), *EVENT_FLAGS]
    side, batch = CPU_SHAPES.get(preset, (None, None))
    if batch and not torch.cuda.is_available():
        argv += ["--batch-size", str(batch)]
    if side:
        if torch.cuda.is_available():
            side = 224 if preset == "imagenet" else 32
        classes = 1000 if preset == "imagenet" else (100 if preset == "cifar100" else 10)
        bundle = synthetic(64 * (batch or cfg.batch_size), side, classes)
    spent: dict[str, list[float]] = {}
    inside: list[float] = []            # seconds of instrumented work inside the current step
    stamps: dict[int, float] = {}
    where = {"in": None}

    def timed(kind, fn):
        def wrapper(*a, **k):
            outer = where["in"]
            where["in"] = kind
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                where["in"] = outer
                if outer in (None, "measure"):   # nested calls count once, in the outermost kind
                    spent.setdefault(kind, []).append(dt)
                    inside.append(dt)
        return wrapper

    orig = {"raw": bn.ConsistentRaw.__call__, "update": WeightAverages.update, "eval": train.evaluate_all,
            "measure": train.measure, "batches": sampler.train_batches, "load": data_mod.load_data,
            **{name: getattr(M, name) for name in KIND_OF}}

    def consistent(self, raw_model, step):
        if self.bn_mode != "recompute" or self._step == step or where["in"] not in (None, "measure"):
            return orig["raw"](self, raw_model, step)
        return timed("recompute", orig["raw"])(self, raw_model, step)

    def evaluate_all(ts, step, dense_only=False):
        return timed("dense" if dense_only else "regular", orig["eval"])(ts, step, dense_only)

    def measure(*a, **k):
        where["in"] = "measure"     # the measurements below book their own time, the recomputation its own
        try:
            return orig["measure"](*a, **k)
        finally:
            where["in"] = None

    def batches(*a, **k):
        for step, x, y in orig["batches"](*a, **k):
            stamps[step] = time.perf_counter()
            inside.clear()
            yield step, x, y
            spent.setdefault("step", []).append(time.perf_counter() - stamps[step] - sum(inside))

    def in_measure(kind, fn):   # measurement functions are called inside train.measure
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                spent.setdefault(kind, []).append(dt)
                inside.append(dt)
        return wrapper

    bn.ConsistentRaw.__call__ = consistent
    WeightAverages.update = timed("averages", orig["update"])
    train.evaluate_all, train.measure, sampler.train_batches = evaluate_all, measure, batches
    for name, kind in KIND_OF.items():
        setattr(M, name, in_measure(kind, orig[name]))
    if side:
        data_mod.load_data = lambda *a, **k: bundle
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            run.main([*argv, "--out", str(Path(tmp) / "r")])
            # the averages again, on the preset's own evaluation grid (which decides how many two-point snapshots
            # are kept), measurements off, every average live from step 1
            events = {k: v for k, v in spent.items() if k != "averages"}
            spent.clear()
            run.main([*argv[:3], *AVERAGES_FLAGS, *argv[len(EVENT_FLAGS) + 3:], "--out", str(Path(tmp) / "a")])
            spent.update({k: v for k, v in events.items() if k != "step"},
                         averages=spent.get("averages", []), step=spent["step"] + events["step"])
    finally:
        bn.ConsistentRaw.__call__, WeightAverages.update = orig["raw"], orig["update"]
        train.evaluate_all, train.measure, sampler.train_batches = orig["eval"], orig["measure"], orig["batches"]
        data_mod.load_data = orig["load"]
        for name in KIND_OF:
            setattr(M, name, orig[name])
    return {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in spent.items()}


def averages_vs_bare(preset: str = "digits", steps: int = 300, repeats: int = 3) -> None:
    """One update of the preset's averages (WeightAverages, every average live) after each training step, against
    the simplest competent baseline on the same loop: one bare ``torch._foreach_lerp_`` pass per EMA and for SWA
    (the kernel timm's ModelEmaV3 runs); medians over ``steps`` steps, the two loops alternated ``repeats`` times."""
    from empirical import task
    from empirical.averaging import WeightAverages

    cfg = presets.PRESETS[preset]
    data, tk = task.load_data(cfg), task.for_config(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg, data)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    x, y = next(iter(DataLoader(data.train, batch_size=cfg.batch_size)))
    params = list(model.parameters())
    n_passes = len(cfg.ema_decays) + (cfg.swa_start is not None)
    ours, bare = [], []
    for _ in range(repeats):
        # the preset's EMAs, SWA and two-point gaps, the EMAs and SWA updated every step from step 1 (as the bare
        # passes below are)
        live = replace(cfg, ema_start=1, ema_every=1, swa_start=1, swa_every=1, n_points=())
        avg = WeightAverages(model, live.averages(), eval_every=cfg.eval_every, total_steps=cfg.stop,
                             extra_eval_steps=cfg.dense_eval_steps())
        bufs = [[p.detach().clone() for p in params] for _ in range(n_passes)]
        for side in ("ours", "bare"):
            for s in range(1, steps + 1):
                loss = tk.train_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss.item()
                t = time.perf_counter()
                if side == "ours":
                    avg.update(model, s)
                    ours.append(time.perf_counter() - t)
                else:
                    with torch.no_grad():
                        for b in bufs:
                            torch._foreach_lerp_(b, params, 0.01)
                    bare.append(time.perf_counter() - t)
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"  {preset} averages after each training step: WeightAverages.update {1e6 * o:.0f} µs, {n_passes} bare "
          f"_foreach_lerp_ passes {1e6 * b:.0f} µs (x{o / b:.2f})")


def preset_recording(presets: list[str], segment: int) -> None:
    """(e): each preset's recording cost over its own full timeline, from per-event costs (``event_costs``)."""
    from empirical.cadence import MEASUREMENTS, Cadence

    print(f"(e) each preset's own recording, per-event costs timed in its loop ({segment}-step segment, cadences "
          f"shortened), counted over its full timeline (% of the training steps' time; 'averages' and "
          f"'evaluation' are what any averaging run with validation pays, reported beside the measurements):")
    for preset in presets:
        cfg = presets.PRESETS[preset]
        cost = event_costs(preset, segment)
        n = Cadence.of(cfg).counts()
        total = cfg.stop * cost["step"]
        part = {k: n[k] * cost.get(k, 0.0) for k in (*MEASUREMENTS, "recompute")}
        rec = sum(part.values())
        averages = cfg.stop * cost.get("averages", 0.0)
        ev = n["regular"] * cost.get("regular", 0.0) + n["dense"] * cost.get("dense", 0.0)
        per = ", ".join(f"{k} {100 * v / total:.2f}" for k, v in part.items())
        counts = ", ".join(f"{k} {n[k]}" for k in (*MEASUREMENTS, "recompute"))
        shape = CPU_SHAPES.get(preset)
        note = "" if not shape or torch.cuda.is_available() else f" [CPU stand-in: {shape[0]}x{shape[0]} images" + (
            f", batch {shape[1]}]" if shape[1] else "]")
        print(f"  {preset:<10} measurements {100 * rec / total:5.2f} % (target <= 5 %; {per}; counts: {counts}); "
              f"averages {100 * averages / total:5.2f} % ({1e6 * cost.get('averages', 0.0):.0f} µs per update); "
              f"evaluation {100 * ev / total:5.1f} % ({n['regular']} regular, {n['dense']} dense); step "
              f"{1e3 * cost['step']:.1f} ms{note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--digits-repeats", type=int, default=2, help="repeats of (d); 0 = skip it")
    p.add_argument("--only-digits", action="store_true", help="run (d) alone")
    p.add_argument("--presets", default="digits,mnist,quadratic,cifar10,imagenet",
                   help="(e): presets whose own recording cost to measure; '' = skip")
    p.add_argument("--segment", type=int, default=40, help="(e): steps run per preset to time each event")
    p.add_argument("--only-presets", action="store_true", help="run (e) alone")
    a = p.parse_args()
    if a.presets:
        preset_recording([x for x in a.presets.split(",") if x], a.segment)
        for preset in ("digits", "quadratic"):
            averages_vs_bare(preset)
    if a.only_presets:
        return
    if a.digits_repeats > 0:
        calibration_cost(a.digits_repeats)
    if a.only_digits:
        return
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    bundle = synthetic(a.batch * 40, 32)
    common = ["smoke", "--arch", "resnet20", "--batch-size", str(a.batch), "--lr", "0.05", "--probe-every", "0",
              "--align-every", "0", "--curv-every", "0", "--checkpoint-every", "0", "--swa-start", "none",
              "--train-eval-size", "256", "--channels-last"]   # channels_last: as the cifar10/100, imagenet presets run
    if cuda:
        common += ["--bf16"]
    off = ["--bank-every", "0", "--ema-decays", "", "--two-point-gaps", ""]
    av = ["--ema-decays", "0.99,0.999", "--two-point-gaps", "5,20"]
    bank = ["--bank-every", str(BANK_EVERY), "--bank-size", "4", *av]
    quarter = config.RunConfig(batch_size=a.batch).bank_images       # the default --bank-fraction's images
    ours = {"ours, measurements off": [*common, *off],
            "+ 2 EMA + 2 two-point": [*common, "--bank-every", "0", *av],
            f"+ bank (default: K=4 x {quarter} img)": [*common, *bank],
            "+ bank, K=4 whole batches": [*common, *bank, "--bank-fraction", "1"],
            "ours, contiguous": [*common, *off, "--no-channels-last"]}
    names = list(ours)
    images = {names[2]: 4 * quarter, names[3]: 4 * a.batch}             # K·N recorded images per bank side
    refs = {"reference, contiguous": False, "reference, channels_last": True}
    times: dict[str, list[float]] = {n: [] for n in [*names, *refs, "eval forward"]}
    inloop = {n: [] for n in names[1:4]}  # per repeat: (recorder + averages seconds) / (rest of the step), same run
    # untimed warmup of both loops: the first training run in a process pays one-off costs (allocator growth,
    # oneDNN primitive caches) that would otherwise land on whichever configuration runs first
    our_step_time(bundle, ours[names[0]], 3, 3)
    reference_step_time(bundle, "resnet20", a.batch, 3, dev, True, cuda)

    jobs = [*[(n, None) for n in names], *[(n, cl) for n, cl in refs.items()]]
    for rep in range(a.repeats):  # interleaved, each repeat in a rotated order: a slow spell hits every config alike
        k = rep * len(jobs) // a.repeats
        for n, cl in jobs[k:] + jobs[:k]:
            if cl is not None:
                times[n].append(reference_step_time(bundle, "resnet20", a.batch, a.steps, dev, cl, cuda))
                continue
            acc: dict = {}
            times[n].append(our_step_time(bundle, ours[n], 25, a.steps, acc))
            if n in inloop:
                extra = (acc.get("measure", 0.0) + acc.get("averages", 0.0)) / a.steps
                inloop[n].append(extra / (times[n][-1] - extra))
        times["eval forward"].append(eval_forward_time(bundle, "resnet20", a.batch, a.steps, dev, True))
    best = {n: min(v) for n, v in times.items()}  # min of repeats: other jobs on the machine only ever add time
    b = best[names[0]]
    print(f"device {dev} ({torch.get_num_threads()} threads), resnet20, synthetic 32x32, batch {a.batch}, "
          f"{a.steps} timed steps, best of {a.repeats} [each repeat, ms/step]; ours in channels_last unless named")
    for n in [*names, *refs]:
        extra = f"   overhead {100 * (best[n] / b - 1):+5.1f} %" if n in inloop else ""
        print(f"  {n:<30}: {1e3 * best[n]:7.1f} ms/step {a.batch / best[n]:7.1f} img/s{extra}   "
              f"[{', '.join(f'{1e3 * v:.0f}' for v in times[n])}]")
    ev = best["eval forward"] / b
    floor_per_image = 2 * ev / (BANK_EVERY * a.batch)  # K training + K held-out images' forwards every BANK_EVERY
    print(f"  one eval-mode forward of a batch = {ev:.2f} of a training step; a bank of K training + K held-out "
          f"batches of N images every {BANK_EVERY} steps costs at least 2·K·(N/B)·{ev:.2f}/{BANK_EVERY} of a step")
    print("(a) recorder overhead, in-loop accounting (time inside the recorder and the averages over the rest of the "
          "step, same steps of the same run; immune to the slow spells that move the end-to-end column above):")
    for n in inloop:
        floor = f"; the bank's floor {100 * floor_per_image * images[n]:.1f} %" if n in images else ""
        print(f"    {n:<30}: {100 * min(inloop[n]):+5.1f} %   [{', '.join(f'{100 * v:.1f}' for v in inloop[n])}]"
              f"{floor}")
    print(f"  recorder overhead as configured by default (bank every {BANK_EVERY} steps, K = 4, --bank-fraction "
          f"0.25; 2 EMA; 2 two-point) = {100 * min(inloop[names[2]]):+.1f} % in-loop, "
          f"{100 * (best[names[2]] / b - 1):+.1f} % end to end (target <= 10 %)")
    print("(b) throughput ours / torchvision-reference-style loop, same model and batches (median of the repeats' "
          "ratios [each repeat]; target >= 1.0x):")
    for label, mine, ref in (("as each ships (ours channels_last, reference contiguous)", names[0], "reference, contiguous"),
                             ("same memory format, contiguous", "ours, contiguous", "reference, contiguous"),
                             ("same memory format, channels_last", names[0], "reference, channels_last")):
        med, each = paired(times[mine], times[ref])
        print(f"    {label:<58}: {med:.3f}x   [{each}]")
    if cuda:
        big = synthetic(256 * 8, 224, classes=1000)
        argv = ["smoke", "--arch", "resnet50", "--batch-size", "256", "--bf16", "--channels-last", "--probe-every",
                "0", "--align-every", "0", "--curv-every", "0", "--bank-every", "0", "--ema-decays", "",
                "--two-point-gaps", "", "--swa-start", "none", "--checkpoint-every", "0"]
        o = our_step_time(big, argv, 5, 20)
        rr = reference_step_time(big, "resnet50", 256, 20, dev, True, True)
        print(f"  resnet50 224x224 bf16 channels_last B=256: ours {256 / o:.0f} img/s, bare {256 / rr:.0f} img/s, "
              f"ratio {rr / o:.3f}x")


if __name__ == "__main__":
    main()
