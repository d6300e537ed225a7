"""BatchNorm statistics for averaged weights (theory.md §2.7 item 4, §4.3).

Averaged weights come with no matching running statistics, the most reported failure of weight averaging (BN stats
of the raw model, or ``momentum=0.`` instead of ``None``, Lightning #14866). The project treats this as an
experimental factor, recorded as ``bn_mode`` in config.json:

* ``recompute`` (default): reset the BN running statistics and re-estimate them with a cumulative average
  (``momentum=None``) over fixed un-augmented training batches, in train mode, with the variant's weights — the raw
  weights included, so raw and averaged weights are compared under one procedure. The raw weights with their
  training-time running statistics are recorded beside them as the variant ``raw_running_bn``: on digits that
  difference is as large as the averaging gains (docs/results.md).
* ``averaged``: use the BN buffers averaged alongside the weights (``WeightAverages(average_buffers=True)``).
* ``raw``: use the raw (live) model's BN buffers unchanged.

``recompute_bn`` exists instead of torch.optim.swa_utils.update_bn because that calls ``model(input[0])`` only; the
``call_fn`` hook asked for in pytorch #49082 lets the loop add autocast, channels_last or dict batches.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

BN_MODES = ("recompute", "averaged", "raw")
# The raw weights with their training-time running statistics (as deployed); in mode 'recompute' a variant of its own.
RAW_RUNNING_BN = "raw_running_bn"


def evaluated_variants(bn_mode: str, averages) -> list[str]:
    """The variants one evaluation covers: raw, raw_running_bn (only in bn_mode 'recompute'; in the other modes the
    running statistics are the procedure itself, so it would equal raw), then the given average names."""
    return ["raw", *([RAW_RUNNING_BN] if bn_mode == "recompute" else []), *averages]


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]


def _to(batch: Any, device) -> Any:
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _default_call(model: nn.Module, batch: Any) -> Any:
    return model(batch[0] if isinstance(batch, (list, tuple)) else batch)


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Iterable, *, call_fn: Callable[[nn.Module, Any], Any] | None = None,
                 device=None) -> int:
    """Re-estimate every BN layer's running mean/var from ``batches``; returns the number of batches forwarded.

    Each BN layer's running statistics are reset and its momentum set to None, so after K batches running_mean is
    the mean of the K batch means and running_var the mean of the K unbiased batch variances (PyTorch's cumulative
    average). Batches go through ``call_fn(model, batch)`` (default ``model(batch[0])``, or ``model(batch)`` for a
    tensor) in train mode under no_grad, moved to ``device`` if given. Momenta and every module's train/eval flag
    are restored, also on error. A model without BN returns 0 without forwarding anything; no batches with BN
    layers present raises ValueError (the reset statistics would be mean 0 / var 1).
    """
    layers = _bn_layers(model)
    if not layers:
        return 0
    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("recompute_bn needs at least one batch (got none); with no batches the statistics "
                         "would be the reset values mean 0, var 1") from None
    call = call_fn or _default_call
    momenta = [m.momentum for m in layers]
    flags = [(m, m.training) for m in model.modules()]
    n = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for batch in _chain(first, it):
            call(model, _to(batch, device))
            n += 1
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        for m, flag in flags:
            m.training = flag
    return n


def _chain(first, rest):
    yield first
    yield from rest


@torch.no_grad()
def _copy_buffers(src: nn.Module, dst: nn.Module) -> None:
    """All buffers of ``src`` into ``dst`` by position (same architecture)."""
    a, b = list(src.buffers()), list(dst.buffers())
    if [x.shape for x in a] != [y.shape for y in b]:
        raise ValueError("raw_model and target have different buffers; they must share the architecture")
    for x, y in zip(a, b):
        y.copy_(x)


def prepare_variant(averages, name: str, target: nn.Module, raw_model: nn.Module, bn_mode: str, bn_batches,
                    call_fn: Callable[[nn.Module, Any], Any] | None = None, *, device=None) -> nn.Module:
    """The model to evaluate for variant ``name``: ``target`` loaded with the variant's weights and BN buffers per
    ``bn_mode`` (module docstring). Every variant goes through this one procedure, the raw weights included: in mode
    'recompute' 'raw' is ``target`` with the raw weights and recomputed statistics, exactly as an average is (an EMA
    of decay 0 equals the iterate, so it must evaluate identically, bit for bit). ``raw_running_bn`` is the raw model
    itself with its training-time running statistics: the weights as deployed, kept as their own variant so that the
    difference between the two procedures stays visible. In modes 'raw' and 'averaged' the raw weights' own running
    statistics are the procedure, so 'raw' is ``raw_model`` itself. In modes 'raw' and 'recompute' every buffer of
    ``target`` is first the raw model's (recompute then resets the BN ones); in 'averaged' the floating buffers are
    the averaged ones.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode {bn_mode!r}: choose one of {', '.join(BN_MODES)}")
    if name == RAW_RUNNING_BN or (name == "raw" and bn_mode != "recompute"):
        return raw_model
    if name == "raw":
        torch._foreach_copy_([p.detach() for p in target.parameters()], [p.detach() for p in raw_model.parameters()])
    else:
        if bn_mode == "averaged" and not averages.average_buffers:
            raise ValueError("bn_mode 'averaged' needs WeightAverages(..., average_buffers=True)")
        averages.copy_into(name, target)  # parameters (+ averaged float buffers and counters if average_buffers)
    if bn_mode != "averaged":         # 'raw' and 'recompute' start from the raw model's buffers
        _copy_buffers(raw_model, target)
    if bn_mode == "recompute":
        recompute_bn(target, bn_batches, call_fn=call_fn, device=device)
    return target


class ConsistentRaw:
    """The raw weights prepared by :func:`prepare_variant` (the evaluation procedure of every variant), on a module
    of their own and cached per optimiser step, so that the evaluation at step t and the probes, bank, alignment and
    curvature measured on θ_t share one BN recomputation (docs/run-series.md says which statistics each series uses).
    """

    def __init__(self, target: nn.Module, bn_mode: str, bn_batches, call_fn=None, *, device=None):
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode {bn_mode!r}: choose one of {', '.join(BN_MODES)}")
        self.target, self.bn_mode, self.bn_batches = target, bn_mode, list(bn_batches)
        self.call_fn, self.device, self._step = call_fn, device, None

    def __call__(self, raw_model: nn.Module, step: int) -> nn.Module:
        """The BN-consistent raw model at ``step`` (the caller guarantees raw_model holds θ_step)."""
        if self.bn_mode != "recompute":
            return raw_model
        if self._step != step:
            self._step = None   # a failure half way must not leave a stale cache entry
            prepare_variant(None, "raw", self.target, raw_model, self.bn_mode, self.bn_batches, self.call_fn,
                            device=self.device)
            self._step = step
        return self.target
