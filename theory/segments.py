"""A run's learning rates as pieces the exact moment engine can advance: constant phases and varying stretches.

A constant phase (start, stop, α[D]) is advanced in closed form by binary powering (theory.md §8); a stretch whose
LR changes every few steps (cosine, linear, warmup, WSD decay, hyperbolic) is a :class:`Varying` whose rates are
generated block by block when the engine reaches them (theory/kernels.py), so nothing of size steps × directions
is ever held. The schedule is read in chunks of ``SCAN_CHUNK`` steps: memory does not grow with the run length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Varying", "MIN_CONST", "lr_runs", "schedule_phases", "peak_lr", "table_phase", "clip_phases",
           "restrict"]

# A run of equal LRs at least this many steps long becomes a constant phase. Shorter runs stay inside a varying
# stretch: a phase costs a few (n×n×D) matrix products to set up, a varying step a few vector operations.
MIN_CONST = 16
SCAN_CHUNK = 1 << 16      # steps of the schedule evaluated at once while scanning (512 KiB of float64)


@dataclass(frozen=True, eq=False)
class Varying:
    """Steps [start, stop) whose per-direction rates α_t = ``rate(t, sl)`` [len(t), D_sl] are computed on demand
    (``sl`` a slice of the directions)."""

    start: int
    stop: int
    rate: Callable[[np.ndarray, slice], np.ndarray]   # int64 steps [k], directions -> α [k, D] (α = λh)
    sl: slice = field(default_factory=lambda: slice(None))   # the directions this stretch covers
    lam: Callable[[np.ndarray], np.ndarray] | None = None     # when α = λ_t h: steps -> λ_t [k] (LR units)
    scale: np.ndarray | None = None                           # ... and h [D_all] (1/LR units)

    def alpha(self, a: int, b: int) -> np.ndarray:
        return self.rate(np.arange(a, b, dtype=np.int64), self.sl)

    def separable(self, a: int, b: int):
        """(λ_t [k], h [D]) with α = λ_t h for steps [a, b), or None: lets a kernel form α a few steps at a time
        in cache instead of materialising [k, D]."""
        if self.lam is None:
            return None
        return self.lam(np.arange(a, b, dtype=np.int64)), self.scale[self.sl]


def restrict(phase, sl: slice, d: int):
    """The phase for directions ``sl`` of ``d`` (a constant phase's α broadcast to [d] first)."""
    if isinstance(phase, Varying):
        lo, hi, _ = sl.indices(d)
        base_lo = phase.sl.start or 0                 # slices here are contiguous ranges of directions
        return Varying(phase.start, phase.stop, phase.rate, slice(base_lo + lo, base_lo + hi), phase.lam, phase.scale)
    a, b, alpha = phase
    return a, b, np.broadcast_to(np.asarray(alpha, dtype=float), (d,))[sl]


def clip_phases(phases: list, lo: int, hi: int) -> list:
    """The pieces of ``phases`` inside steps [lo, hi) (constant tuples and Varying alike)."""
    out = []
    for p in phases:
        a, b = (p.start, p.stop) if isinstance(p, Varying) else (p[0], p[1])
        a2, b2 = max(a, lo), min(b, hi)
        if a2 < b2:
            out.append(Varying(a2, b2, p.rate, p.sl, p.lam, p.scale) if isinstance(p, Varying) else (a2, b2, p[2]))
    return out


def table_phase(start: int, table: np.ndarray) -> Varying:
    """A varying stretch from a precomputed table of rates [k, D] starting at ``start``."""
    return Varying(start, start + table.shape[0], lambda t, sl: table[t - start][:, sl])


def _chunks(total: int):
    for a in range(0, total, SCAN_CHUNK):
        yield a, min(total, a + SCAN_CHUNK)


def _breaks(schedule):
    """The steps where a piecewise-constant schedule may change its LR, or None when it may change anywhere."""
    from . import spec

    if isinstance(schedule, spec.Warmup):
        return _breaks(schedule.base) if schedule.steps == 0 else None
    if isinstance(schedule, spec.Constant):
        return ()
    if isinstance(schedule, spec.Step):
        return schedule.milestones
    if isinstance(schedule, spec.Piecewise):
        return schedule.boundaries
    return None


def lr_runs(schedule, total: int, min_const: int = MIN_CONST) -> list[tuple[int, int, float | None]]:
    """Split updates [0, total) into (start, stop, lr) constant runs of at least ``min_const`` steps and
    (start, stop, None) stretches in between; the schedule is evaluated ``SCAN_CHUNK`` steps at a time.

    Example: a cosine decay from step 500 of a 1000-step run gives ``[(0, 500, lr), (500, 1000, None)]``.
    """
    total = int(total)
    breaks = _breaks(schedule)
    if breaks is not None:                        # constant, step, piecewise: no scan, any run length
        cuts = [0, *sorted(b for b in breaks if 0 < b < total), total] if total else [0]
        return [(a, b, float(schedule.lr_at(np.array([a]))[0])) for a, b in zip(cuts, cuts[1:])]
    out: list = []
    run_a, run_v = 0, None                        # the run still open at the end of the scanned steps
    var_a = None                                  # start of the pending varying stretch

    def close(a, b, v):
        nonlocal var_a
        if b - a >= min_const:
            if var_a is not None:
                out.append((var_a, a, None))
                var_a = None
            out.append((a, b, float(v)))
        elif var_a is None:
            var_a = a

    for a, b in _chunks(total):
        lrs = schedule.lr_at(np.arange(a, b, dtype=np.int64))
        prev = np.empty_like(lrs)
        prev[1:] = lrs[:-1]
        prev[0] = lrs[0] if run_v is None else run_v
        cut = np.flatnonzero(lrs != prev) + a     # steps where a new run begins
        if cut.size == 0:
            run_v = lrs[0] if run_v is None else run_v
            continue
        starts = np.concatenate([[run_a], cut[:-1]])
        stops = cut
        vals = np.concatenate([[run_v if run_v is not None else lrs[0]], lrs[cut[:-1] - a]])
        long = np.flatnonzero(stops - starts >= min_const)
        done = 0
        for i in long:                            # a loop over the constant runs only
            if i > done and var_a is None:
                var_a = int(starts[done])
            close(int(starts[i]), int(stops[i]), vals[i])
            done = i + 1
        if done < starts.size and var_a is None:
            var_a = int(starts[done])
        run_a, run_v = int(cut[-1]), lrs[cut[-1] - a]
    if total:
        close(run_a, total, run_v)
        if var_a is not None:
            out.append((var_a, total, None))
    return out


def schedule_phases(schedule, h: np.ndarray, total: int) -> list:
    """Constant phases (start, stop, α = λh [D]) and :class:`Varying` stretches covering [0, total)."""
    h = np.asarray(h, dtype=float)
    out = []
    for a, b, lr in lr_runs(schedule, total):
        if lr is None:
            out.append(Varying(a, b, lambda t, sl: schedule.lr_at(t)[:, None] * h[None, sl], lam=schedule.lr_at,
                               scale=h))
        else:
            out.append((a, b, lr * h))
    return out


def peak_lr(schedule, total: int) -> float:
    """max_t λ_t over updates [0, total), evaluated in chunks (0 for an empty run)."""
    if _breaks(schedule) is not None:
        return max((lr for _, _, lr in lr_runs(schedule, total)), default=0.0)
    return max((float(np.max(schedule.lr_at(np.arange(a, b, dtype=np.int64)))) for a, b in _chunks(int(total))),
               default=0.0)
