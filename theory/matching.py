"""The LR switch that matches an average over a finite window of steps (theory.md §3.10). numpy and scipy only.

The stationary equivalent LR λ_eq (theory.md §3.3-3.5) says which constant LR has, *at stationarity*, the
average's excess loss. A run whose LR is switched from λ to λ_b at step s reaches its new level only after a
transient of about 1/(2λ_b h) steps per direction, so λ_eq does not answer the question a user asks about a finite
stretch of training: "over steps A..B, which switch (step s, LR λ_b) gives the raw weights the average's predicted
loss?". :func:`match_switch` answers it with the exact moments of theory.moments (any schedule before s, any
momentum), and :func:`scan_switch` shows how the answer depends on s.

Definitions (loss = expected excess loss ½Σ_k h_k(m_k² + v_k), theory.md §2.3; step t = the iterate after t
updates; "window mean" = the mean over the steps A, A+1, ..., B):

* target: the window mean of the average's loss on the parent run (the schedule of ``opt``).
* branch(s, λ_b): the parent's schedule for updates t < s, then the constant LR λ_b for updates t ≥ s (same
  momentum; PyTorch's momentum buffer carries over and is rescaled as in theory.moments). L(λ_b): the window mean
  of its raw iterate's loss. λ_b is searched in (0, λ_s], λ_s the parent's LR of update s: a switch only lowers it.
* L is U-shaped in λ_b: for λ_b → 0 the iterate freezes at its state at s and keeps that loss, at λ_b = λ_s it is
  the parent's raw loss (for a constant parent); in between, a lower LR lowers the noise level but relaxes to it
  more slowly.
  L is evaluated on a log grid from a rate at which every direction is frozen over the window up to λ_s
  (``unimodal`` reports whether the grid values fall and then rise); its minimum is refined (Brent), and every
  sign change of L − target on the grid (the minimum inserted) is solved with brentq. ``lr_branch`` is the
  largest root — the mildest switch, on the rising side of L, the one that tends to λ_eq when A − s is long
  against the relaxation time; all roots are in ``roots`` (a second, smaller one lies on the falling side: an LR
  so small that the iterate has not yet moved). No root: ``exists`` is False, ``lr_branch`` is the minimiser of
  L and ``reached_fraction`` says which share of the average's gain (parent raw window mean − target) that best
  branch reaches.
* Per direction k the same equation L_k(λ) = target_k is solved on its own (largest root, NaN where none), and
  ``unreachable_share`` = Σ_k max(0, gain_k − best_gain_k) / Σ_k gain_k, with
  best_gain_k = parent raw_k − min_λ L_k(λ): the share of the average's gain that no switch at s reaches even in
  the direction where the average makes it (0 for one direction whose equation has a root). A scalar match may
  still exist when it is > 0 (it saves more than the average in some directions and less in others); no scalar
  match with a share of 0 means each direction could reach its gain, but only with its own λ_b (theory.md §3.3
  multi-timescale caveat).
  ``reached_fraction`` and ``unreachable_share`` are NaN when the average does not beat the raw run (gain <= 0).

Every candidate λ_b (a number, or one per direction in the per-direction searches) is one call of the moment
engine for all directions, started from the parent's state at s (computed once). Windows longer than
``MAX_WINDOW_POINTS`` steps (fewer with many directions, ``WINDOW_ELEMS``) are sampled at evenly spaced steps, each
weighted by the number of window steps nearest to it; ``window_points`` says how many were used (B − A + 1: exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .equivalence import scalar_equivalent_lr, stationary_average
from .moments import alpha_phases, chunked_moments, diverges, sorted_unique
from .spec import EMA, NQM, SGD, SWA, NoAverage, NPoint, TwoPoint, is_integer_valued
from . import stationary as st

__all__ = ["SwitchMatch", "match_switch", "scan_switch", "switch_candidates"]

# Window sampling: every step up to MAX_WINDOW_POINTS steps, never more than WINDOW_ELEMS step × direction values
# per moment array (10,000 directions: 400 points), never fewer than MIN_WINDOW_POINTS.
MAX_WINDOW_POINTS = 1001
MIN_WINDOW_POINTS = 101
WINDOW_ELEMS = 4_000_000
# The λ_b grid: log-spaced, GRID_PER_DECADE points per decade from FROZEN·(1 − μ)/(h_max·(B − s)) (every
# direction moves by at most a FROZEN fraction of its way over the window) to λ_s, between GRID_MIN and GRID_MAX
# points.
GRID_PER_DECADE = 6
GRID_MIN, GRID_MAX = 12, 64
FROZEN = 1e-3
GOLDEN_STEPS = 24          # per-direction minimum: the bracket (two grid cells) shrinks by 0.618^24 ≈ 1e-5
ROOT_RTOL = 1e-13          # per-direction roots (Illinois) and scalar roots (brentq): relative tolerance in λ
MAX_ROOT_STEPS = 100
SCAN_POINTS = 5            # switch steps scan_switch tries by default: the average's start .. A


@dataclass(frozen=True, eq=False)
class SwitchMatch:
    """The constant-LR switch that matches an average over a window (theory.md §3.10). Losses are window means of
    the expected excess loss (loss units), LRs in the optimiser's units; per-direction arrays are [D]."""

    window: tuple[int, int]        # (A, B): steps A..B, both included
    switch_step: int               # s: the branch uses λ_b for updates t >= s
    window_points: int             # steps the window mean is taken over (B − A + 1: every step)
    lr_parent: float               # λ_s, the parent's LR of update s (upper end of the search)
    target_loss: float             # window mean of the average's loss on the parent run
    raw_loss: float                # window mean of the parent's raw iterate loss
    gain: float                    # raw_loss − target_loss (> 0: the average is better)
    exists: bool                   # some λ_b in (0, λ_s] gives L(λ_b) = target
    lr_branch: float               # the largest root if exists, else the minimiser of L
    branch_loss: float             # L(lr_branch)
    roots: tuple[float, ...]       # every root found, increasing
    best_lr: float                 # minimiser of L over (0, λ_s]
    best_loss: float               # min L
    reached_fraction: float        # (raw − best_loss)/gain: the gain's share the best branch reaches (>= 1: exists)
    unimodal: bool                 # L falls then rises on the grid (so each side has at most one root)
    lr_eq_stationary: float        # scalar stationary equivalent LR (theory.equivalence.scalar_equivalent_lr)
    unreachable_share: float       # Σ max(0, gain_k − best_gain_k)/gain: what no scalar λ_b reaches (NaN: skipped)
    lr_branch_per_direction: np.ndarray | None   # each direction's own root, NaN where none (None: skipped)
    gain_per_direction: np.ndarray               # raw_k − target_k
    best_gain_per_direction: np.ndarray | None   # raw_k − min_λ L_k(λ)
    engine_calls: int              # moment-engine calls for this switch step

    def to_dict(self) -> dict:
        """JSON-ready: floats, ints, bools and lists; NaN and inf become None."""
        return {"window": [int(self.window[0]), int(self.window[1])], "switch_step": int(self.switch_step),
                "window_points": int(self.window_points), "lr_parent": _num(self.lr_parent),
                "target_loss": _num(self.target_loss), "raw_loss": _num(self.raw_loss), "gain": _num(self.gain),
                "exists": bool(self.exists), "lr_branch": _num(self.lr_branch),
                "branch_loss": _num(self.branch_loss), "roots": [_num(r) for r in self.roots],
                "best_lr": _num(self.best_lr), "best_loss": _num(self.best_loss),
                "reached_fraction": _num(self.reached_fraction), "unimodal": bool(self.unimodal),
                "lr_eq_stationary": _num(self.lr_eq_stationary), "unreachable_share": _num(self.unreachable_share),
                "per_direction": None if self.lr_branch_per_direction is None else {
                    "lr_branch": [_num(v) for v in self.lr_branch_per_direction],
                    "gain": [_num(v) for v in self.gain_per_direction],
                    "best_gain": [_num(v) for v in self.best_gain_per_direction]},
                "engine_calls": int(self.engine_calls)}


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------------ the problem

def _window_grid(a: int, b: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps of the window mean and their weights (sum 1): every step of a..b, or evenly spaced samples each
    weighted by the number of window steps nearest to it."""
    n_all = b - a + 1
    n = min(n_all, MAX_WINDOW_POINTS, max(MIN_WINDOW_POINTS, WINDOW_ELEMS // max(d, 1)))
    if n >= n_all:
        steps = np.arange(a, b + 1, dtype=np.int64)
        return steps, np.full(steps.size, 1.0 / n_all)
    steps = sorted_unique(np.round(np.linspace(a, b, n)).astype(np.int64))
    cut = np.concatenate([[a - 1], (steps[:-1] + steps[1:]) // 2, [b]])      # sample k covers (cut_k, cut_k+1]
    return steps, np.diff(cut).astype(float) / n_all


class _Problem:
    """The validated inputs and the parent's window means (target and raw), shared by every switch step."""

    def __init__(self, model: NQM, opt: SGD, avg, window, total):
        if not isinstance(model, NQM):
            raise ValueError(f"model must be a theory.spec.NQM, got {type(model).__name__}")
        if not isinstance(opt, SGD):
            raise ValueError(f"opt must be a theory.spec.SGD (the parent run's schedule), got {type(opt).__name__}")
        if isinstance(avg, NoAverage) or not isinstance(avg, (EMA, SWA, TwoPoint, NPoint)):
            raise ValueError(f"avg must be an average (EMA, SWA, TwoPoint or NPoint), got {type(avg).__name__}: "
                             "the raw iterate has no gain to match")
        if not (isinstance(window, (tuple, list)) and len(window) == 2 and all(is_integer_valued(v) for v in window)):
            raise ValueError(f"window must be two integer steps (A, B) with 0 <= A < B, got {window!r}")
        a, b = int(window[0]), int(window[1])
        if a < 0 or a >= b:
            raise ValueError(f"window ({a}, {b}): need 0 <= A < B (first and last step of the window), "
                             "e.g. (900, 1200)")
        if total is not None:
            if not (is_integer_valued(total) and total >= 1):
                raise ValueError(f"total (the run length in steps) must be an integer >= 1, got {total!r}")
            if b > total:
                raise ValueError(f"window ({a}, {b}) ends after the run's last step {int(total)}: end the window at "
                                 f"or before step {int(total)}, or run longer")
        first = avg.defined_from
        if a < first:
            what = {EMA: "the EMA starts", SWA: "SWA starts", TwoPoint: "the two-point average first exists",
                    NPoint: "the N-point average first exists"}[type(avg)]
            raise ValueError(f"window ({a}, {b}) starts before the average exists ({what} at step {first}): start "
                             f"the window at or after step {first}")
        if np.any(diverges(model, opt, b)):
            raise ValueError(f"the parent run diverges before step {b} (λh >= 2(1 + μ) in some direction): there "
                             "is nothing to match; lower the LR")
        self.model, self.opt, self.avg, self.a, self.b = model, opt, avg, a, b
        self.mu = float(opt.momentum)
        self.steps, self.weights = _window_grid(a, b, model.dim)
        m = chunked_moments(model, self.mu, avg, alpha_phases(model, opt, b), self.steps)[0]
        self.raw_dir = self.window_mean(m.mean_x, m.var_x)
        self.target_dir = self.window_mean(m.mean_avg, m.var_avg)
        del m
        t0 = min(first, b)                                     # stationary λ_eq as theory.equivalence computes it
        lr_ref = float(opt.schedule.lr_at(np.array([min(t0, max(b - 1, 0))]))[0])
        v_stat = st.averaged_variance(lr_ref * model.h, stationary_average(avg, b), model.sigma2, self.mu)
        self.lr_eq = float(scalar_equivalent_lr(model, 0.5 * float(np.sum(model.h * v_stat)), self.mu))

    def window_mean(self, mean, var) -> np.ndarray:
        """Per-direction window mean of ½h(m² + v) [D] from [T, D] moments."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.weights @ (0.5 * self.model.h * (mean * mean + var))

    def switch_step(self, switch_at) -> int:
        s = self.a if switch_at is None else switch_at
        if not is_integer_valued(s) or not 0 <= s <= self.a:
            raise ValueError(f"switch step {s!r} must be an integer in [0, A = {self.a}] (at or before the window "
                             f"start); default: A")
        s = int(s)
        lr_s = float(self.opt.schedule.lr_at(np.array([s]))[0])
        if not lr_s > 0:
            raise ValueError(f"the parent's LR at the switch step {s} is {lr_s:g}: a branch can only lower the LR, "
                             "so it needs a positive one there; switch where the LR is > 0")
        return s


class _Branch:
    """The branch runs from switch step s: the parent's state at s, computed once, then one engine call per
    candidate λ_b (a number or one per direction). Keeps each direction's least loss over every call."""

    def __init__(self, p: _Problem, s: int):
        self.p, self.s = p, s
        self.lr_s = float(p.opt.schedule.lr_at(np.array([s]))[0])
        d = p.model.dim
        self.prefix = alpha_phases(p.model, p.opt, s) if s > 0 else []
        self.init = None
        if s > 0:
            _, state = chunked_moments(p.model, p.mu, NoAverage(), self.prefix, [s], stop=s)
            self.init = (s, *state)
        self.calls = 0
        self.best = np.full(d, np.inf)
        self.best_lr = np.full(d, np.nan)
        self.cache: dict[float, np.ndarray] = {}

    def per_direction(self, lr) -> np.ndarray:
        """Window-mean raw loss per direction [D] of the branch with LR ``lr`` (scalar or [D]) from update s."""
        p = self.p
        lr = np.broadcast_to(np.asarray(lr, dtype=float), (p.model.dim,))
        phases = [*self.prefix, (self.s, p.b, lr * p.model.h)]
        m = chunked_moments(p.model, p.mu, NoAverage(), phases, p.steps, self.init)[0]
        self.calls += 1
        out = p.window_mean(m.mean_x, m.var_x)
        better = out < self.best
        self.best = np.where(better, out, self.best)
        self.best_lr = np.where(better, lr, self.best_lr)
        return out

    def scalar(self, lr: float) -> np.ndarray:
        lr = float(lr)
        if lr not in self.cache:
            self.cache[lr] = self.per_direction(lr)
        return self.cache[lr]

    def total(self, lr: float) -> float:
        return float(np.sum(self.scalar(lr)))

    def grid(self) -> np.ndarray:
        p = self.p
        lo = FROZEN * (1.0 - p.mu) / (float(np.max(p.model.h)) * (p.b - self.s))
        lo = min(lo, 1e-2 * self.lr_s)
        n = int(np.clip(math.ceil(GRID_PER_DECADE * math.log10(self.lr_s / lo)) + 1, GRID_MIN, GRID_MAX))
        g = np.geomspace(lo, self.lr_s, n)
        g[-1] = self.lr_s
        return g


# ------------------------------------------------------------------------------------------------ the searches

def _scalar_search(br: _Branch, grid: np.ndarray, target: float):
    """(best_lr, best_loss, roots increasing, unimodal) of the total window loss L(λ) = target on (0, λ_s]."""
    from scipy.optimize import brentq, minimize_scalar

    vals = np.array([br.total(x) for x in grid])
    j = int(np.argmin(vals))
    tol = 1e-12 * float(np.max(np.abs(vals)))
    unimodal = bool(np.all(np.diff(vals[:j + 1]) <= tol) and np.all(np.diff(vals[j:]) >= -tol))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    best_lr, best = float(grid[j]), float(vals[j])
    if hi > lo:
        r = minimize_scalar(lambda u: br.total(math.exp(u)), bounds=(math.log(lo), math.log(hi)), method="bounded",
                            options={"xatol": 1e-9})
        x = min(max(math.exp(r.x), lo), hi)
        if br.total(x) < best:
            best_lr, best = x, br.total(x)
    lams = np.sort(np.unique(np.append(grid, best_lr)))
    f = np.array([br.total(x) - target for x in lams])
    roots = [float(x) for x, v in zip(lams, f) if v == 0]
    for k in np.flatnonzero(f[:-1] * f[1:] < 0):
        roots.append(float(brentq(lambda x: br.total(x) - target, lams[k], lams[k + 1],
                                  xtol=ROOT_RTOL * br.lr_s, rtol=4 * np.finfo(float).eps)))
    return best_lr, best, tuple(sorted(roots)), unimodal


def _golden_minimum(br: _Branch, grid: np.ndarray, vals: np.ndarray) -> None:
    """Refine every direction's minimum of L_k(λ) by golden section in log λ around its grid minimum [n, D]
    (br.best / br.best_lr keep the least value seen)."""
    j = np.argmin(vals, axis=0)
    lg = np.log(grid)
    a, b = lg[np.maximum(j - 1, 0)], lg[np.minimum(j + 1, grid.size - 1)]
    r = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = br.per_direction(np.exp(c)), br.per_direction(np.exp(d))
    for _ in range(GOLDEN_STEPS):
        left = fc < fd                                         # the minimum is in [a, d]
        na, nb = np.where(left, a, c), np.where(left, d, b)
        x = np.where(left, nb - r * (nb - na), na + r * (nb - na))
        fx = br.per_direction(np.exp(x))
        c, d, fc, fd = (np.where(left, x, d), np.where(left, c, x), np.where(left, fx, fd), np.where(left, fc, fx))
        a, b = na, nb


def _direction_roots(br: _Branch, grid: np.ndarray, vals: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each direction's largest root of L_k(λ) = target_k on (0, λ_s] [D], NaN where none: brackets from the grid
    with the direction's minimum inserted, then Illinois (regula falsi) for all directions at once."""
    d = target.size
    lam = np.vstack([np.broadcast_to(grid[:, None], (grid.size, d)), br.best_lr[None, :]])
    f = np.vstack([vals, br.best[None, :]]) - target
    order = np.argsort(lam, axis=0, kind="stable")
    lam, f = np.take_along_axis(lam, order, 0), np.take_along_axis(f, order, 0)
    n = lam.shape[0]
    events = np.zeros((2 * n - 1, d), dtype=bool)              # even 2k: f_k == 0; odd 2k+1: sign change in (k, k+1)
    events[0::2] = f == 0
    events[1::2] = f[:-1] * f[1:] < 0
    has = events.any(axis=0)
    last = (2 * n - 2) - np.argmax(events[::-1], axis=0)
    k = last // 2
    cols = np.arange(d)
    out = np.full(d, np.nan)
    at_point = has & (last % 2 == 0)
    out[at_point] = lam[k[at_point], cols[at_point]]
    todo = has & (last % 2 == 1)
    if not todo.any():
        return out
    kk = np.minimum(k + 1, n - 1)
    a, b = lam[k, cols], lam[kk, cols]
    fa, fb = f[k, cols], f[kk, cols]
    active = todo.copy()
    x = np.where(todo, b, br.lr_s)
    for _ in range(MAX_ROOT_STEPS):
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(active, (a * fb - b * fa) / (fb - fa), x)
        c = np.where(active, np.clip(c, np.minimum(a, b), np.maximum(a, b)), c)
        fc = br.per_direction(np.where(active, c, br.lr_s)) - target
        swap = active & (fc * fb < 0)
        keep = active & ~swap
        a, fa = np.where(swap, b, a), np.where(swap, fb, np.where(keep, 0.5 * fa, fa))
        b, fb = np.where(active, c, b), np.where(active, fc, fb)
        x = np.where(active, c, x)
        done = active & ((fc == 0) | (np.abs(b - a) <= ROOT_RTOL * np.abs(b)))
        active &= ~done
        if not active.any():
            break
    out[todo] = x[todo]
    return out


def _solve(p: _Problem, s: int, per_direction: bool) -> SwitchMatch:
    br = _Branch(p, s)
    grid = br.grid()
    target, raw = float(np.sum(p.target_dir)), float(np.sum(p.raw_dir))
    gain = raw - target
    best_lr, best, roots, unimodal = _scalar_search(br, grid, target)
    exists = len(roots) > 0
    lr_b = roots[-1] if exists else best_lr
    reached = (raw - best) / gain if gain > 0 else float("nan")
    lr_dir = best_gain = None
    share = float("nan")
    if per_direction:
        vals = np.vstack([br.scalar(x) for x in grid])
        _golden_minimum(br, grid, vals)
        lr_dir = _direction_roots(br, grid, vals, p.target_dir)
        best_gain = p.raw_dir - br.best
        share = float(np.sum(np.maximum(0.0, br.best - p.target_dir)) / gain) if gain > 0 else float("nan")
    return SwitchMatch(
        window=(p.a, p.b), switch_step=s, window_points=int(p.steps.size), lr_parent=br.lr_s, target_loss=target,
        raw_loss=raw, gain=gain, exists=exists, lr_branch=float(lr_b), branch_loss=br.total(lr_b), roots=roots,
        best_lr=float(best_lr), best_loss=float(best), reached_fraction=float(reached), unimodal=unimodal,
        lr_eq_stationary=p.lr_eq, unreachable_share=share, lr_branch_per_direction=lr_dir,
        gain_per_direction=p.raw_dir - p.target_dir, best_gain_per_direction=best_gain, engine_calls=br.calls)


# ------------------------------------------------------------------------------------------------ public API

def match_switch(model: NQM, opt: SGD, avg, window: tuple[int, int], switch_at: int | None = None,
                 total: int | None = None, per_direction: bool = True) -> SwitchMatch:
    """The constant LR λ_b that, switched on at step ``switch_at`` of the parent run, gives the raw weights the
    average's predicted window-mean loss over ``window`` = (A, B) (theory.md §3.10; module docstring).

    ``opt`` is the parent run (its schedule up to the switch, its momentum throughout), ``avg`` the average on it
    (EMA, SWA, TwoPoint or NPoint; it must exist from step A on), ``switch_at`` s with 0 <= s <= A (default A),
    ``total`` the run length if the window must lie inside it. ``per_direction=False`` skips the per-direction
    roots and ``unreachable_share`` (about a third of the engine calls). ValueError on bad input, saying what to
    change.

    Example: ``match_switch(NQM(h=[1.], v0=0.05/1.95), SGD(Constant(0.05)), EMA(0.99, start=500), (800, 1100), 600)``.
    """
    p = _Problem(model, opt, avg, window, total)
    return _solve(p, p.switch_step(switch_at), per_direction)


def switch_candidates(avg, window: tuple[int, int], n: int = SCAN_POINTS) -> list[int]:
    """``n`` switch steps evenly spaced from where the average starts acting (EMA/SWA start, (N − 1)·gap for
    two-point / N-point averages; at most A) to the window start A, duplicates dropped."""
    a = int(window[0])
    first = min(max(avg.defined_from, 0), a)
    return sorted({int(round(v)) for v in np.linspace(first, a, max(int(n), 1))})


def scan_switch(model: NQM, opt: SGD, avg, window: tuple[int, int], switch_steps=None, total: int | None = None,
                per_direction: bool = True) -> list[SwitchMatch]:
    """:func:`match_switch` at several switch steps (default :func:`switch_candidates`: from the average's start to
    A), sharing the parent's window means: how λ_b, ``exists`` and ``reached_fraction`` depend on s
    (theory.md §3.10). The earlier the switch, the longer the branch has to relax before the window."""
    p = _Problem(model, opt, avg, window, total)
    steps = switch_candidates(avg, window) if switch_steps is None else list(switch_steps)
    if not steps:
        raise ValueError("switch_steps is empty: give at least one step in [0, A], or None for the default scan")
    return [_solve(p, p.switch_step(s), per_direction) for s in steps]
