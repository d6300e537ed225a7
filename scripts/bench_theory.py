"""Benchmark: `python -m theory.predict` end to end on a cosine schedule vs per-step numpy loops.

    python scripts/bench_theory.py            # about a minute on the 2-core dev machine

The problem: ``--avg ema --lr 0.5 --decay 0.999 --steps 100000 --json --schedule cosine --spectrum
logspace:1e-4:1:D`` for D = 1 and D = 10,000. The CLI is timed as a subprocess (interpreter start, imports and the
run directory included; median of 3) with its peak RSS (os.wait4). Beside it, in the same run:

* the simplest loop: the five vector updates per step of the iterate and EMA moments (mean and variance of x, mean
  and variance of the EMA, their covariance; theory.md §2.3, §3.3) over the same 10^5 steps and D directions,
  recording the 201 output points;
* the same five updates written in place (preallocated buffers, ``out=``), the tighter numpy loop a user could
  write: reported beside the simplest one;
* the general loop: theory.moments.step_by_step, one 3×3 Lyapunov update per step (timed on fewer steps and scaled
  linearly, as stated in its line).

Targets: D = 1 ≤ 0.5 s and ≥ 2× the simplest loop; D = 10^4 at least as fast as the simplest loop and ≤ 1 GB peak
RSS; the peak RSS does not grow with the number of steps (10^4 vs 10^5 steps at D = 10^4).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from theory import moments, spec, stationary  # noqa: E402

LR, DECAY, STEPS = 0.5, 0.999, 100_000


def args(d: int, steps: int = STEPS) -> list[str]:
    return ["--avg", "ema", "--lr", str(LR), "--decay", str(DECAY), "--steps", str(steps), "--json",
            "--schedule", "cosine", "--spectrum", f"logspace:1e-4:1:{d}"]


def run_cli(d: int, steps: int = STEPS) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh `python -m theory.predict` process."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "theory.predict", *args(d, steps), "--out", f"{tmp}/r"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            raise SystemExit(f"theory.predict failed: {p.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024                          # ru_maxrss is in KiB on Linux


def problem(d: int):
    h = np.logspace(-4, 0, d)
    lr = spec.Cosine(lr=LR, total=STEPS).lr_at(np.arange(STEPS))
    v0 = stationary.iterate_variance(LR * h, 1.0, 0.0)           # the CLI's --init stationary
    out = np.round(np.linspace(0, STEPS, 201)).astype(np.int64)
    return h, lr, v0, out


def loop_start(d: int):
    """What both per-step loops start from: h, the LRs, the recorded steps and the moments (E x, Var x, E y, Var y,
    Cov(x, y)) at step 0, the EMA slots equal to the iterate's until it starts."""
    h, lr, v0, out = problem(d)
    mx, vx = np.zeros(d), v0.copy()
    return h, lr, set(out.tolist()), (mx, vx, mx.copy(), vx.copy(), vx.copy())


def simplest_loop(d: int) -> tuple[float, np.ndarray]:
    """The five vector updates per step (μ = 0, σ² = 1, EMA from T/2); returns (seconds, final EMA variance)."""
    h, lr, rec, (mx, vx, my, vy, cxy) = loop_start(d)
    start, g, b = STEPS // 2, DECAY, 1.0 - DECAY
    t0 = time.perf_counter()
    rows = []
    for t in range(STEPS):
        a = lr[t] * h
        c = 1.0 - a
        mx = c * mx                                               # E x_{t+1}
        vx = c * c * vx + a * a                                   # Var x_{t+1}
        if t + 1 > start:                                         # y_{t+1} = γ y_t + β x_{t+1}
            cp = c * cxy                                          # Cov(x_{t+1}, y_t)
            vy = g * g * vy + 2 * g * b * cp + b * b * vx
            cxy = g * cp + b * vx
            my = g * my + b * mx
        elif t + 1 == start:
            my, vy, cxy = mx, vx, vx
        if t + 1 in rec:
            rows.append(vy)
    return time.perf_counter() - t0, vy


def inplace_loop(d: int) -> tuple[float, np.ndarray]:
    """The same five updates as :func:`simplest_loop`, in place into preallocated buffers; (seconds, final EMA
    variance)."""
    h, lr, rec, (mx, vx, my, vy, cxy) = loop_start(d)
    start, g, b = STEPS // 2, DECAY, 1.0 - DECAY
    t0 = time.perf_counter()
    a, c, tmp, cp = np.empty(d), np.empty(d), np.empty(d), np.empty(d)
    rows = []
    for t in range(STEPS):
        np.multiply(h, lr[t], out=a)
        np.subtract(1.0, a, out=c)
        mx *= c
        vx *= c
        vx *= c
        np.multiply(a, a, out=tmp)
        vx += tmp
        if t + 1 > start:
            np.multiply(c, cxy, out=cp)
            vy *= g * g
            np.multiply(cp, 2 * g * b, out=tmp)
            vy += tmp
            np.multiply(vx, b * b, out=tmp)
            vy += tmp
            np.multiply(cp, g, out=cxy)
            np.multiply(vx, b, out=tmp)
            cxy += tmp
            my *= g
            np.multiply(mx, b, out=tmp)
            my += tmp
        elif t + 1 == start:
            my[:], vy[:], cxy[:] = mx, vx, vx
        if t + 1 in rec:
            rows.append(vy.copy())
    return time.perf_counter() - t0, vy


def general_loop(d: int, steps: int) -> float:
    """theory.moments.step_by_step on the first ``steps`` steps of the same problem, seconds."""
    h, _, v0, _ = problem(d)
    model = spec.NQM(h=h, sigma2=1.0, v0=v0)
    opt = spec.SGD(spec.Cosine(lr=LR, total=STEPS))
    t0 = time.perf_counter()
    moments.step_by_step(model, opt, spec.EMA(DECAY, start=STEPS // 2), np.array([steps]))
    return time.perf_counter() - t0


def engine_check(d: int, vy_loop: np.ndarray) -> float:
    """Largest relative difference of the final EMA variance: theory.moments vs the simplest loop."""
    h, _, v0, _ = problem(d)
    m = moments.moments(spec.NQM(h=h, sigma2=1.0, v0=v0), spec.SGD(spec.Cosine(lr=LR, total=STEPS)),
                        spec.EMA(DECAY, start=STEPS // 2), [STEPS])
    return float(np.max(np.abs(m.var_avg[0] - vy_loop) / vy_loop))


def main() -> None:
    print(f"theory.predict {' '.join(args(0)).replace('1e-4:1:0', '1e-4:1:D')}  (+ --out TMP)")
    # The CLI processes first: a child's peak RSS counts the pages it shares with this process right after the
    # fork, and the loops below grow this process (step_by_step at 10^4 directions: ~800 MB).
    clis = {d: [run_cli(d) for _ in range(3)] for d in (1, 10_000)}
    small = run_cli(10_000, 10_000)
    for d, general_steps in ((1, 20_000), (10_000, 2_000)):
        runs = clis[d]
        cli = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        loop, vy = simplest_loop(d)
        tight, vy_tight = inplace_loop(d)
        gen = general_loop(d, general_steps) * STEPS / general_steps
        print(f"D = {d:,}")
        print(f"  CLI end to end (process start included, median of 3): {cli:.3f} s, peak RSS {rss:.0f} MB")
        print(f"  simplest loop (5 vector updates per step), 100,000 steps: {loop:.3f} s  -> CLI is "
              f"{loop / cli:.2f}x faster")
        print(f"  the same loop in place (preallocated buffers): {tight:.3f} s  -> CLI is {tight / cli:.2f}x faster "
              f"(its final EMA variance vs the simplest loop's: {np.max(np.abs(vy_tight - vy) / vy):.1e})")
        print(f"  general loop (step_by_step, 3x3 per step; timed on {general_steps:,} steps, scaled): {gen:.3f} s"
              f"  -> CLI is {gen / cli:.2f}x faster")
        print(f"  engine vs simplest loop, final EMA variance: max relative difference {engine_check(d, vy):.1e}")
    print(f"D = 10,000 at 10,000 steps: peak RSS {small[1]:.0f} MB (memory independent of the steps: compare above)")
    print("targets: D = 1 <= 0.5 s and >= 2x the simplest loop; D = 10,000 >= 1x the simplest loop and <= 1 GB")


if __name__ == "__main__":
    main()
