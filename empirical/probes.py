"""The one-step probe, gradient alignment and top curvature as objects for any training loop (theory.md §3.1, §3.7,
§4.2 E1, E3, E8; series names: docs/run-series.md groups ``probe``, ``align``, ``curv``).

Each object holds the fixed batches it needs, and ``measure(step, model)`` returns a dict of the values on the
weights the model holds now (θ_step: call it before optimiser update ``step``, i.e. with ``step`` updates done).
The math is empirical/measure.py (eval-mode BatchNorm, the model is never modified); these classes only keep the
batches, the cadence and, when given a :class:`~empirical.recorder.Recorder`, log each result as one row of their
group so that ``compare.report`` and ``figures.build`` read it. BatchNorm: pass the model whose statistics you want
measured — empirical.run passes the raw weights with statistics recomputed like every variant's
(``WeightAverages.module('raw', bn_batches)``, docs/run-series.md).

    probe = OneStepProbe(train_batch=(x, y), heldout_batch=(xh, yh), lr=0.05, momentum=0.9, every=10)
    if probe.due(step):
        probe.measure(step, model)          # {"eta": [25], "loss_train": [25], ..., "fit_r2": float}
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from empirical import measure as M

Batch = tuple[torch.Tensor, torch.Tensor]   # (inputs, integer class targets)


def checked_int(name: str, v, lo: int) -> int:
    """``v`` as an int if it is an integer (not a bool) >= ``lo``; ValueError naming ``name`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _pair(name: str, batch, device) -> Batch:
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, torch.Tensor)
                                                                          for t in batch[:2])):
        raise ValueError(f"{name} must be an (inputs, targets) pair of tensors, got {type(batch).__name__}")
    x, y = batch[0], batch[1]
    return (x, y) if device is None else (x.to(device), y.to(device))


def _is_pair(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(isinstance(t, torch.Tensor) for t in v)


def batch_pairs(name: str, batches, device) -> list[Batch]:
    """``batches`` as a non-empty list of (inputs, targets) tensor pairs, moved to ``device`` if given."""
    out = [_pair(name, b, device) for b in batches]
    if not out:
        raise ValueError(f"{name}: give at least one (inputs, targets) batch")
    return out


class Measurement:
    """Base of the measurement objects: ``every`` (optimiser steps; 0 = only when you call ``measure``), ``due``,
    and ``recorder``, which receives each result as a row of ``group`` at its step (RunWriter and the Lightning
    callback attach theirs). The batches stay where they are given; :meth:`to` moves them to the model's device."""

    group: str = ""

    def __init__(self, every: int = 1):
        self.every = checked_int("every (steps)", every, 0)
        self.recorder = None
        self.device = None

    def due(self, step: int) -> bool:
        """Is a measurement due at ``step`` (a multiple of ``every``)?"""
        return self.every > 0 and step % self.every == 0

    def _log(self, step: int, values: Mapping[str, Any]) -> dict:
        if self.recorder is not None:
            self.recorder.log(self.group, step, **values)
        return dict(values)

    def to(self, device) -> "Measurement":
        """Move the held batches to ``device`` (e.g. the model's, once it is known); returns self."""
        for k, v in vars(self).items():
            if _is_pair(v):
                setattr(self, k, (v[0].to(device), v[1].to(device)))
            elif isinstance(v, list) and v and all(_is_pair(b) for b in v):
                setattr(self, k, [(x.to(device), y.to(device)) for x, y in v])
        self.device = device
        return self

    def config(self) -> dict:
        """What config.json records about this measurement (cadence keys compare/ and figures/ read)."""
        return {f"{self.group}_every": self.every}


class OneStepProbe(Measurement):
    """One plain GD step θ − η∇ℓ_B(θ) on a fixed training batch B for log-spaced η, and the losses of B and of a
    held-out batch after it (theory.md §3.1, §4.2 E1/E3; group ``probe``). η spans ``lo``…``hi`` × λ_eff,
    λ_eff = lr/(1 − momentum) (absolute LR units, measure.probe_etas). Pass ``lr=`` to :meth:`measure` when the LR
    of your schedule changes."""

    group = "probe"

    def __init__(self, train_batch: Batch, heldout_batch: Batch, *, lr: float, momentum: float = 0.0,
                 n_etas: int = 25, lo: float = 1e-3, hi: float = 1e3, every: int = 1,
                 loss_fn: Callable | None = None):
        super().__init__(every)
        self.train_batch = _pair("train_batch", train_batch, None)
        self.heldout_batch = _pair("heldout_batch", heldout_batch, None)
        M.probe_etas(lr, momentum, n_etas, lo, hi)          # validates all five now, not at the first measurement
        self.lr, self.momentum, self.n_etas, self.lo, self.hi = float(lr), float(momentum), int(n_etas), lo, hi
        self.loss_fn = loss_fn

    def etas(self, lr: float | None = None) -> np.ndarray:
        """The probe LRs η for base LR ``lr`` (default the constructor's), absolute LR units."""
        return M.probe_etas(self.lr if lr is None else lr, self.momentum, self.n_etas, self.lo, self.hi)

    def measure(self, step: int, model: nn.Module, lr: float | None = None) -> dict:
        """{"eta", "loss_train", "loss_heldout", "loss0_train", "loss0_heldout", "grad_sq", "gHg", "fit_coef",
        "fit_r2", "fit_coef_heldout", "fit_r2_heldout"} on θ_step (measure.one_step_probe)."""
        etas = self.etas(lr)
        (x, y), (xh, yh) = self.train_batch, self.heldout_batch
        return self._log(step, {"eta": etas, **M.one_step_probe(model, x, y, xh, yh, etas, loss_fn=self.loss_fn)})

    def config(self) -> dict:
        return {**super().config(), "probe_etas": self.n_etas, "probe_lo": self.lo, "probe_hi": self.hi}


class GradientAlignment(Measurement):
    """cos(g_B, ĝ): the gradient of a batch B against the mean gradient ĝ of ``ref_batches`` (theory.md §3.7,
    §4.2 E8; group ``align``). B is the batch passed to :meth:`measure` (empirical.run: the batch about to be
    trained on), else ``batch`` from the constructor."""

    group = "align"

    def __init__(self, ref_batches: Sequence[Batch], batch: Batch | None = None, *, every: int = 1,
                 loss_fn: Callable | None = None):
        super().__init__(every)
        self.ref_batches = batch_pairs("ref_batches", ref_batches, None)
        self.batch = None if batch is None else _pair("batch", batch, None)
        self.loss_fn = loss_fn

    def measure(self, step: int, model: nn.Module, batch: Batch | None = None) -> dict:
        """{"cos": cos(g_B, ĝ)} on θ_step (measure.grad_alignment)."""
        b = self.batch if batch is None else _pair("batch", batch, self.device)
        if b is None:
            raise ValueError("GradientAlignment.measure needs the batch B: pass batch= here or to the constructor")
        return self._log(step, {"cos": M.grad_alignment(model, b[0], b[1], self.ref_batches, loss_fn=self.loss_fn)})


class TopCurvature(Measurement):
    """The largest-magnitude Hessian eigenvalue of the mean loss over ``batches`` by ``iters`` power-iteration steps
    on Hessian-vector products, 1/(LR units) (theory.md §3.1; group ``curv``, series ``top_eig``)."""

    group = "curv"

    def __init__(self, batches: Sequence[Batch], *, iters: int = 20, seed: int = 0, every: int = 1,
                 loss_fn: Callable | None = None):
        super().__init__(every)
        self.batches = batch_pairs("batches", batches, None)
        self.iters, self.seed, self.loss_fn = checked_int("iters", iters, 1), int(seed), loss_fn

    def measure(self, step: int, model: nn.Module) -> dict:
        """{"top_eig": λ_max} on θ_step (measure.top_curvature; start vector seeded by seed + step)."""
        return self._log(step, {"top_eig": M.top_curvature(model, self.batches, iters=self.iters,
                                                           seed=self.seed + step, loss_fn=self.loss_fn)})

    def config(self) -> dict:
        return {**super().config(), "curv_iters": self.iters, "curv_batches": len(self.batches)}
