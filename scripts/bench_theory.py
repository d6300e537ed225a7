"""Benchmark: `python -m theory.predict` end to end vs a plain per-step numpy moment loop on the same problem.

    python scripts/bench_theory.py            # prints both timings and their ratio (target >= 10x, CLI < 1 s)

The CLI is timed as a subprocess (interpreter start and imports included). The per-step loop is
theory.moments.step_by_step, the obviously-correct reference; both compute the raw and EMA moments of
10,000 directions over 100,000 steps. Both run in this one process run, side by side, so the ratio is
meaningful on a noisy machine; the median of a few repetitions is reported,
with the interpreter + numpy import time as the floor.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from theory import moments, spec  # noqa: E402

ARGS = ["--avg", "ema", "--lr", "0.5", "--decay", "0.999", "--spectrum", "logspace:1e-4:1:10000",
        "--steps", "100000", "--json"]


def time_cli(reps: int) -> float:
    times = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "theory.predict", *ARGS, "--out", f"{d}/r"], cwd=ROOT,
                           check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_numpy_import(reps: int) -> float:
    """The floor no CLI can go below: interpreter start + ``import numpy`` (median)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_loop(steps: int) -> float:
    model = spec.NQM(h=np.logspace(-4, 0, 10_000), sigma2=1.0)
    opt = spec.SGD(spec.Constant(0.5))
    avg = spec.EMA(decay=0.999, start=50_000)
    out = np.unique(np.linspace(0, steps, 201).astype(np.int64))
    t0 = time.perf_counter()
    moments.step_by_step(model, opt, avg, out)
    return time.perf_counter() - t0


def main() -> None:
    floor = time_numpy_import(reps=5)
    cli = time_cli(reps=5)
    loop_steps = 20_000  # the per-step loop is linear in steps: time 20k steps and scale to 100k (stated below)
    loop = time_loop(loop_steps) * (100_000 / loop_steps)
    print(f"theory.predict {' '.join(ARGS)}")
    print(f"  CLI end to end (process start included, median of 5): {cli:.3f} s")
    print(f"  of which the floor, `python -c 'import numpy'` (median of 5): {floor:.3f} s")
    print(f"  per-step numpy moment loop, 100,000 steps (timed on {loop_steps:,}, scaled linearly): {loop:.3f} s")
    print(f"  speed-up: {loop / cli:.1f}x   (targets: CLI well under 1 s, >= 10x)")


if __name__ == "__main__":
    main()
