"""empirical: weight averages, the fixed-batch bank and probes for any PyTorch training loop, and the ResNet runs of
``python -m empirical.run`` (README "Use it in your own training loop"; theory.md §3-4).

Public API (imported lazily, so ``python -m empirical.run --help`` and bad flags are answered before torch loads):

* averages, one definition each for theory and training (theory.spec): :class:`EMA`, :class:`SWA`,
  :class:`TwoPoint`, :class:`NPoint`, kept online by :class:`WeightAverages` (``update(model, step)``,
  ``module(name, bn_batches)``);
* measurements on the weights: :class:`FixedBatchBank`, :class:`OneStepProbe`, :class:`GradientAlignment`,
  :class:`TopCurvature` (``measure(step, model) -> dict``);
* the run directory compare.report and figures.build read: :class:`RunWriter` (over :class:`Recorder`),
  :func:`evaluate`, :func:`recompute_bn`; what a run must record to be calibrated: :func:`default_plan` (a
  :class:`RecordingPlan`); the optimiser as recorded: :func:`optimizer_config`;
* the answers as calls (docs/library.md): :func:`equivalent_lr_scheduler` (the LR scheduler an average stands
  for), :func:`posthoc_weights` (weights over checkpoints kept at any steps that emulate a target schedule),
  :func:`average_state_dicts` (their weighted average, BatchNorm recomputed);
* PyTorch Lightning: ``empirical.lightning.AveragingCallback`` (extra ``lightning``; imported only from there).
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EMA": "theory.spec", "SWA": "theory.spec", "TwoPoint": "theory.spec", "NPoint": "theory.spec",
    "NoAverage": "theory.spec", "variant_name": "theory.spec", "parse_variant_name": "theory.spec",
    "WeightAverages": "empirical.averaging",
    "FixedBatchBank": "empirical.bank",
    "OneStepProbe": "empirical.probes", "GradientAlignment": "empirical.probes", "TopCurvature": "empirical.probes",
    "Recorder": "empirical.recorder",
    "RunWriter": "empirical.library", "evaluate": "empirical.library", "default_plan": "empirical.library",
    "RecordingPlan": "empirical.library", "optimizer_config": "empirical.library",
    "recompute_bn": "empirical.bn",
    "equivalent_lr_scheduler": "empirical.answers", "posthoc_weights": "empirical.answers",
    "average_state_dicts": "empirical.answers",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:   # for type checkers and IDEs; at run time the names load on first use (__getattr__)
    from empirical.answers import average_state_dicts, equivalent_lr_scheduler, posthoc_weights
    from empirical.averaging import WeightAverages
    from empirical.bank import FixedBatchBank
    from empirical.bn import recompute_bn
    from empirical.library import RecordingPlan, RunWriter, default_plan, evaluate, optimizer_config
    from empirical.probes import GradientAlignment, OneStepProbe, TopCurvature
    from empirical.recorder import Recorder
    from theory.spec import EMA, SWA, NoAverage, NPoint, TwoPoint, parse_variant_name, variant_name


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'empirical' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
