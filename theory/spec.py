"""Frozen specifications of the noisy-quadratic model (NQM), the optimiser, its LR schedule and the averaging.

Notation (theory.md §2.0): per eigendirection k the deviation x = u_kᵀ(θ − θ*) follows heavy-ball SGD

    b_t = μ b_{t−1} + h_k (x_t − ε_t),   x_{t+1} = x_t − λ_t b_t,   b_{−1} = 0,   ε_t ~ (0, σ_k²) i.i.d.

which is torch.optim.SGD's momentum buffer (theory.md §2.2, §2.6). At a constant LR it is the heavy-ball recursion
x_{t+1} = (1 + μ − α) x_t − μ x_{t−1} + α ε_t with α = λh; across an LR change the momentum term carries the factor
λ_t/λ_{t−1} (theory/moments.py applies it at each phase boundary). Units:

* ``h``       curvature, 1 / (LR units): α = λh is dimensionless (the step fraction).
* ``sigma2``  variance of the batch minimisers θ_B along u_k, parameter² units.
* ``m0``      initial mean offset E[x_0], parameter units; ``v0`` initial variance, parameter².
* LR λ        the optimiser's learning rate (PyTorch units); steps are optimiser steps (0-based: step t is the
              t-th update; the iterate after t updates is θ_t).
* EMA decay γ per optimiser step (not per epoch, not per EMA update).

Every invalid value raises ``ValueError`` whose message says what is allowed. Schedules are pure functions of the
step: ``lr_at(t)`` for an int array of steps, and ``phases(T)`` splits [0, T) into maximal constant-LR pieces,
which the exact moment code advances in closed form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Union

import numpy as np


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _finite(x: float) -> bool:
    if isinstance(x, (str, bytes, bool)):             # float("1") would accept text; True is not a rate
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def is_integer_valued(x) -> bool:
    """Is ``x`` an integer-valued number (int, numpy integer, or a float with no fraction; not a str or bool)?"""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(x)) and int(x) == x


def _ints(name: str, value) -> tuple[int, ...]:
    """A number or a sequence of numbers -> a tuple of ints; ValueError naming ``name`` otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,)
    _check(all(is_integer_valued(v) for v in items), f"{name} must be integer step numbers, got {value!r}")
    return tuple(int(v) for v in items)


def _as_vector(name: str, value, positive: bool, allow_zero: bool = True) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    _check(arr.ndim == 1 and arr.size >= 1, f"{name} must be a number or a 1-D list of numbers, got shape {arr.shape}")
    _check(bool(np.all(np.isfinite(arr))), f"{name} must be finite (no NaN/inf)")
    if positive:
        ok = np.all(arr >= 0) if allow_zero else np.all(arr > 0)
        _check(bool(ok), f"{name} must be {'>= 0' if allow_zero else '> 0'}; got min {arr.min():g}")
    arr.setflags(write=False)
    return arr


# ======================================================================================================== model

@dataclass(frozen=True, eq=False)
class NQM:
    """Noisy quadratic model, per eigendirection (theory.md §2.1, M1 shared curvature).

    Scalars broadcast against ``h``. Example: ``NQM(h=[1.0, 0.1], sigma2=1.0, m0=0.0)``.
    """

    h: np.ndarray                 # curvatures h_k > 0, 1/(LR units)
    sigma2: np.ndarray = 1.0      # Var of batch minima along u_k, parameter²
    m0: np.ndarray = 0.0          # E[x_0], parameter units
    v0: np.ndarray = 0.0          # Var[x_0], parameter²

    def __post_init__(self) -> None:
        h = _as_vector("curvature h", self.h, positive=True, allow_zero=False)
        d = h.size
        vals = {"h": h}
        for name in ("sigma2", "m0", "v0"):
            arr = _as_vector(name, getattr(self, name), positive=name != "m0")
            _check(arr.size in (1, d), f"{name} has {arr.size} values but there are {d} curvatures; give 1 or {d}")
            arr = np.broadcast_to(arr, (d,)).copy()
            arr.setflags(write=False)
            vals[name] = arr
        for k, v in vals.items():
            object.__setattr__(self, k, v)

    @property
    def dim(self) -> int:
        return int(self.h.size)


# ===================================================================================================== schedules

@dataclass(frozen=True)
class Schedule:
    """Base class: an LR as a function of the optimiser step. Subclasses implement ``_lr(t)``."""

    lr: float                     # peak / base learning rate λ, LR units

    def __post_init__(self) -> None:
        _check(_finite(self.lr) and self.lr >= 0, f"lr must be a finite number >= 0, got {self.lr}")

    def _lr(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def lr_at(self, t) -> np.ndarray:
        """LR used by update t (t = 0, 1, ...), as float64 array of t's shape."""
        t = np.asarray(t)
        _check(np.issubdtype(t.dtype, np.integer) and bool(np.all(t >= 0)), "steps must be integers >= 0")
        return np.asarray(self._lr(t.astype(np.int64)), dtype=float) * np.ones(t.shape)

    def phases(self, total: int) -> list[tuple[int, int, float]]:
        """Split updates [0, total) into maximal constant-LR pieces (start, stop, lr), stop exclusive."""
        _check(int(total) == total and total >= 0, f"total steps must be an integer >= 0, got {total}")
        if total == 0:
            return []
        lrs = self.lr_at(np.arange(int(total)))
        cut = np.flatnonzero(np.diff(lrs) != 0) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [total]])
        return [(int(a), int(b), float(lrs[a])) for a, b in zip(starts, stops)]

    @property
    def name(self) -> str:
        return SCHEDULE_NAMES[type(self)]

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Constant(Schedule):
    """λ_t = lr."""

    def _lr(self, t):
        return np.full(t.shape, float(self.lr))


@dataclass(frozen=True)
class Step(Schedule):
    """λ_t = lr · factor^(number of milestones ≤ t). Milestones in steps, strictly increasing."""

    milestones: tuple[int, ...] = ()
    factor: float = 0.1           # multiplicative drop at each milestone, in (0, 1]

    def __post_init__(self) -> None:
        super().__post_init__()
        ms = _ints("milestones", self.milestones)
        _check(all(m >= 0 for m in ms) and all(b > a for a, b in zip(ms, ms[1:])),
               f"milestones must be increasing step numbers >= 0, got {self.milestones}")
        _check(_finite(self.factor) and 0 < self.factor <= 1, f"factor must be in (0, 1], got {self.factor}")
        object.__setattr__(self, "milestones", ms)

    def _lr(self, t):
        n = np.searchsorted(np.asarray(self.milestones, dtype=np.int64), t, side="right")
        return self.lr * self.factor ** n


@dataclass(frozen=True)
class _Decay(Schedule):
    """Constant lr until ``start``, then a decay shape over [start, total) down to ``final_lr``, then final_lr."""

    total: int = 1                # last step of the decay (exclusive), steps
    start: int = 0                # decay begins here, steps
    final_lr: float = 0.0         # LR reached at ``total``, LR units

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(is_integer_valued(self.start) and self.start >= 0, f"start must be an integer >= 0, got {self.start}")
        _check(is_integer_valued(self.total) and is_integer_valued(self.start) and self.total > self.start,
               f"total ({self.total}) must be an integer > start ({self.start})")
        _check(_finite(self.final_lr) and 0 <= self.final_lr <= self.lr,
               f"final_lr must be in [0, lr={self.lr}], got {self.final_lr}")

    def _frac(self, t):
        return np.clip((t - self.start) / (self.total - self.start), 0.0, 1.0)


@dataclass(frozen=True)
class Cosine(_Decay):
    """λ_t = final + (lr − final)·½(1 + cos(π·p)), p = clip((t − start)/(total − start), 0, 1)."""

    def _lr(self, t):
        return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1 + np.cos(np.pi * self._frac(t)))


@dataclass(frozen=True)
class Linear(_Decay):
    """λ_t = lr + (final − lr)·p, p as in Cosine."""

    def _lr(self, t):
        return self.lr + (self.final_lr - self.lr) * self._frac(t)


@dataclass(frozen=True)
class WSD(Schedule):
    """Warmup-stable-decay: linear warmup over ``warmup`` steps (λ = lr·(t+1)/warmup), constant, then a decay of
    ``decay`` steps starting at ``decay_start`` to ``final_lr``; ``shape`` 'linear' or 'sqrt' (1 − √p)."""

    warmup: int = 0               # steps
    decay_start: int = 0          # steps; must be >= warmup
    decay: int = 1                # steps, > 0
    final_lr: float = 0.0         # LR units
    shape: str = "linear"         # 'linear' | 'sqrt'

    def __post_init__(self) -> None:
        super().__post_init__()
        for n in ("warmup", "decay_start", "decay"):
            v = getattr(self, n)
            _check(is_integer_valued(v) and v >= 0, f"{n} must be an integer >= 0, got {v}")
        _check(self.decay >= 1, f"decay must be >= 1 step, got {self.decay}")
        _check(self.decay_start >= self.warmup, f"decay_start ({self.decay_start}) must be >= warmup ({self.warmup})")
        _check(_finite(self.final_lr) and 0 <= self.final_lr <= self.lr, f"final_lr must be in [0, lr], got {self.final_lr}")
        _check(self.shape in ("linear", "sqrt"), f"shape must be 'linear' or 'sqrt', got {self.shape!r}")

    def _lr(self, t):
        lr = np.full(t.shape, float(self.lr))
        if self.warmup:
            lr = np.where(t < self.warmup, self.lr * (t + 1) / self.warmup, lr)
        p = np.clip((t - self.decay_start) / self.decay, 0.0, 1.0)
        shape = p if self.shape == "linear" else np.sqrt(p)
        return np.where(t >= self.decay_start, self.lr + (self.final_lr - self.lr) * shape, lr)


@dataclass(frozen=True)
class Hyperbolic(Schedule):
    """1/t cooldown: λ_t = lr for t < start, λ_t = lr·τ/(τ + n) with n = t − start (theory.md §3.4).

    With τ = 1/α_eff = (1 − μ)/(λh) this is the schedule equivalent to SWA over a window starting at ``start``.
    """

    start: int = 0                # steps
    tau: float = 1.0              # time constant in steps: the LR has halved τ steps after ``start``

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(is_integer_valued(self.start) and self.start >= 0, f"start must be an integer >= 0, got {self.start}")
        _check(_finite(self.tau) and self.tau > 0, f"tau must be a finite number of steps > 0, got {self.tau}")

    def _lr(self, t):
        n = np.maximum(t - self.start, 0)
        return self.lr * self.tau / (self.tau + n)


@dataclass(frozen=True)
class Piecewise(Schedule):
    """Piecewise constant: λ_t = lrs[i] for boundaries[i−1] ≤ t < boundaries[i]; ``lr`` is lrs[0]."""

    boundaries: tuple[int, ...] = ()
    lrs: tuple[float, ...] = ()   # len(boundaries) + 1 values after the first (``lr``)

    def __post_init__(self) -> None:
        super().__post_init__()
        bs = _ints("boundaries", self.boundaries)
        _check(all(b > 0 for b in bs) and all(b2 > b1 for b1, b2 in zip(bs, bs[1:])),
               f"boundaries must be increasing steps > 0, got {self.boundaries}")
        lrs = tuple(self.lrs) if isinstance(self.lrs, (tuple, list, np.ndarray)) else (self.lrs,)
        object.__setattr__(self, "lrs", lrs)
        _check(len(self.lrs) == len(bs), f"give one lr per boundary ({len(bs)}), got {len(self.lrs)}")
        _check(all(_finite(v) and v >= 0 for v in self.lrs), f"lrs must be finite and >= 0, got {self.lrs}")
        object.__setattr__(self, "boundaries", bs)
        object.__setattr__(self, "lrs", tuple(float(v) for v in self.lrs))

    def _lr(self, t):
        table = np.asarray((self.lr, *self.lrs), dtype=float)
        return table[np.searchsorted(np.asarray(self.boundaries, dtype=np.int64), t, side="right")]


@dataclass(frozen=True, init=False)
class Warmup(Schedule):
    """A linear warmup in front of any schedule: λ_t = base.lr_at(t) · min(1, (t + 1)/steps) (the ramp of
    WSD's warmup, and of empirical.run's --warmup-steps). ``steps = 0`` is the base schedule itself.

    Example: ``Warmup(Cosine(lr=0.1, total=1000), steps=50)``; ``lr`` is the base's peak LR (LR units).
    """

    base: Schedule = None         # the schedule being ramped into
    steps: int = 0                # warmup length in optimiser steps, >= 0

    def __init__(self, base: Schedule, steps: int = 0) -> None:
        _check(isinstance(base, Schedule) and not isinstance(base, Warmup),
               f"warmup base must be a schedule other than a warmup, got {type(base).__name__}")
        _check(is_integer_valued(steps) and steps >= 0, f"warmup steps must be an integer >= 0, got {steps!r}")
        object.__setattr__(self, "lr", base.lr)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "steps", int(steps))

    def _lr(self, t):
        lr = self.base._lr(t)
        return lr * np.minimum(1.0, (t + 1) / self.steps) if self.steps > 0 else lr

    @property
    def name(self) -> str:
        return self.base.name

    def params(self) -> dict:
        """The base's parameters plus ``warmup_steps`` (JSON-ready; ``name`` names the base shape)."""
        return {"name": self.base.name, **self.base.params(), "warmup_steps": self.steps}


SCHEDULE_NAMES: dict[type, str] = {Constant: "constant", Step: "step", Cosine: "cosine", Linear: "linear",
                                   WSD: "wsd", Hyperbolic: "hyperbolic", Piecewise: "piecewise"}
SCHEDULES: dict[str, type] = {v: k for k, v in SCHEDULE_NAMES.items()}


def make_schedule(name: str, **params) -> Schedule:
    """Build a schedule by name ('constant', 'step', 'cosine', 'linear', 'wsd', 'hyperbolic', 'piecewise')."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    cls = SCHEDULES[name]
    allowed = {f.name for f in fields(cls)}
    unknown = set(params) - allowed
    _check(not unknown, f"schedule {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    return cls(**params)


# ===================================================================================================== optimiser

@dataclass(frozen=True)
class SGD:
    """Heavy-ball SGD in PyTorch's convention (velocity buffer v ← μv + g; θ ← θ − λv), theory.md §2.6."""

    schedule: Schedule
    momentum: float = 0.0         # μ in [0, 1); dimensionless

    def __post_init__(self) -> None:
        _check(isinstance(self.schedule, Schedule), f"schedule must be a Schedule, got {type(self.schedule).__name__}")
        _check(_finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")

    def max_stable_alpha(self) -> float:
        """Stability of the heavy-ball recursion: 0 < α < 2(1 + μ) (theory.md §2.2, §2.6)."""
        return 2.0 * (1.0 + self.momentum)


# ===================================================================================================== averaging

@dataclass(frozen=True)
class NoAverage:
    """The raw iterate θ_t."""

    defined_from = 0              # steps: differs from the iterate from here on (never, for the iterate itself)

    def weights(self, t: int):
        """(steps j, weights w) of the iterates making the value at step t (theory.md §3.3-3.5): θ_t itself."""
        return np.array([int(t)]), np.ones(1)

    def to_dict(self) -> dict:
        return _to_dict(self)


def check_ema_decay(decay) -> float:
    """The one validation of an EMA decay γ (per optimiser step): a finite number with 0 ≤ γ < 1 (theory.md §3.3;
    γ = 0 is the iterate itself, γ = 1 would never move). Returns it as a float; ValueError saying what is allowed."""
    _check(_finite(decay) and 0 <= float(decay) < 1,
           f"EMA decay must be in [0, 1) per optimiser step (e.g. 0.999), got {decay!r}")
    return float(decay)


def check_distinct(name: str, values) -> list:
    """The one check that a list holds each value at most once (the EMA decays of one run: two EMAs of one decay
    would be one variant recorded twice under one name). Returns the values as a list; ValueError
    "each NAME at most once, got [...]" otherwise."""
    items = list(values)
    _check(len(set(items)) == len(items), f"each {name} at most once, got {items}")
    return items


@dataclass(frozen=True)
class EMA:
    """y_{t} = γ y_{t−1} + (1 − γ) θ_t for t > start, y_start = θ_start (theory.md §3.3); y = θ before start."""

    decay: float                  # γ per optimiser step, in [0, 1)
    start: int = 0                # steps; the average is initialised to the iterate here
    every: int = 1                # update the EMA every `every` steps with decay γ^every (same time constant)

    def __post_init__(self) -> None:
        check_ema_decay(self.decay)
        _check(is_integer_valued(self.start) and self.start >= 0,
               f"EMA start must be an integer step >= 0, got {self.start}")
        _check(is_integer_valued(self.every) and self.every >= 1,
               f"EMA every must be an integer >= 1, got {self.every}")

    @property
    def defined_from(self) -> int:
        """First step at which the average differs from the iterate: its start (the one definition of "where an
        average starts", used by the run's averages, compare's predictions and theory's equivalences)."""
        return int(self.start)

    def weights(self, t: int):
        """(steps j, weights w), Σw = 1, of the iterates making y_t: y_start = θ_start, then y ← γ^c y + (1 − γ^c) θ
        every c = ``every`` steps (the last update at or before t). ValueError before the start."""
        s, c = int(self.start), int(self.every)
        _check(t >= s, f"{variant_name(self)} is not defined before step {s}")
        j = np.arange(s, t + 1 - (t - s) % c, c)
        q = float(self.decay) ** c                        # decay per update
        w = (1.0 - q) * q ** ((j[-1] - j) // c).astype(float)
        w[0] = q ** ((j[-1] - j[0]) // c)                 # the initial copy keeps the mass of all decays since
        return j, w

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True)
class SWA:
    """Uniform average of iterates θ_start, θ_{start+every}, ... (up to ``length`` of them; None = until the end).

    Before ``start`` the average equals the iterate (theory.md §3.4)."""

    start: int = 0                # steps
    length: int | None = None     # number of averaged iterates; None = all until the end of the run
    every: int = 1                # sampling period c in steps (Izmailov et al. use one per epoch)

    def __post_init__(self) -> None:
        _check(is_integer_valued(self.start) and self.start >= 0,
               f"SWA start must be an integer step >= 0, got {self.start}")
        _check(self.length is None or (is_integer_valued(self.length) and self.length >= 1),
               f"SWA length (window, in iterates) must be an integer >= 1, got {self.length}")
        _check(is_integer_valued(self.every) and self.every >= 1,
               f"SWA every must be an integer >= 1, got {self.every}")

    @property
    def defined_from(self) -> int:
        """First step at which the average differs from the iterate: its start."""
        return int(self.start)

    def weights(self, t: int):
        """(steps j, weights w): the uniform mean of θ_start, θ_{start+every}, … up to t, at most ``length`` of
        them. ValueError before the start."""
        r, c = int(self.start), int(self.every)
        _check(t >= r, f"swa is not defined before step {r}")
        j = np.arange(r, t + 1, c)
        if self.length is not None:
            j = j[:int(self.length)]
        return j, np.full(j.size, 1.0 / j.size)

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True)
class TwoPoint:
    """z_t = ½(θ_t + θ_{t−gap}) (theory.md §3.5); equals θ_t while t < gap."""

    gap: int                      # k, steps between the two points, >= 0

    def __post_init__(self) -> None:
        _check(is_integer_valued(self.gap) and self.gap >= 0,
               f"gap must be an integer number of steps >= 0, got {self.gap}")

    @property
    def defined_from(self) -> int:
        """First step at which both points exist: the gap."""
        return int(self.gap)

    def weights(self, t: int):
        """(steps j, weights w): ½ at t − gap and at t. ValueError before the gap."""
        return NPoint(2, self.gap).weights(t)

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True)
class NPoint:
    """z_t = (1/N) Σ_{i<N} θ_{t − i·gap}; equals θ_t while t < (N−1)·gap (theory.md §3.5)."""

    n: int                        # N points, >= 1
    gap: int                      # steps between consecutive points, >= 0

    def __post_init__(self) -> None:
        _check(is_integer_valued(self.n) and self.n >= 1, f"points N must be an integer >= 1, got {self.n}")
        _check(is_integer_valued(self.gap) and self.gap >= 0,
               f"gap must be an integer number of steps >= 0, got {self.gap}")

    @property
    def defined_from(self) -> int:
        """First step at which all N points exist: (N − 1)·gap."""
        return (int(self.n) - 1) * int(self.gap)

    def weights(self, t: int):
        """(steps j, weights w): 1/N at t − i·gap, i < N. ValueError before (N − 1)·gap."""
        _check(t >= self.defined_from, f"{variant_name(self)} is not defined before step {self.defined_from}")
        n = int(self.n)
        return int(t) - int(self.gap) * np.arange(n)[::-1], np.full(n, 1.0 / n)

    def to_dict(self) -> dict:
        return _to_dict(self)


Averaging = Union[NoAverage, EMA, SWA, TwoPoint, NPoint]
AVERAGING_KINDS = {c.__name__: c for c in (NoAverage, EMA, SWA, TwoPoint, NPoint)}


def _to_dict(avg) -> dict:
    """{"kind": class name, field: value, ...}: the record of an average in config.json (``averaging_from_dict``
    reads it back to an equal spec)."""
    return {"kind": type(avg).__name__, **{f.name: getattr(avg, f.name) for f in fields(avg)}}


def averaging_from_dict(d: dict) -> Averaging:
    """The spec an average's ``to_dict()`` recorded; ValueError naming the kinds for anything else."""
    _check(isinstance(d, dict) and d.get("kind") in AVERAGING_KINDS,
           f"not an averaging record: {d!r}; expected a dict with kind in {sorted(AVERAGING_KINDS)}")
    cls = AVERAGING_KINDS[d["kind"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


# ================================================================================================== variant names
# The one definition of how an average is named in a run (trajectory series eval/<split>_loss_<name>, config.json
# "variants", docs/run-series.md): written by empirical/averaging.py, and the key compare/load.py reads each recorded
# average under. A name carries the average's shape (decay, gap, N), not its timing: start / every / length live in
# config.json ("averaging.specs").

VARIANT_NAME_RE = re.compile(r"^(?:(?P<raw>raw)|(?P<swa>swa)|ema_(?P<decay>[0-9.eE+-]+)|two_point_k(?P<gap>\d+)"
                             r"|points_n(?P<n>\d+)_g(?P<g>\d+))$")


def variant_name(avg: Averaging) -> str:
    """Name of an average in a run directory: ``raw`` (NoAverage), ``ema_<γ>`` (γ as Python's shortest float repr,
    e.g. ``ema_0.999``, so it parses back to the same float), ``swa``, ``two_point_k<gap>``, ``points_n<N>_g<gap>``."""
    if isinstance(avg, NoAverage):
        return "raw"
    if isinstance(avg, EMA):
        return f"ema_{float(avg.decay)!r}"
    if isinstance(avg, SWA):
        return "swa"
    if isinstance(avg, TwoPoint):
        return f"two_point_k{int(avg.gap)}"
    if isinstance(avg, NPoint):
        return f"points_n{int(avg.n)}_g{int(avg.gap)}"
    raise ValueError(f"not an averaging spec: {avg!r}; give NoAverage, EMA, SWA, TwoPoint or NPoint")


def parse_variant_name(name: str) -> Averaging:
    """Inverse of :func:`variant_name`: the spec of a variant name, with the default timing (start 0, every 1; read
    the run's config.json for its own). ValueError for any other name (e.g. ``raw_running_bn``, not an average)."""
    m = VARIANT_NAME_RE.match(name) if isinstance(name, str) else None
    if not m:
        raise ValueError(f"unknown variant {name!r}; expected raw, ema_<decay>, swa, two_point_k<gap>, "
                         f"points_n<N>_g<gap>")
    if m.group("raw"):
        return NoAverage()
    if m.group("swa"):
        return SWA()
    if m.group("decay") is not None:
        try:
            return EMA(decay=float(m.group("decay")))
        except ValueError as e:
            raise ValueError(f"variant {name!r}: {e}") from None
    if m.group("gap") is not None:
        return TwoPoint(gap=int(m.group("gap")))
    return NPoint(n=int(m.group("n")), gap=int(m.group("g")))
