"""Exact means and variances of the iterate and of its average, for any schedule, momentum and averaging.

Per eigendirection (theory.md §2.2, §2.6) heavy-ball SGD is the linear Gaussian state-space model

    x_{t+1} = (1 + μ − α_t) x_t − μ x_{t−1} + α_t ε_t,   α_t = λ_t h,   ε_t ~ (0, σ²),   x_{−1} = x_0,

so the first two moments of the state s_t = (x_t, x_{t−1}[, y_t]) follow mean_{t+1} = A mean_t and the Lyapunov
update P_{t+1} = A P_t Aᵀ + σ² b bᵀ (theory.md §2.3, §3.3, §8). ``y`` is the EMA, or for SWA the *unnormalised*
running sum S (so every coefficient is constant within a constant-LR phase; the average is S/n). Without
momentum the update never reads x_{t−1}, so that slot is dropped and the state is (x_t[, y_t]).
Averaging updates are instantaneous linear "events" (reset y ← x at ``start``, then every ``every`` steps
y ← g y + (1−g) x with g = γ^every, or S ← S + x). Two-point / N-point averages need no lagged state:
Cov(x_t, x_s) = [Φ(t, s) P_s]₀₀ with Φ the transition product (theory.md §3.5, §8).

Each constant-rate phase is advanced in closed form by binary powering of the map M = (Φ, G):
M^{2n} = (Φ_n Φ_n, G_n + Φ_n G_n Φ_nᵀ), with the powers cached per phase, so the cost grows with the number of
phases and output points, not with the number of steps. Stretches where the LR changes every step (cosine, linear,
warmup, WSD decay, hyperbolic; theory/segments.py) go through the block kernels of theory/kernels.py: for few
directions the per-step maps between two output points are composed pairwise (an associative reduction, all
stretches of a run in a few vectorised calls), for many directions they are applied one step at a time to
cache-sized blocks; only one block of rates exists at a time, so memory does not grow with the number of steps. Arrays are laid out component-first, (n, n, D), D the
number of directions. Where α_t ≥ 2(1+μ) the moments grow without bound and are allowed to overflow to inf;
use :func:`diverges` to say so instead of printing inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .segments import MIN_CONST, Varying, peak_lr, restrict, schedule_phases, table_phase
from .spec import EMA, NQM, SGD, SWA, Averaging, NoAverage, NPoint, TwoPoint

__all__ = ["Moments", "moments", "moments_from_alpha", "step_by_step", "excess_loss", "diverges", "alpha_phases"]


@dataclass(frozen=True)
class Moments:
    """Moments at the requested steps (iterate after t updates). Arrays are [T, D].

    Under NoAverage the average is the iterate: ``mean_avg is mean_x`` and ``var_avg is cov_x_avg is var_x``
    (shared arrays, not copies; treat them as read-only)."""

    step: np.ndarray      # int64[T]
    mean_x: np.ndarray    # E[x_t], parameter units
    var_x: np.ndarray     # Var[x_t], parameter²
    mean_avg: np.ndarray  # E[z_t] of the average (== x_t where the average is not yet defined / NoAverage)
    var_avg: np.ndarray   # Var[z_t]
    cov_x_avg: np.ndarray  # Cov(x_t, z_t): E‖θ_t − z_t‖² per direction = var_x + var_avg − 2 cov + (Δmean)²


# ------------------------------------------------------------------------------------------- small map algebra

def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ikd,kjd->ijd", a, b)


def sandwich_product(phi: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Φ P Φᵀ for each direction (the last axis of both stacks)."""
    return _mm(_mm(phi, p), phi.transpose(1, 0, 2))


def compose_maps(second, first):
    """Map 'first, then second' of two (Φ, G) maps: (Φ₂Φ₁, Φ₂G₁Φ₂ᵀ + G₂)."""
    return _mm(second[0], first[0]), sandwich_product(second[0], first[1]) + second[1]


def _apply(m, state):
    mean, cov = state
    return np.einsum("ikd,kd->id", m[0], mean), sandwich_product(m[0], cov) + m[1]


def identity_map(n: int, d: int):
    """The (Φ, G) map that changes nothing: n×n identity Φ and zero noise G, for each of d directions."""
    return np.repeat(np.eye(n)[:, :, None], d, axis=2), np.zeros((n, n, d))


class MapPowers:
    """M^n for any n ≥ 0 by binary powering; the 2^j powers and every n asked for are cached."""

    def __init__(self, base):
        self.bits = [base]
        self.cache = {1: base}

    def __call__(self, n: int):
        if n not in self.cache:
            if n == 0:
                return identity_map(self.bits[0][0].shape[0], self.bits[0][0].shape[2])
            out, j, rest = None, 0, n
            while rest:
                if j == len(self.bits):
                    self.bits.append(compose_maps(self.bits[-1], self.bits[-1]))
                if rest & 1:
                    out = self.bits[j] if out is None else compose_maps(self.bits[j], out)
                rest >>= 1
                j += 1
            self.cache[n] = out
        return self.cache[n]


def heavy_ball_step_map(alpha: np.ndarray, mu: float, sigma2: np.ndarray, n: int, nx: int = 2):
    """One heavy-ball update of (x, x_prev[, y]) at rate α (y unchanged): theory.md §2.6.

    ``nx`` is the number of iterate slots: 2 keeps x_{t−1} (momentum reads it), 1 drops it. With μ = 0 the update
    never reads x_{t−1}, and dropping it turns the 3×3 (2×2) per-direction products into 2×2 (1×1): the einsum
    products cost 186 / 62 / 16 µs at n = 3 / 2 / 1 for 10,000 directions on the 2-core dev machine.
    """
    d = alpha.size
    a = np.zeros((n, n, d))
    a[0, 0] = 1.0 + mu - alpha
    if nx == 2:
        a[0, 1], a[1, 0] = -mu, 1.0
    for i in range(nx, n):
        a[i, i] = 1.0
    g = np.zeros((n, n, d))
    g[0, 0] = alpha * alpha * sigma2
    return a, g


def _one_step(state, alpha, mu, sigma2, nx: int = 2):
    """The same update written out element-wise: the fast path for phases one step long (e.g. cosine decay)."""
    mean, p = state
    c = 1.0 + mu - alpha
    mean, q = mean.copy(), p.copy()
    if nx == 1:                                  # state (x[, y]): no x_{t−1} slot (μ = 0)
        mean[0] = c * mean[0]
        q[0, 0] = c * c * p[0, 0] + alpha * alpha * sigma2
        if p.shape[0] == 2:
            q[0, 1] = q[1, 0] = c * p[0, 1]
        return mean, q
    mean[0], mean[1] = c * mean[0] - mu * mean[1], mean[0].copy()
    row = c * p[0] - mu * p[1]             # Cov(x_{t+1}, s_t) before the noise, one entry per state component
    q[0, 0] = c * row[0] - mu * row[1] + alpha * alpha * sigma2
    q[0, 1] = q[1, 0] = row[0]
    q[1, 1] = p[0, 0]
    if p.shape[0] == 3:
        q[0, 2] = q[2, 0] = row[2]
        q[1, 2] = q[2, 1] = p[0, 2]
    return mean, q


# -------------------------------------------------------------------------------------------- averaging events

class _Events:
    """Event times of an EMA/SWA: reset at r = start, updates at r + j·c for 1 ≤ j ≤ last (None = no end)."""

    def __init__(self, avg: Averaging, iy: int = 2):
        self.iy = iy                                 # index of y in the state (after the nx iterate slots)
        self.kind = "ema" if isinstance(avg, EMA) else "swa"
        self.r, self.c = int(avg.start), int(avg.every)
        self.last = None if self.kind == "ema" or avg.length is None else int(avg.length) - 1
        self.g = float(avg.decay) ** self.c if self.kind == "ema" else 1.0  # decay per EMA update

    def next_after(self, t: int):
        if t < self.r:
            return self.r
        j = (t - self.r) // self.c + 1
        return None if self.last is not None and j > self.last else self.r + j * self.c

    def updates_in(self, t: int, t_end: int) -> int:
        """Number of update events in (t, t_end] for t ≥ r."""
        lo, hi = (t - self.r) // self.c + 1, (t_end - self.r) // self.c
        if self.last is not None:
            hi = min(hi, self.last)
        return max(0, hi - lo + 1)

    def count(self, t: int) -> int:
        """SWA: iterates in the sum at time t ≥ r."""
        n = 1 + (t - self.r) // self.c
        return n if self.last is None else min(n, self.last + 1)

    def _coefs(self, t: int) -> tuple[float, float]:
        """The event at t as y ← u·y + w·x."""
        if t == self.r:
            return 0.0, 1.0                                       # reset: y ← x
        return (self.g, 1.0 - self.g) if self.kind == "ema" else (1.0, 1.0)   # EMA update / S ← S + x

    @property
    def w_update(self) -> float:
        """Weight w of x in an ordinary update y ← u y + w x (1 − γ^c for an EMA, 1 for the SWA sum)."""
        return self._coefs(self.r + self.c)[1]

    def coefs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(u, w) [hi − lo] of the events at times lo..hi−1 as y ← u y + w x; (1, 0) where there is none."""
        tau = np.arange(lo, hi, dtype=np.int64)
        u, w = np.ones(tau.size), np.zeros(tau.size)
        j = (tau - self.r) // self.c
        upd = (tau > self.r) & ((tau - self.r) % self.c == 0)
        if self.last is not None:
            upd &= j <= self.last
        u[upd], w[upd] = self._coefs(self.r + self.c)
        u[tau == self.r], w[tau == self.r] = 0.0, 1.0
        return u, w

    def event_map(self, t: int, d: int):
        iy = self.iy
        phi, g = identity_map(iy + 1, d)
        phi[iy, iy], phi[iy, 0] = self._coefs(t)
        return phi, g

    def apply_event(self, t: int, state):
        """Element-wise form of ``_apply(self.event_map(t, d), state)``."""
        u, w = self._coefs(t)
        iy, mean, p = self.iy, state[0].copy(), state[1].copy()
        mean[iy] = u * mean[iy] + w * mean[0]
        p[iy, iy] = u * u * p[iy, iy] + 2 * u * w * p[iy, 0] + w * w * p[0, 0]
        for j in range(iy):
            p[iy, j] = p[j, iy] = u * p[iy, j] + w * p[0, j]
        return mean, p


class _Phase:
    """A constant-rate piece [start, stop) with lazily cached step powers and block (c steps + update) powers."""

    def __init__(self, start, stop, alpha, mu, sigma2, n, nx):
        self.start, self.stop, self.alpha = start, stop, alpha
        self.mu, self.sigma2, self.n, self.nx = mu, sigma2, n, nx
        self._step = self._block = None

    @property
    def alpha_last(self) -> np.ndarray:
        return self.alpha

    def steps(self, k: int):
        if self._step is None:
            self._step = MapPowers(heavy_ball_step_map(self.alpha, self.mu, self.sigma2, self.n, self.nx))
        return self._step(k)

    def blocks(self, q: int, ev: _Events):
        if self._block is None:
            self._block = MapPowers(compose_maps(ev.event_map(ev.r + ev.c, self.alpha.size), self.steps(ev.c)))
        return self._block(q)

    def transition(self, a: int, b: int) -> np.ndarray:
        return self.steps(b - a)[0]

    def advance(self, state, t: int, t_end: int, ev: _Events | None, means: bool = True):
        """State after iterate t (events at t applied) → state after iterate t_end ≤ stop."""
        while t < t_end:
            if ev is not None and t >= ev.r and (t - ev.r) % ev.c == 0:
                q = ev.updates_in(t, t_end)                   # whole blocks (c steps, then an update) in one map
                if q > 1:                                     # (one update: the element-wise path is cheaper)
                    state = _apply(self.blocks(q, ev), state)
                    t += q * ev.c
                    continue
            tau = None if ev is None else ev.next_after(t)
            nxt = t_end if tau is None or tau > t_end else tau
            if nxt - t == 1:
                state = _one_step(state, self.alpha, self.mu, self.sigma2, self.nx)
            else:
                state = _apply(self.steps(nxt - t), state)
            t = nxt
            if t == tau:
                state = ev.apply_event(t, state)
        return state


# Kernel choice for varying stretches (theory/kernels.py): the pairwise tree up to TREE_MAX_D directions, the
# one-step-at-a-time kernels above. Measured on the 2-core dev machine, 10^5 cosine steps with an EMA (μ = 0):
# see scripts/bench_theory.py. KERNEL = "tree" / "seq" forces one (tests compare both with step_by_step).
KERNEL: str | None = None
TREE_MAX_D = 64
TREE_ELEMS = 1 << 16        # steps × directions per tree block (≈ 20 arrays of this many float64: ~10 MB)
# The sequential kernels form their coefficients SEQ_BLOCK steps × SEQ_DIRS directions at a time; rates are
# generated SEQ_SPAN steps at a time. Measured on the loaded 2-core dev machine (10^4 directions, 10^5 steps of the
# EMA phase alone, seq_plain, two runs each): 8 × 10,000 → 4.9 s, 4 × 10,000 → 5.6-6.5 s, 8 × 5,000 → 5.5-6.5 s,
# 8 × 2,500 → 8.8-9.8 s (more Python calls per element). With the separable kernel (kernels._seq_separable), the
# whole CLI of scripts/bench_theory.py at 10^4 directions on a quiet machine: 8 × 10,000 → 4.5 s, 8 × 5,000 → 4.6 s,
# 16 × 10,000 → 4.7 s, 4 × 10,000 → 4.4 s (within noise of each other).
SEQ_BLOCK = 8
SEQ_DIRS = 10000
SEQ_SPAN = 256


class _VarPhase:
    """A stretch [start, stop) whose rate changes from step to step (segments.Varying), advanced block by block by
    theory/kernels.py; only one block of rates [k, D] exists at a time."""

    def __init__(self, seg: Varying, mu, sigma2, n, nx):
        self.start, self.stop, self.seg = seg.start, seg.stop, seg
        self.mu, self.sigma2, self.n, self.nx = mu, sigma2, n, nx
        self.prev_alpha = None                 # α of update start − 1 (None at step 0: r = 1), set by the engine
        self.marks: list[int] = []             # steps where the engine stops (outputs, lags, the run's start)
        self._phi: dict = {}
        self._maps: dict = {}                  # tree kind: composed maps of the stretches between marks

    @property
    def alpha_last(self) -> np.ndarray:
        return self.seg.alpha(self.stop - 1, self.stop)[0]

    def _before(self, a: int):
        return self.prev_alpha if a == self.start else self.seg.alpha(a - 1, a)[0]

    def _kind(self) -> str:
        if KERNEL is not None:
            return KERNEL
        return "tree" if self.sigma2.size <= TREE_MAX_D else "seq"

    def _block_len(self, kind: str) -> int:
        return max(2, TREE_ELEMS // max(1, self.sigma2.size)) if kind == "tree" else SEQ_BLOCK

    def _run(self, state, a: int, b: int, ev: _Events | None, means: bool):
        """Advance (mean, cov) over updates [a, b) with events after each (None: iterate slots only)."""
        kind = self._kind()
        mean, cov = state
        if kind == "tree":
            key = (a, b, ev is not None)
            if key not in self._maps:
                self._fill(a, ev)
            if key in self._maps:
                return _apply(self._maps.pop(key), (mean, cov))      # each stretch is used once
            k = self._block_len(kind)
            for lo in range(a, b, k):
                hi = min(b, lo + k)
                u, w = ev.coefs(lo + 1, hi + 1) if ev is not None else (None, None)
                m = kernels.tree(self.seg.alpha(lo, hi), self._before(lo), self.mu, self.sigma2, self.nx, u, w)
                mean, cov = _apply(m, (mean, cov))
            return mean, cov
        mean, cov, d = mean.copy(), cov.copy(), self.sigma2.size

        def slab(sl: slice) -> None:
            """Directions ``sl`` through every step of [a, b) (slabs are independent of each other)."""
            m, p, s2 = mean[:, sl], cov[:, :, sl], self.sigma2[sl]
            seg = restrict(self.seg, sl, d)
            for lo in range(a, b, SEQ_SPAN):
                hi = min(b, lo + SEQ_SPAN)
                u, w = ev.coefs(lo + 1, hi + 1) if ev is not None else (None, None)
                if self.nx == 1:
                    sep = seg.separable(lo, hi)
                    rates = seg.alpha(lo, hi) if sep is None else sep
                    m, p = kernels.seq_plain(m, p, rates, s2, u, w, scale=1.0 if ev is None else ev.w_update,
                                             means=means, sub=SEQ_BLOCK)
                else:
                    prev = self._before(lo)
                    m, p = kernels.seq_momentum(m, p, seg.alpha(lo, hi),
                                                None if prev is None else prev[sl], self.mu, s2, u, w, means=means)
            mean[:, sl], cov[:, :, sl] = m, p

        # Slabs of directions one after another. Tried and dropped: the slabs in two threads (numpy releases the
        # GIL inside its array operations) took 7.0-7.8 s instead of 4.3-4.5 s at 10^4 directions × 10^5 cosine
        # steps on the 2-core dev machine: each operation on 5,000 directions is too short against the Python
        # dispatch that holds the GIL.
        for d0 in range(0, d, SEQ_DIRS):                         # one cache-sized slab of directions at a time
            slab(slice(d0, min(d, d0 + SEQ_DIRS)))
        return mean, cov

    def _fill(self, a: int, ev: _Events | None) -> None:
        """Compose the maps of the stretches between consecutive marks from step ``a`` on (those with the average's
        slot when ``ev`` is given, else those of the iterate before the average starts), a few hundred stretches
        per kernels.tree_many call, at most 4·TREE_ELEMS padded steps × directions each."""
        cuts = sorted({self.start, self.stop, *self.marks} | ({ev.r} if ev is not None and
                                                              self.start < ev.r < self.stop else set()))
        spans = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if lo >= a and
                 ((ev is not None and lo >= ev.r) or (ev is None))]
        d = self.sigma2.size
        i = 0
        while i < len(spans):
            j, longest = i, 0
            while j < len(spans) and (j == i or max(longest, spans[j][1] - spans[j][0]) * (j - i + 1) * d
                                      <= 4 * TREE_ELEMS):
                longest = max(longest, spans[j][1] - spans[j][0])
                j += 1
            group = spans[i:j]
            lo0, hi0 = group[0][0], group[-1][1]
            rates = self.seg.alpha(lo0, hi0)                              # [K, D], one stretch of the schedule
            before = self._before(lo0)
            prev = np.concatenate([(rates[:1] if before is None else before[None, :]), rates[:-1]])
            off = np.arange(longest)[:, None]
            starts = np.array([g[0] for g in group])[None, :]
            lens = np.array([g[1] - g[0] for g in group])[None, :]
            pad = off >= lens
            idx = np.minimum(starts + off, starts + lens - 1) - lo0      # [L, m] rows of ``rates``
            u = w = None
            if ev is not None:
                uu, ww = ev.coefs(lo0 + 1, hi0 + 1)
                u, w = uu[idx], ww[idx]
            phi, g = kernels.tree_many(rates[idx], prev[idx], pad, self.mu, self.sigma2, self.nx, u, w)
            for q, (lo, hi) in enumerate(group):
                self._maps[(lo, hi, ev is not None)] = (phi[:, :, q].copy(), g[:, :, q].copy())
            i = j

    def advance(self, state, t: int, t_end: int, ev: _Events | None, means: bool = True):
        """State after iterate t (events at t applied) → state after iterate t_end ≤ stop."""
        nx = self.nx
        if ev is not None and t < ev.r:                   # before the average starts only the iterate matters
            x_end = min(t_end, ev.r)
            sub = self._run((state[0][:nx], state[1][:nx, :nx]), t, x_end, None, means)
            mean, cov = state[0].copy(), state[1].copy()
            mean[:nx], cov[:nx, :nx] = sub
            state, t = (mean, cov), x_end
            if t == ev.r:
                state = ev.apply_event(t, state)          # the reset y ← x overwrites every y entry
        if t < t_end:
            state = self._run(state, t, t_end, ev, means)
        return state

    def _piece(self, a: int, b: int) -> np.ndarray:
        if (a, b) not in self._phi:
            k = self._block_len("tree")
            phi = None
            for lo in range(a, b, k):
                hi = min(b, lo + k)
                p = kernels.tree_phi(self.seg.alpha(lo, hi), self._before(lo), self.mu, self.nx)
                phi = p if phi is None else _mm(p, phi)
            self._phi[(a, b)] = phi
        return self._phi[(a, b)]

    def transition(self, a: int, b: int) -> np.ndarray:
        """Φ(b, a) of the iterate slots [nx, nx, D], from cached pieces between the marks."""
        cuts = [a] + [m for m in self.marks if a < m < b] + [b]
        phi = None
        for lo, hi in zip(cuts, cuts[1:]):
            p = self._piece(lo, hi)
            phi = p if phi is None else _mm(p, phi)
        return phi


# ------------------------------------------------------------------------------------------------- public API

def alpha_phases(model: NQM, opt: SGD, total: int) -> list:
    """The schedule's pieces over [0, total): constant phases (start, stop, α = λh per direction) and
    :class:`theory.segments.Varying` stretches where the LR changes every few steps (cosine, warmup, ...)."""
    return schedule_phases(opt.schedule, model.h, int(total))


def diverges(model: NQM, opt: SGD, total: int | None = None) -> np.ndarray:
    """Per direction: does the rate reach α = λ_t h ≥ 2(1+μ) (theory.md §2.6) at some step < total?

    With ``total=None`` the schedule's peak LR is used (``lr``, or the largest of a Piecewise's ``lrs``).
    Example: ``diverges(NQM(h=[1., 10.]), SGD(Constant(0.5)))`` → ``[False, True]``.
    """
    if total is None:
        peak = max([opt.schedule.lr, *getattr(opt.schedule, "lrs", ())])
    else:
        peak = peak_lr(opt.schedule, int(total))
    return peak * model.h >= opt.max_stable_alpha()


def sorted_unique(a) -> np.ndarray:
    """``np.unique`` for 1-D integer arrays. Why not np.unique: its first call imports numpy.ma, 13 ms of a
    fast ``theory.predict`` call on the 2-core dev machine."""
    a = np.sort(np.asarray(a).ravel())
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def checked_steps(steps) -> np.ndarray:
    """``steps`` as a non-empty 1-D int64 array of step numbers >= 0; ValueError otherwise."""
    s = np.atleast_1d(np.asarray(steps))
    if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer) or np.any(s < 0):
        raise ValueError("steps must be a non-empty 1-D array of integers >= 0 (iterate after t updates)")
    return s.astype(np.int64)


def _lag(avg: Averaging) -> tuple[int, int]:
    if isinstance(avg, TwoPoint):
        return 2, int(avg.gap)
    if isinstance(avg, NPoint):
        return int(avg.n), int(avg.gap)
    return 1, 0


# Directions per call of the engine: outputs are [T, D] anyway, but the engine's own work arrays (3×3×D maps,
# blocks of rates [k, D]) stay below a few MB each.
# Equal to SEQ_DIRS and to theory.equivalence.BLOCK_DIRECTIONS: a split into 8,192 + 1,808 directions doubled the
# per-step Python cost of the sequential kernel on the 10,000-direction benchmark.
CHUNK_DIRECTIONS = 10000


def _pieces(alpha_phases, d: int) -> list:
    """Validated pieces with runs of short constant phases merged into table-backed varying stretches."""
    out, t, run = [], 0, []

    def flush():
        if len(run) >= 2:
            table = np.concatenate([np.broadcast_to(al, (b - a, d)) for a, b, al in run])
            out.append(table_phase(run[0][0], table))
        else:
            out.extend(run)
        run.clear()

    for p in alpha_phases:
        if isinstance(p, Varying):
            a, b = p.start, p.stop
        else:
            a, b, alpha = p
            alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (d,))
            if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
                raise ValueError(f"alpha_phases must hold finite alpha >= 0; got a piece ({a}, {b}) that does not")
        if a != t or b <= a:
            raise ValueError("alpha_phases must be contiguous (start, stop, alpha>=0 finite) pieces from step 0; "
                             f"got a piece ({a}, {b}) after step {t}")
        if isinstance(p, Varying):
            flush()
            out.append(p)
        elif b - a < MIN_CONST:
            run.append((a, b, alpha))
        else:
            flush()
            out.append((a, b, alpha))
        t = b
    flush()
    return out


def build_phases(alpha_phases: list, d: int, mu: float, sigma2: np.ndarray, n_state: int | None = None) -> list:
    """Engine phases (constant: closed-form powers; varying: block kernels) for the pieces, with
    nx = 2 iterate slots under momentum and 1 without; ``n_state`` adds the average's slot when nx + 1."""
    nx = 2 if mu != 0 else 1
    n_state = nx if n_state is None else n_state
    phases = []
    for p in _pieces(alpha_phases, d):
        if isinstance(p, Varying):
            ph = _VarPhase(p, mu, sigma2, n_state, nx)
            ph.prev_alpha = phases[-1].alpha_last if phases else None
        else:
            ph = _Phase(p[0], p[1], p[2], mu, sigma2, n_state, nx)
        phases.append(ph)
    return phases


def moments_from_alpha(model: NQM, momentum: float, avg: Averaging, alpha_phases: list, steps) -> Moments:
    """Exact moments for per-direction rate pieces covering [0, max(steps)): constant phases (start, stop, α[D])
    and :class:`theory.segments.Varying` stretches.

    Implements the recursions of theory.md §2.3/§2.6 with the EMA/SWA state of §3.3/§3.4/§8 and the two-point /
    N-point cross-covariances Cov(x_t, x_{t−k}) = [Φ(t, t−k) P_{t−k}]₀₀ of §3.5/§8. Directions are processed
    CHUNK_DIRECTIONS at a time.

    Example: ``moments_from_alpha(NQM(h=[1.]), 0., EMA(0.9), [(0, 10, np.array([0.1]))], [0, 10])``.
    """
    return chunked_moments(model, momentum, avg, alpha_phases, steps)[0]


def _sub_model(model: NQM, sl: slice) -> NQM:
    return NQM(h=model.h[sl], sigma2=model.sigma2[sl], m0=model.m0[sl], v0=model.v0[sl])


def chunked_moments(model, momentum, avg, alpha_phases, steps, init=None, stop=None):
    """:func:`_engine` over blocks of directions; the (mean, cov) of the iterate slots at ``stop`` concatenated."""
    d = model.dim
    if d <= CHUNK_DIRECTIONS:
        return _engine(model, momentum, avg, alpha_phases, steps, init, stop)
    parts = []
    for lo in range(0, d, CHUNK_DIRECTIONS):
        sl = slice(lo, min(d, lo + CHUNK_DIRECTIONS))
        sub_init = None if init is None else (init[0], init[1][..., sl], init[2][..., sl])
        parts.append(_engine(_sub_model(model, sl), momentum, avg, [restrict(p, sl, d) for p in alpha_phases],
                             steps, sub_init, stop))
    ms = [p[0] for p in parts]
    cat = {f: np.concatenate([getattr(m, f) for m in ms], axis=1) for f in
           ("mean_x", "var_x", "mean_avg", "var_avg", "cov_x_avg")}
    mom = Moments(step=ms[0].step, **cat)
    state = None if stop is None else (np.concatenate([p[1][0] for p in parts], axis=-1),
                                       np.concatenate([p[1][1] for p in parts], axis=-1))
    return mom, state


def _engine(model: NQM, momentum: float, avg: Averaging, alpha_phases: list, steps, init=None, stop=None):
    """The moments at ``steps``; with ``init = (t0, mean [nx, D], cov [nx, nx, D])`` the run starts from that
    state of the iterate slots after t0 updates (every step ≥ t0, an EMA/SWA not started before t0); with ``stop``
    it also returns that state at step ``stop`` (before any LR-change map there), for a later ``init``."""
    if not (np.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not isinstance(avg, (NoAverage, EMA, SWA, TwoPoint, NPoint)):
        raise ValueError(f"avg must be one of NoAverage, EMA, SWA, TwoPoint, NPoint; got {type(avg).__name__}")
    steps = checked_steps(steps)
    times = sorted_unique(steps)
    d, mu, sigma2 = model.dim, float(momentum), model.sigma2
    nx = 2 if mu != 0 else 1          # iterate slots: x_{t−1} only matters with momentum (heavy_ball_step_map)
    ev = _Events(avg, iy=nx) if isinstance(avg, (EMA, SWA)) else None
    n_state = nx + (1 if ev else 0)
    t_first = 0 if init is None else int(init[0])
    phases = build_phases(alpha_phases, d, mu, sigma2, n_state)
    t_end = max(int(times[-1]), -1 if stop is None else int(stop))
    if not phases or phases[-1].stop < t_end:
        raise ValueError(f"alpha_phases cover [0, {phases[-1].stop if phases else 0}) but steps go up to {t_end}")
    npts, gap = _lag(avg)
    lagged = npts > 1 and gap > 0
    need = set(times.tolist()) | (set() if stop is None else {int(stop)})
    if lagged:
        need |= {int(s) - i * gap for s in times if s >= (npts - 1) * gap for i in range(npts)}
    need = sorted(need)
    if init is not None and (need[0] < t_first or (ev is not None and ev.r < t_first)):
        raise ValueError(f"a run started from the state at step {t_first} cannot report steps, lags or an average "
                         "that begin before it")
    for ph in phases:
        if isinstance(ph, _VarPhase):
            ph.marks = [s for s in [t_first, *need] if ph.start < s < ph.stop]
    means = bool(np.any(model.m0 != 0)) if init is None else bool(np.any(init[1] != 0))
    mean = np.zeros((n_state, d))
    cov = np.zeros((n_state, n_state, d))
    if init is None:
        mean[:] = model.m0
        cov[:nx, :nx] = model.v0                                  # x_{−1} = x_0: zero initial velocity
    else:
        mean[:nx], cov[:nx, :nx] = init[1], init[2]
    state = (mean, cov)
    if ev is not None and ev.r == t_first:
        state = ev.apply_event(t_first, state)
    has_avg = ev is not None or lagged
    # Without an average the *_avg arrays are the iterate's own (the same objects: half the memory and copies)
    keys = ("mx", "vx", "ma", "va", "ca") if has_avg else ("mx", "vx")
    out = {k: np.empty((times.size, d)) for k in keys}
    kept: dict[int, tuple] = {}
    row = {int(s): i for i, s in enumerate(times)}
    pi = next(i for i, ph in enumerate(phases) if ph.start <= t_first < ph.stop or ph.stop == t_first == t_end)
    t, entered = t_first, t_first > phases[pi].start or pi == 0
    final = None
    with np.errstate(over="ignore", invalid="ignore"):
        for target in need:
            while t < target:
                if t == phases[pi].stop:
                    pi, entered = pi + 1, False
                ph = phases[pi]
                if not entered:                                   # LR-change map, applied as the phase begins
                    if isinstance(ph, _Phase):
                        state = _apply(_lr_change(phases[pi - 1], ph), state)
                    entered = True
                end = min(ph.stop, target)
                state = ph.advance(state, t, end, ev, means)
                t = end
            if lagged:
                kept[target] = state
            if stop is not None and target == stop:
                final = (state[0][:nx].copy(), state[1][:nx, :nx].copy())
            if target in row:
                i, (m, p) = row[target], state
                out["mx"][i], out["vx"][i] = m[0], p[0, 0]
                if not has_avg:
                    continue
                if ev is not None and target >= ev.r:
                    nrm = 1.0 if ev.kind == "ema" else float(ev.count(target))
                    out["ma"][i], out["va"][i], out["ca"][i] = m[nx] / nrm, p[nx, nx] / nrm ** 2, p[0, nx] / nrm
                else:
                    out["ma"][i], out["va"][i], out["ca"][i] = m[0], p[0, 0], p[0, 0]
        if lagged:
            _lagged(out, times, kept, phases, npts, gap)
    for k in keys:                                                # NaN only arises as inf − inf past divergence:
        if not np.isnan(np.sum(out[k])):                          # (a sum is NaN iff some entry is, or ±inf meet:
            continue                                              # a cheap screen before the element-wise pass)
        nan = np.isnan(out[k])                                    # variances are +inf there, means ±inf, or 0
        if nan.any():                                             # exactly where m0 = 0 (then E x_t = 0 for all t)
            fill = np.where(model.m0 == 0, 0.0, np.inf) if k in ("mx", "ma") else np.full(d, np.inf)
            out[k][nan] = np.broadcast_to(fill, nan.shape)[nan]
    if not np.array_equal(times, steps):
        inv = np.searchsorted(times, steps)
        out = {k: v[inv] for k, v in out.items()}
    if not has_avg:
        out.update(ma=out["mx"], va=out["vx"], ca=out["vx"])      # Cov(x, x) = Var x
    return Moments(step=steps, mean_x=out["mx"], var_x=out["vx"], mean_avg=out["ma"], var_avg=out["va"],
                   cov_x_avg=out["ca"]), final


def _lr_change(prev, new: _Phase):
    """Map at a phase boundary that makes the heavy-ball state follow torch.optim.SGD when the LR changes.

    PyTorch keeps a velocity buffer b (b ← μb + g, θ ← θ − λ_t b), so across an LR change from λ' to λ the momentum
    term is μ(λ/λ')(x_t − x_{t−1}), not μ(x_t − x_{t−1}). Replacing the stored x_{t−1} by the virtual
    x_t − r(x_t − x_{t−1}), r = λ/λ' = α/α' per direction, makes the constant-coefficient step of the new phase exact.
    Without momentum the x_{t−1} slot is unused and the map is the identity. A phase at α' = 0 followed by α > 0
    (an LR of exactly zero, then non-zero) has no displacement to rescale: the buffer is not representable here.
    (A varying stretch rescales inside its own steps: kernels.step_ratio.)
    """
    phi, g = identity_map(new.n, new.alpha.size)
    if new.mu == 0.0:
        return phi, g
    prev_alpha = prev.alpha_last
    if np.any((prev_alpha == 0) & (new.alpha != 0)):
        raise ValueError("with momentum, an LR of exactly 0 followed by a non-zero LR is not supported "
                         "(the momentum buffer built up at LR 0 has no displacement to rescale); use a tiny LR instead")
    r = np.divide(new.alpha, prev_alpha, out=np.ones_like(new.alpha), where=prev_alpha != 0)
    phi[1, 0], phi[1, 1] = 1.0 - r, r
    return phi, g


def transition_matrix(phases: list, s: int, t: int) -> np.ndarray:
    """Φ(t, s): the product of the step matrices of updates s..t−1 and of the LR-change maps at the constant
    phases that begin in [s, t) (nx×nx×D: 2×2 with momentum, 1×1 without). Kept states are taken before the
    change map at their own step, as the engine applies it when the next phase begins."""
    phi, nx = None, phases[0].nx
    for i, ph in enumerate(phases):
        a, b = max(ph.start, s), min(ph.stop, t)
        if a >= b:
            continue
        if i > 0 and isinstance(ph, _Phase) and s <= ph.start:
            change = _lr_change(phases[i - 1], ph)[0][:nx, :nx]
            phi = change if phi is None else _mm(change, phi)
        step = ph.transition(a, b)
        phi = step if phi is None else _mm(step, phi)
    return phi if phi is not None else identity_map(nx, phases[0].sigma2.size)[0]


def _lagged(out, times, kept, phases, npts, gap):
    """Mean and variance of (1/N) Σ_i x_{t−i·gap} from the kept states and the transition products."""
    for i, t in enumerate(times):
        if t < (npts - 1) * gap:
            continue
        pts = [int(t) - (npts - 1 - j) * gap for j in range(npts)]   # increasing
        steps = [transition_matrix(phases, pts[j - 1], pts[j]) for j in range(1, npts)]
        mean = sum(kept[p][0][0] for p in pts) / npts
        var = sum(kept[p][1][0, 0] for p in pts)
        cross = kept[pts[-1]][1][0, 0]                            # Σ_j Cov(x_t, x_{p_j})
        for j in range(npts - 1):
            c = kept[pts[j]][1]                                   # Cov(s_{p_j}, s_{p_j})
            for k in range(j + 1, npts):
                c = _mm(steps[k - 1], c)                          # Cov(s_{p_k}, s_{p_j}) = Φ(p_k, p_j) P_{p_j}
                var = var + 2.0 * c[0, 0]
            cross = cross + c[0, 0]
        out["ma"][i], out["va"][i], out["ca"][i] = mean, var / npts ** 2, cross / npts


def moments(model: NQM, opt: SGD, avg: Averaging, steps) -> Moments:
    """Exact moments of x_t and of its average under ``opt``'s schedule and momentum (theory.md §2.3, §2.6, §8).

    Example: ``moments(NQM(h=[1.], m0=1.), SGD(Constant(0.1)), EMA(0.99), np.arange(0, 1001, 100))``.
    """
    steps = checked_steps(steps)
    return moments_from_alpha(model, opt.momentum, avg, alpha_phases(model, opt, int(steps.max())), steps)


def excess_loss(model: NQM, mean, var) -> np.ndarray:
    """E L(θ) − L_floor = ½ Σ_k h_k (m_k² + v_k) over the last axis (theory.md §2.3)."""
    mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * ((mean * mean + var) @ model.h)   # a BLAS product instead of h·(m² + v) then a sum


def step_by_step(model: NQM, opt: SGD, avg: Averaging, steps) -> Moments:
    """Slow, obviously-correct reference: one plain Lyapunov update per optimiser step (theory.md §2.3, §8).

    The state holds the lagged iterates x_t, x_{t−1}, …, x_{t−L} (L = (N−1)·gap for two-point / N-point) and the
    EMA value or SWA sum; every update and every averaging event is an explicit matrix. Cost O(steps·D·L²).
    """
    steps = checked_steps(steps)
    total, d, mu = int(steps.max()), model.dim, float(opt.momentum)
    npts, gap = _lag(avg)
    lag = max(1, (npts - 1) * gap)
    n, iy = lag + 2, lag + 1                                      # slots: x_t … x_{t−lag}, then y
    mean = np.zeros((n, d))
    mean[:iy] = model.m0
    cov = np.zeros((n, n, d))
    cov[:iy, :iy] = model.v0                                      # x_{−i} = x_0: zero initial velocity
    a = np.zeros((n, n, d))
    for i in range(1, iy):
        a[i, i - 1] = 1.0
    a[iy, iy] = 1.0
    lrs = opt.schedule.lr_at(np.arange(total)) if total else np.zeros(0)
    kind = "ema" if isinstance(avg, EMA) else "swa" if isinstance(avg, SWA) else None
    count = 0
    res = {k: np.empty((total + 1, d)) for k in ("mx", "vx", "ma", "va", "ca")}
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(total + 1):
            if t > 0:
                alpha = lrs[t - 1] * model.h
                # torch.optim.SGD: the momentum term is μ(λ_t/λ_{t−1})(x_t − x_{t−1}) when the LR changes
                r = 1.0 if t == 1 or lrs[t - 2] == lrs[t - 1] else lrs[t - 1] / lrs[t - 2]
                a[0, 0], a[0, 1] = 1.0 + mu * r - alpha, -mu * r
                mean = np.einsum("ikd,kd->id", a, mean)
                cov = sandwich_product(a, cov)
                cov[0, 0] += alpha * alpha * model.sigma2
            if kind is not None and t >= avg.start and (t - avg.start) % avg.every == 0:
                e = np.repeat(np.eye(n)[:, :, None], d, axis=2)
                if t == avg.start:
                    e[iy, iy], e[iy, 0], count = 0.0, 1.0, 1
                elif kind == "ema":
                    g = avg.decay ** avg.every
                    e[iy, iy], e[iy, 0] = g, 1.0 - g
                elif avg.length is None or count < avg.length:
                    e[iy, 0], count = 1.0, count + 1
                mean, cov = np.einsum("ikd,kd->id", e, mean), sandwich_product(e, cov)
            w = np.zeros(n)
            if kind is not None and t >= avg.start:
                w[iy] = 1.0 if kind == "ema" else 1.0 / count
            elif npts > 1 and t >= (npts - 1) * gap:
                for i in range(npts):
                    w[i * gap] += 1.0 / npts
            else:
                w[0] = 1.0
            res["mx"][t], res["vx"][t] = mean[0], cov[0, 0]
            res["ma"][t] = np.einsum("i,id->d", w, mean)
            res["va"][t] = np.einsum("i,ijd,j->d", w, cov, w)
            res["ca"][t] = np.einsum("jd,j->d", cov[0], w)
    return Moments(step=steps, mean_x=res["mx"][steps], var_x=res["vx"][steps], mean_avg=res["ma"][steps],
                   var_avg=res["va"][steps], cov_x_avg=res["ca"][steps])
