"""When each evaluation and measurement of ``empirical.run`` is due: the one place that answers it (the training
loop, the benchmark of the recording's cost and the docs all ask this module).

Two clocks, both in optimiser steps:

* an **evaluation** of every variant at ``done`` (θ_done, after ``done`` updates): "regular" (train-eval and test
  splits) every ``eval_every`` steps and at the end, "dense" (test split only) on the dense window's steps;
* a **measurement** (bank, probe, align, curv: docs/run-series.md) on θ_step before update ``step``, each every its
  own number of steps.

Both measure the raw weights with recomputed BN statistics (``empirical.bn.ConsistentRaw``, cached per step), so a
measurement at a step that is also an evaluation step reuses the evaluation's recomputation; any other measurement
step pays one recomputation of its own (``needs_recompute``).
"""
from __future__ import annotations

from dataclasses import dataclass

MEASUREMENTS = ("bank", "probe", "align", "curv")


def bank_uses(cfg) -> list[int]:
    """The steps whose update trains on each of the K bank batches (``static/bank_used_at``): evenly spaced
    (multiples of --bank-every) inside the dense evaluation window, kept --bank-span away from its ends, so the dip
    after each use falls where the model is calibrated and the bank around it shares the evaluations' BN
    recomputation; over the whole run when there is no dense window. Computed from --steps (not --max-steps): a
    shortened run keeps the bank of the full one (a later use is recorded as -1)."""
    K, stride = cfg.bank_size, max(cfg.bank_every, 1)
    lo, hi = 0, cfg.steps
    if cfg.eval_dense_every > 0:
        lo, hi = max(cfg.eval_dense_from, 0), min(cfg.dense_window_end(), cfg.steps)
        if hi - lo > 2 * cfg.bank_span + K * stride:
            lo, hi = lo + cfg.bank_span, hi - cfg.bank_span
    # multiples of the bank's cadence, so the bank is measured on θ_u itself (the last point before the use)
    return [min(stride * round((lo + (k + 0.5) * (hi - lo) / K) / stride), cfg.steps - 1) for k in range(K)]


@dataclass(frozen=True)
class Cadence:
    """The due-rules of one run (module docstring). ``every``: {measurement: steps between, 0 = off}."""

    stop: int
    eval_every: int
    dense: frozenset
    every: dict
    bank_span: int = 0               # steps either side of each bank use measured every every["bank"]; 0 = everywhere
    bank_uses: tuple = ()

    @classmethod
    def of(cls, cfg) -> "Cadence":
        """The cadence of a resolved ``empirical.config.RunConfig``."""
        return cls(stop=cfg.stop, eval_every=cfg.eval_every, dense=frozenset(cfg.dense_eval_steps()),
                   every={k: getattr(cfg, f"{k}_every") for k in MEASUREMENTS}, bank_span=cfg.bank_span,
                   bank_uses=tuple(bank_uses(cfg)))

    def evaluation(self, done: int) -> str | None:
        """"regular", "dense" or None: the evaluation due after ``done`` updates (step 0 is evaluated once at the
        start of a new run, outside this rule)."""
        if (self.eval_every > 0 and done % self.eval_every == 0) or done == self.stop:
            return "regular"
        return "dense" if done in self.dense else None

    def measurements(self, step: int) -> tuple[str, ...]:
        """The measurements due on θ_step, in the order they are taken: each at the multiples of its cadence; with
        a bank span, the bank only within the span of a use and at the regular evaluations (which prepare θ_step's
        BN statistics anyway)."""
        return tuple(k for k in MEASUREMENTS if self.every[k] > 0 and step % self.every[k] == 0
                     and (k != "bank" or self._bank_here(step)))

    def _bank_here(self, step: int) -> bool:
        return (self.bank_span <= 0 or step == 0 or self.evaluation(step) == "regular"
                or any(abs(step - u) <= self.bank_span for u in self.bank_uses))

    def needs_recompute(self, step: int) -> bool:
        """True when a measurement is due on θ_step and no evaluation has prepared θ_step's BN statistics (the
        evaluation after ``step`` updates, or the start-of-run evaluation at step 0)."""
        return bool(self.measurements(step)) and step != 0 and self.evaluation(step) is None

    def counts(self, start: int = 0) -> dict[str, int]:
        """How often each thing happens over steps [start, stop): every measurement, the BN recomputations the
        measurements need of their own ("recompute"), and the regular and dense evaluations."""
        out = {k: 0 for k in (*MEASUREMENTS, "recompute", "regular", "dense")}
        for s in range(start, self.stop):
            for k in self.measurements(s):
                out[k] += 1
            out["recompute"] += self.needs_recompute(s)
            e = self.evaluation(s + 1)
            if e:
                out[e] += 1
        return out
