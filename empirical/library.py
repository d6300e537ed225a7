"""A run directory from your own training loop, readable by ``compare.report`` and ``figures.build``
(docs/run-series.md; the same files ``python -m empirical.run`` writes).

:class:`RunWriter` owns a :class:`~empirical.recorder.Recorder` and writes config.json with what compare/ reads:
the LR and momentum (the NQM is calibrated with them, theory.md §2.6), every average's timing (its start and
period: compare rebuilds each average's weights over iterates from them, theory.md §3.8a), the cadences of the
measurements, and ``source_api: "library"``. What each analysis of ``compare.report`` needs (the rest is "not
testable here" in its claim table):

=====================================  =============================================================================
analysis                               recordings
=====================================  =============================================================================
calibration on D(τ) (the default)      TwoPoint averages at ≥ 4 lags, evaluated densely in the constant-LR window
calibration on probes (fallback)       ≥ 2 :class:`~empirical.probes.OneStepProbe` rows in that window
predicted vs observed gain per average ``evaluate`` rows of raw and the averages; ``train`` rows with the LR
dip after use (figure)                 a :class:`~empirical.bank.FixedBatchBank` with batches trained on
top curvature, alignment               :class:`~empirical.probes.TopCurvature`, ``GradientAlignment``
=====================================  =============================================================================

    run = RunWriter("runs/mine", lr=0.05, momentum=0.9, averages=avg, measurements=[bank, probe],
                    bn_batches=bn_batches)
    ...  # in the loop, with `step` optimiser updates done:
    run.measure(step, model); run.train(step, loss, lr); run.evaluate(step, model, test=test_batches)
    run.close()                                   # trajectory.npz + summary.json (status ok)
"""
from __future__ import annotations

import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from common import rundir
from empirical.averaging import WeightAverages
from empirical.bn import RAW_RUNNING_BN, evaluated_variants
from empirical.measure import evaluate
from empirical.probes import Measurement
from empirical.recorder import Recorder

SPLITS = ("test", "train")     # eval/<split>_loss_<variant>: compare reads "test" by default, "train" with --split


def averaging_config(averages: WeightAverages | None) -> dict:
    """The flat averaging keys compare/ reads from config.json (ema_start, swa_start, ...; steps) plus the full
    ``averaging`` block (WeightAverages.config: each variant as its theory.spec average)."""
    if averages is None:
        return {"ema_decays": [], "swa_start": None, "two_point_gaps": [], "n_points": []}
    c = averages.config()
    return {"ema_decays": c["ema_decay_per_step"], "ema_start": c["ema_start"], "ema_every": c["ema_every"],
            "swa_start": c["swa_start"], "swa_every": c["swa_every"], "swa_length": c["swa_length"],
            "two_point_gaps": c["two_point_gaps"], "n_points": c["n_points"], "n_point_gap": c["n_point_gap"],
            "eval_every": c["eval_every"], "average_buffers": c["average_buffers"], "averaging": c}


class RunWriter:
    """Writes one run directory for a training loop that is not ``empirical.run`` (module docstring).

    ``out``: the directory (created; must be empty or absent), or None for ``runs/empirical/<stamp>-<name>``.
    ``lr``: the peak LR (LR units) and ``momentum`` μ of torch.optim.SGD — log the LR of every step with
    :meth:`train` when it changes. ``averages``: your WeightAverages (its variants are evaluated by
    :meth:`evaluate`). ``measurements``: bank / probe / alignment / curvature objects; they get this writer's
    recorder, so their ``measure`` results land in the run. ``bn_batches``: a few un-augmented training batches;
    every variant, raw included, is evaluated with BatchNorm statistics recomputed on them (docs/run-series.md),
    and the raw weights with their own running statistics are the variant ``raw_running_bn``. ``config``: anything
    else to record (batch size, model name, ...). ``tensorboard``: also write the series as TensorBoard scalars
    (extra ``tensorboard``). ``loss_fn(logits, targets)``: the mean loss :meth:`evaluate` reports (default
    cross-entropy; accuracy is argmax agreement).
    """

    def __init__(self, out: str | Path | None, *, lr: float, momentum: float = 0.0,
                 averages: WeightAverages | None = None, measurements: Sequence[Measurement] = (),
                 bn_batches: Sequence | None = None, seed: int | None = None, name: str = "library",
                 config: Mapping[str, Any] | None = None, command: Sequence[str] | None = None,
                 call_fn: Callable | None = None, device=None, tensorboard: bool = False,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0 (the peak LR), got {lr!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.averages, self.measurements = averages, list(measurements)
        self.bn_batches = None if bn_batches is None else list(bn_batches)
        self.call_fn, self.device, self.loss_fn = call_fn, device, loss_fn
        self.bn_mode = "recompute" if self.bn_batches is not None else (
            "averaged" if averages is not None and averages.average_buffers else "raw")
        self.run_dir = rundir.new_run_dir("empirical", name, out=out)
        self.variants = evaluated_variants(self.bn_mode, averages.all_names() if averages is not None else [])
        columns = [f"{s}_{m}_{v}" for v in self.variants for s in SPLITS for m in ("loss", "acc")]
        self.recorder = (Recorder(self.run_dir, columns, tensorboard=True) if tensorboard   # the extra tensorboard
                         else Recorder(self.run_dir, columns))
        for m in self.measurements:
            m.recorder = self.recorder
            if hasattr(m, "_publish"):
                m._publish()                       # the bank's static/bank_used_at from the start
        self.config = {"source_api": "library", "lr": float(lr), "momentum": float(momentum), "seed": seed,
                       "bn_mode": self.bn_mode, "bn_batches": None if self.bn_batches is None else len(self.bn_batches),
                       **averaging_config(averages), "variants": self.variants,
                       **{k: v for m in self.measurements for k, v in m.config().items()}, **dict(config or {})}
        self.recorder.write_start(self.config, list(sys.argv if command is None else command),
                                  {"torch": torch.__version__, "api": "empirical library (RunWriter)"})
        self._t0, self._step = time.perf_counter(), 0

    # ----------------------------------------------------------------------------------------------- rows
    def train(self, step: int, loss: float, lr: float) -> None:
        """One ``train`` row: the mini-batch loss of update ``step`` (before it) and its LR (compare finds the
        constant-LR phase from these)."""
        self.recorder.log("train", step, loss=float(loss), lr=float(lr))
        self._step = max(self._step, int(step) + 1)    # updates done once this one is

    def raw_model(self, model: nn.Module) -> nn.Module:
        """The raw weights evaluated as every variant is (BN recomputed on bn_batches), for measurements."""
        if self.averages is None or self.bn_mode != "recompute":
            return model
        return self.averages.module("raw", self.bn_batches, model=model, call_fn=self.call_fn, device=self.device)

    def measure(self, step: int, model: nn.Module, **kwargs) -> dict:
        """Every measurement due at ``step`` (their ``every``) on θ_step — call it before update ``step`` — on the
        BN-consistent raw model (docs/run-series.md); ``kwargs`` go to the measurements that take them (``lr`` for
        the probe, ``batch`` for the alignment). Returns {group: values}."""
        due = [m for m in self.measurements if m.due(step)]
        if not due:
            return {}
        target = self.raw_model(model)
        out = {}
        for m in due:
            accepted = inspect.signature(m.measure).parameters
            out[m.group] = m.measure(step, target, **{k: v for k, v in kwargs.items() if k in accepted})
        return out

    def evaluate(self, step: int, model: nn.Module, *, test: Iterable, train: Iterable | None = None,
                 write: bool = True) -> dict:
        """``eval`` row at ``step``: loss and accuracy of raw, raw_running_bn and every average defined now on the
        ``test`` batches (and ``train`` batches if given), BN per ``bn_mode`` (a multi-point average whose
        iterates were not kept for this step, off the WeightAverages' eval_every grid, is left out: NaN); ``dist``
        row ‖θ_avg − θ‖. Then (with ``write``) trajectory.npz, summary.json (status running) and a metrics.csv row.
        Returns the eval row."""
        test, train = list(test), None if train is None else list(train)
        names = evaluated_variants(self.bn_mode, self.averages.available() if self.averages is not None else [])
        row = {}
        for name in names:
            if name == RAW_RUNNING_BN or self.averages is None:
                m = model
            else:
                m = self.averages.module(name, self.bn_batches, model=model, bn_mode=self.bn_mode,
                                         call_fn=self.call_fn, device=self.device)
            for split, batches in (("test", test), ("train", train)):
                if batches is not None:
                    loss, acc = evaluate(m, batches, device=self.device, loss_fn=self.loss_fn)
                    row[f"{split}_loss_{name}"], row[f"{split}_acc_{name}"] = loss, acc
        self.recorder.log("eval", step, **row)
        if self.averages is not None:
            self.recorder.log("dist", step, **self.averages.distances(model))
        self._step = max(self._step, int(step))
        if write:
            self.write("running", step)
            self.recorder.append_metrics()
        return row

    # ---------------------------------------------------------------------------------------------- files
    def write(self, status: str = "running", steps: int | None = None, **summary: Any) -> None:
        """trajectory.npz, then summary.json with ``status`` (running | ok | diverged | interrupted)."""
        steps = self._step if steps is None else int(steps)
        self.recorder.write(status, steps, eval=self.recorder.final_eval(self.variants),
                            wall_s=time.perf_counter() - self._t0, **summary)

    def close(self, status: str = "ok", steps: int | None = None, **summary: Any) -> Path:
        """The final files (status ``ok`` unless told otherwise; ``steps`` defaults to the updates logged by
        :meth:`train` or the last evaluation step); returns the run directory."""
        self.write(status, steps, **summary)
        if hasattr(self.recorder, "close"):      # the optional TensorBoard writer
            self.recorder.close()
        return self.run_dir
