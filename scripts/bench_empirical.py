"""Speed of empirical.run's training loop, measured side by side in one process on the same model and batches.

    .venv/bin/python scripts/bench_empirical.py                 # CPU: resnet20, synthetic 32x32, batch 64
    .venv/bin/python scripts/bench_empirical.py --steps 40      # longer = less noise

(a) recorder overhead: our loop with the measurements of a real run (fixed bank of K = 1 or 4 training batches and
    as many held-out batches every 10 steps, whole or the first B/4 images of each (--bank-batch-size), two EMAs,
    two two-point averages) over the same loop with every measurement and average off; target <= 10 %. Also timed:
    one eval-mode forward of a batch, whose ratio r to a training step gives the bank's unavoidable cost
    2K·(N/B)·r/10 (each recorded image is one eval-mode forward).
(b) throughput: our loop (all measurements off) over a plain torchvision-reference-style loop (DataLoader over the
    same tensors, model(x), cross-entropy, zero_grad, backward, step, loss.item()); target >= 1.0x.
(c) on CUDA only: ResNet-50 on synthetic 224x224 (bf16 autocast, channels_last) vs a bare loop doing the same.

Our loop is timed inside ``empirical.run.main`` itself (data replaced by synthetic tensors, the batch iterator
wrapped to timestamp each step), from step 25 (after the longest two-point gap, so every average is live) on; the
reference is timed after 3 warmup steps. Configurations are interleaved and repeated, and the best (minimum) taken: the
CPU may be shared with other jobs, which only ever add time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from empirical import data as D  # noqa: E402
from empirical import run  # noqa: E402
from empirical.models import build_model  # noqa: E402

BANK_EVERY = 10   # steps between bank evaluations in the measured configurations (the "bank every 10 steps")


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
    orig_measure, orig_update = run.measure, WeightAverages.update
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
        run.measure = clocked("measure", orig_measure, lambda a: a[0])               # measure(step, ...)
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
        run.measure, WeightAverages.update = orig_measure, orig_update
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    bundle = synthetic(a.batch * 40, 32)
    common = ["smoke", "--arch", "resnet20", "--batch-size", str(a.batch), "--lr", "0.05", "--probe-every", "0",
              "--align-every", "0", "--curv-every", "0", "--checkpoint-every", "0", "--swa-start", "none"]
    if cuda:
        common += ["--bf16", "--channels-last"]
    bare = [*common, "--bank-every", "0", "--ema-decays", "", "--two-point-gaps", ""]
    av = ["--ema-decays", "0.99,0.999", "--two-point-gaps", "5,20"]
    avgs = [*common, "--bank-every", "0", *av]
    bank1 = [*common, "--bank-every", str(BANK_EVERY), "--bank-size", "1", *av]
    bank4 = [*common, "--bank-every", str(BANK_EVERY), "--bank-size", "4", *av]
    quarter = a.batch // 4
    bank4q = [*bank4, "--bank-batch-size", str(quarter)]
    names = ["ours, measurements off", "+ 2 EMA + 2 two-point", "+ bank/10 steps, K=1", "+ bank/10 steps, K=4",
             f"+ bank/10, K=4 x {quarter} img"]
    images = {names[2]: a.batch, names[3]: 4 * a.batch, names[4]: 4 * quarter}   # K·N recorded images per side
    times: dict[str, list[float]] = {n: [] for n in [*names, "reference", "eval forward"]}
    inloop = {n: [] for n in names[1:]}   # per repeat: (recorder + averages seconds) / (rest of the step), same run
    # untimed warmup of both loops: the first training run in a process pays one-off costs (allocator growth,
    # oneDNN primitive caches) that would otherwise land on whichever configuration runs first
    our_step_time(bundle, bare, 3, 3)
    reference_step_time(bundle, "resnet20", a.batch, 3, dev, cuda, cuda)

    def reference():
        times["reference"].append(reference_step_time(bundle, "resnet20", a.batch, a.steps, dev, cuda, cuda))

    for rep in range(a.repeats):  # interleaved, so a busy neighbour slows every configuration alike
        if rep % 2:               # alternate the reference between first and last of each repeat
            reference()
        for n, argv in zip(names, (bare, avgs, bank1, bank4, bank4q)):
            acc: dict = {}
            times[n].append(our_step_time(bundle, argv, 25, a.steps, acc))
            if n in inloop:
                extra = (acc.get("measure", 0.0) + acc.get("averages", 0.0)) / a.steps
                inloop[n].append(extra / (times[n][-1] - extra))
        if not rep % 2:
            reference()
        times["eval forward"].append(eval_forward_time(bundle, "resnet20", a.batch, a.steps, dev, cuda))
    med = {n: min(v) for n, v in times.items()}  # min of repeats: other jobs on the machine only ever add time
    b, r = med[names[0]], med["reference"]
    print(f"device {dev} ({torch.get_num_threads()} threads), resnet20, synthetic 32x32, batch {a.batch}, "
          f"{a.steps} timed steps, best of {a.repeats} [each repeat, ms/step]")
    for n in names:
        extra = "" if n == names[0] else f"   overhead {100 * (med[n] / b - 1):+5.1f} %"
        print(f"  {n:<24}: {1e3 * med[n]:7.1f} ms/step {a.batch / med[n]:7.1f} img/s{extra}   "
              f"[{', '.join(f'{1e3 * v:.0f}' for v in times[n])}]")
    print(f"  {'torchvision-style loop':<24}: {1e3 * r:7.1f} ms/step {a.batch / r:7.1f} img/s   "
          f"[{', '.join(f'{1e3 * v:.0f}' for v in times['reference'])}]")
    ev = med["eval forward"] / b
    floor_per_k = 2 * ev / BANK_EVERY   # K training + K held-out forwards every BANK_EVERY steps, per K
    print(f"  one eval-mode forward of a batch = {ev:.2f} of a training step; so a bank of K training + K held-out "
          f"batches every {BANK_EVERY} steps costs at least 2K x {ev:.2f} / {BANK_EVERY} = {100 * floor_per_k:.1f} % "
          f"per K")
    print("  in-loop accounting (time inside the recorder and the averages over the rest of the step, same steps "
          "of the same run; immune to the machine's slow spells that move the end-to-end numbers above):")
    for n in names[1:]:
        print(f"    {n:<24}: {100 * min(inloop[n]):+5.1f} %   [{', '.join(f'{100 * v:.1f}' for v in inloop[n])}]")
    for n in names[2:]:
        floor = floor_per_k * images[n] / a.batch        # eval forwards scale with the images recorded
        print(f"  recorder overhead ({n.lstrip('+ ')}, 2 EMA, 2 two-point) = {100 * min(inloop[n]):+.1f} % in-loop, "
              f"{100 * (med[n] / b - 1):+.1f} % end to end (target <= 10 %; the bank's floor here is "
              f"{100 * floor:.1f} %)")
    print(f"  throughput ours / reference = {r / b:.3f}x  (target >= 1.0x)")
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
