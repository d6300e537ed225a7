"""Noisy-quadratic model (NQM) of SGD and the equivalence between weight averaging and LR schedules.

Reference: Sandler, Zhmoginov, Vladymyrov & Miller, "Training trajectories, mini-batch losses and the curious role
of the learning rate", arXiv 2301.02312. Formulas: docs/theory.md (project reconstruction, sections cited
in each docstring). This package imports numpy and scipy (and sympy in theory.symbolic only), never torch.

Public API (``from theory import ...``): the specifications of theory/spec.py — the model ``NQM``, the optimiser
``SGD``, the schedules, the averages ``EMA``, ``SWA``, ``TwoPoint``, ``NPoint``, ``NoAverage`` (the same objects
``empirical.WeightAverages`` takes), ``variant_name`` / ``parse_variant_name`` (how a run names each average) and
``check_ema_decay``; and, loaded on first use, the stationary variances and equivalent rates of theory/stationary.py
and ``scalar_equivalent_lr``; the answers of theory/advice.py: ``rank_ema_decays``, ``rank_swa_starts`` (which
decay or SWA start gains most, with its range over the spectra the data allow) and ``equivalent_schedule`` (the LR
schedule an average acts like, as a callable ``lr(step)``; docs/library.md); ``match_switch`` / ``scan_switch`` of
theory/matching.py (the constant-LR switch whose raw loss matches an average's over a window of steps, §3.10). The
submodules (``theory.moments``,
``theory.equivalence``, ...) hold the rest.

Notation (per eigendirection k of the Hessian H):

=========  =====================================================================
h          curvature h_k (1/LR units)
σ²         variance of the batch minimisers θ_B along u_k (parameter²)
λ, λ_t     learning rate (PyTorch units); η a probe LR of a one-step experiment
μ          heavy-ball momentum (PyTorch convention)
α = λh     step fraction (dimensionless); α_eff = λh/(1−μ); a = 1 − α
γ, β       EMA decay per optimiser step and β = 1 − γ
m, v       mean and variance of x = u_kᵀ(θ − θ*)
v∞         stationary variance at constant LR
k, N, n    two-point gap (steps), number of points, SWA window (iterates)
=========  =====================================================================
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# The specifications are the public vocabulary (numpy only, imported at once); empirical.WeightAverages takes the
# same EMA / SWA / TwoPoint / NPoint objects, so theory and training share one definition of each average.
from theory.spec import (EMA, NQM, SGD, SWA, WSD, Averaging, Constant, Cosine, Hyperbolic, Linear, NoAverage,
                         NPoint, Piecewise, Schedule, Step, TwoPoint, Warmup, check_ema_decay, make_schedule,
                         parse_variant_name, variant_name)

# Loaded on first use (they pull in scipy and the moment engine).
# (not the function theory.equivalence.equivalence: its name is the submodule's, which `from theory import
# equivalence` must keep returning)
_LAZY = {"scalar_equivalent_lr": "theory.equivalence",
         "averaged_variance": "theory.stationary", "iterate_variance": "theory.stationary",
         "equivalent_alpha": "theory.stationary", "equivalent_alpha_approx": "theory.stationary",
         "max_stable_alpha": "theory.stationary",
         "rank_ema_decays": "theory.advice", "rank_swa_starts": "theory.advice",
         "equivalent_schedule": "theory.advice", "RankedAverage": "theory.advice",
         "EquivalentSchedule": "theory.advice", "match_switch": "theory.matching",
         "scan_switch": "theory.matching", "SwitchMatch": "theory.matching"}

__all__ = ["EMA", "NQM", "SGD", "SWA", "WSD", "Averaging", "Constant", "Cosine", "Hyperbolic", "Linear", "NoAverage",
           "NPoint", "Piecewise", "Schedule", "Step", "TwoPoint", "Warmup", "check_ema_decay", "make_schedule",
           "parse_variant_name", "variant_name", *_LAZY]

if TYPE_CHECKING:
    from theory.advice import (EquivalentSchedule, RankedAverage, equivalent_schedule, rank_ema_decays,
                               rank_swa_starts)
    from theory.equivalence import scalar_equivalent_lr
    from theory.matching import SwitchMatch, match_switch, scan_switch
    from theory.stationary import (averaged_variance, equivalent_alpha, equivalent_alpha_approx, iterate_variance,
                                   max_stable_alpha)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'theory' has no attribute {name!r}")
