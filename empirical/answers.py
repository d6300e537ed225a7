"""The product's answers for a PyTorch user: the LR scheduler an average stands for, post-hoc weights for any set of
checkpoints, and the weighted average of state dicts with BatchNorm recomputed (theory.md §3.3-3.6a, §4.3).

* :func:`equivalent_lr_scheduler`: a ``torch.optim.lr_scheduler.LambdaLR`` that follows
  :func:`theory.advice.equivalent_schedule` (the LR switch of an EMA, the 1/t cooldown of SWA, …).
* :func:`posthoc_weights`: weights over checkpoints kept at any steps whose average emulates a target LR schedule
  at one curvature (the inverse map of theory.md §3.6, on a grid as in §3.6a; the procedure of
  ``python -m empirical.posthoc``, :func:`empirical.posthoc.grid_weights`).
* :func:`average_state_dicts`: Σ w_j θ_j over state dicts or checkpoint files, one loaded at a time, with BN
  statistics recomputed by the project's one procedure (:func:`empirical.bn.recompute_bn`) when batches are given.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from theory.advice import EquivalentSchedule, equivalent_schedule
from theory.spec import Averaging

__all__ = ["equivalent_lr_scheduler", "posthoc_weights", "average_state_dicts"]

_SUM_TOL = 1e-6          # weights must sum to 1 within this (unless normalise=True)


# ------------------------------------------------------------------------------------------ the LR scheduler

class _Factor:
    """LambdaLR's multiplier: the equivalent LR of ``step`` over the LR it was computed at (picklable, so the
    scheduler's state_dict keeps it)."""

    def __init__(self, schedule: EquivalentSchedule):
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        return self.schedule(int(step)) / self.schedule.lr


def equivalent_lr_scheduler(optimizer: torch.optim.Optimizer, average: Averaging, lr: float, momentum: float, h,
                            noise) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose LR before update t (after t calls of ``scheduler.step()``) is ``lr(t)`` of
    :func:`theory.advice.equivalent_schedule` (average, lr, momentum, h, noise): train with it instead of keeping the
    average (theory.md §3.3-3.5). A parameter group at ``lr`` follows lr(t) exactly; a group at another LR is scaled
    in proportion. ValueError if a group's momentum differs from ``momentum`` (the equivalence depends on it).
    The schedule is ``scheduler.lr_lambdas[0].schedule``.

    >>> from theory.spec import EMA
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    >>> sched = equivalent_lr_scheduler(opt, EMA(0.995, start=2), lr=0.05, momentum=0.0, h=1.0, noise=1.0)
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 9)); opt.step(); sched.step()
    >>> lrs                                # 0.05, then α_eq of theory.md §3.3 (α = 0.05, γ = 0.995)
    [0.05, 0.05, 0.004556101, 0.004556101]
    """
    for i, g in enumerate(optimizer.param_groups):
        if "momentum" in g and not math.isclose(float(g["momentum"]), float(momentum), rel_tol=0, abs_tol=1e-12):
            raise ValueError(f"param group {i} has momentum {g['momentum']}, the equivalence was asked for momentum "
                             f"{momentum}: give the optimiser's")
    sched = equivalent_schedule(average, lr, momentum, h, noise)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=_Factor(sched))


# ------------------------------------------------------------------------------------------ post-hoc weights

def _lr_table(name: str, what, n: int) -> np.ndarray:
    """LR of updates 0..n−1 from a number, a schedule with ``lr_at`` (theory.spec, EquivalentSchedule), a callable
    step → LR, or a table of at least n values."""
    if isinstance(what, (int, float, np.number)) and not isinstance(what, bool):
        return np.full(n, float(what))
    if hasattr(what, "lr_at"):
        return np.asarray(what.lr_at(np.arange(n)), dtype=float)
    if callable(what):
        return np.array([float(what(t)) for t in range(n)])
    table = np.asarray(what, dtype=float)
    if table.ndim != 1 or table.size < n:
        raise ValueError(f"{name}: give a number, a schedule, a callable step -> LR or a table of at least {n} LRs "
                         f"(updates 0..{n - 1}); got shape {table.shape}")
    return table[:n]


def posthoc_weights(steps: Iterable[int], schedule, h: float, *, lr, momentum: float = 0.0, at: int | None = None):
    """Weights over checkpoints kept at ``steps`` (any steps, any order; a dict {step: path} gives its keys) whose
    weighted average emulates the iterate at step ``at`` of a run trained with the target ``schedule`` instead of
    the run's ``lr`` (theory.md §3.6, §3.6a).

    ``schedule`` (the target) and ``lr`` (what the run was trained with) are each a number (constant LR), a
    theory.spec schedule, a callable step → LR (e.g. :func:`theory.advice.equivalent_schedule`'s) or a table of
    per-update LRs. The target departs from the run at the first update where they differ; the run's LR must be
    constant from there to ``at`` (default: the last checkpoint of that stretch). The weights are exact per step for
    a direction of curvature ``h`` (1/LR units) and are split linearly onto the checkpoints; the result
    (empirical.posthoc.GridWeights) carries ``checkpoint_steps``, ``weights`` (sum 1) and what the grid costs at h
    (``kernel_rel_error``, ``variance_ratio``). ValueError (one line) when the checkpoints cannot represent it.

    >>> from theory.spec import Piecewise
    >>> w = posthoc_weights([0, 1, 2], Piecewise(0.5, boundaries=(1,), lrs=(0.25,)), 2.0, lr=0.5)
    >>> w.checkpoint_steps, [round(x, 12) for x in w.weights]   # α = λh = 1: the run's θ_2 = ε_1; the target's
    ([1, 2], [0.5, 0.5])
    >>> # update 1 at α = 1/2 gives ½θ_1 + ½ε_1 = ½θ_1 + ½θ_2
    """
    from empirical.posthoc import grid_weights

    try:
        ks = sorted({int(s) for s in steps})
    except (TypeError, ValueError):
        raise ValueError(f"steps must be integer checkpoint steps, got {steps!r}") from None
    if not ks or ks[0] < 0:
        raise ValueError(f"steps: give at least one checkpoint step >= 0, got {ks}")
    if not (isinstance(h, (int, float, np.number)) and math.isfinite(h) and h > 0):
        raise ValueError(f"h must be a finite curvature > 0 (1/LR units), got {h!r}")
    n = max(ks[-1], 1)
    p, q = _lr_table("lr", lr, n), _lr_table("schedule", schedule, n)
    return grid_weights(p, q, ks, float(h), float(momentum), at, target="the target schedule", at_flag="at")


# ------------------------------------------------------------------------------------------ averaging state dicts

def _state_of(item) -> Mapping[str, Any]:
    """A state dict from a mapping or a file: a project checkpoint (its digest checked, empirical.checkpoint.load)
    or any torch.save file (CPU, weights_only); a checkpoint dict's ``model`` or ``state_dict`` entry is taken."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if path.with_name(path.name + ".sha256").is_file():
            from empirical.checkpoint import load
            obj = load(path)
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except OSError as e:
                raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
            except Exception as e:   # weights_only refuses anything but tensors and plain containers
                raise ValueError(f"{path}: not a loadable state dict ({type(e).__name__}: {e})") from None
    elif isinstance(item, Mapping):
        obj = item
    else:
        raise ValueError(f"states: each item must be a state dict or a path, got {type(item).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        raise ValueError(f"{item if isinstance(item, (str, Path)) else 'a state'}: holds no state dict (entries "
                         f"{', '.join(map(str, list(obj)[:6]))}); give a model's state_dict()")
    return obj


def average_state_dicts(states: Sequence, weights: Sequence[float], *, normalise: bool = False,
                        model: nn.Module | None = None, bn_batches: Iterable | None = None,
                        call_fn: Callable[[nn.Module, Any], Any] | None = None) -> dict[str, torch.Tensor]:
    """Σ_j w_j θ_j over ``states`` (state dicts or paths, loaded one at a time on the CPU): floating tensors summed in
    float64 and returned in their own dtype, every other entry (``num_batches_tracked``, …) from the last state.

    ``weights`` must sum to 1 within 1e-6 (negative weights, as post-hoc weights may have, are allowed); with
    ``normalise=True`` they are divided by their sum. With ``model`` the average is loaded into it; with
    ``bn_batches`` as well, its BatchNorm statistics are then recomputed on those batches
    (:func:`empirical.bn.recompute_bn`: reset, cumulative average over the batches in train mode; ``call_fn`` as
    there) and the model's state dict is returned. Bad input: ValueError, one line.

    >>> a, b = {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([4.0, 8.0])}
    >>> average_state_dicts([a, b], [0.25, 0.75])["w"]
    tensor([3., 7.])
    """
    from empirical.bn import recompute_bn
    from empirical.posthoc import stream_average

    states = list(states)
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise ValueError(f"weights must be numbers, got {weights!r}") from None
    if not states:
        raise ValueError("states: give at least one state dict or path")
    if len(w) != len(states):
        raise ValueError(f"weights: {len(w)} given for {len(states)} states; give one each")
    if not all(math.isfinite(x) for x in w):
        raise ValueError(f"weights must be finite, got {w}")
    total = math.fsum(w)
    if normalise:
        if total == 0:
            raise ValueError("weights sum to 0: cannot normalise them")
        w = [x / total for x in w]
    elif abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"weights sum to {total:.9g}, not 1 (within {_SUM_TOL:g}); pass normalise=True to divide "
                         f"them by their sum")
    if bn_batches is not None and model is None:
        raise ValueError("bn_batches needs model: the statistics are recomputed on the model loaded with the average")

    first: list = []

    def load(item):   # stream_average reads {"model": state dict}; check every state against the first one here
        sd = {k: v.detach().to("cpu") for k, v in _state_of(item).items()}
        if not first:
            first.append({k: (v.shape, v.is_floating_point()) for k, v in sd.items()})
        else:
            ref = first[0]
            if list(sd) != list(ref):
                miss, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
                raise ValueError(f"states[{len(first)}] has other keys than states[0] (missing "
                                 f"{miss[:3] or 'none'}, extra {extra[:3] or 'none'}, or another order)")
            for k, v in sd.items():
                want, got = ref[k], (v.shape, v.is_floating_point())
                if got != want:
                    raise ValueError(f"states[{len(first)}][{k!r}]: shape/dtype kind {got} differs from states[0]'s "
                                     f"{want}")
            first.append(None)
        return {"model": sd}

    acc, last = stream_average(states, w, load=load)
    out = {k: (acc[k].to(v.dtype) if k in acc else v) for k, v in last.items()}
    if model is None:
        return out
    model.load_state_dict(out)
    if bn_batches is not None:
        dev = next(iter(model.parameters()), None)
        recompute_bn(model, bn_batches, call_fn=call_fn, device=None if dev is None else dev.device)
    return model.state_dict()
