"""PyTorch Lightning: every average, the fixed-batch bank and the probes of a LightningModule, written as a run
directory that ``compare.report`` and ``figures.build`` read (docs/lightning.md; theory.md §3-4).

    from empirical import EMA, SWA, TwoPoint, FixedBatchBank, OneStepProbe
    from empirical.lightning import AveragingCallback

    cb = AveragingCallback([EMA(0.999, start=200), SWA(start=600), TwoPoint(50)], out="runs/mine",
                           test_batches=test_batches, bn_batches=bn_batches, validate_with="ema_0.999",
                           measurements=[FixedBatchBank(train_batches, heldout_batches, train_at=[100, 300], every=10),
                                         OneStepProbe(b, hb, lr=0.05, momentum=0.9, every=50)])
    pl.Trainer(max_steps=1000, callbacks=[cb]).fit(module, loader)

Needs the optional extra ``lightning`` (pytorch-lightning; its tested version is pinned in constraints.txt); this is
the only module of the project that imports it (``lightning.pytorch`` is used when that is the one installed).

What it does, per optimiser step (``trainer.global_step`` = updates done, the project's ``step``):
before the update, the due measurements on θ_step (BN-consistent raw weights, as empirical.run) and the bank batch
planned for this step copied into the batch Lightning is about to train on (same shapes); after it, every average
updated, the train loss and LR recorded, and every ``eval_every`` steps raw, raw_running_bn and each average
evaluated on ``test_batches`` with BatchNorm recomputed on ``bn_batches`` (the test split alone at the recording
plan's dense steps). Each evaluation also goes to the trainer's loggers (TensorBoard, CSV, W&B, ...; rank 0) as
``test_loss/<variant>``, ``test_acc/<variant>``, ``train_loss/<variant>``, ``train_acc/<variant>`` and
``dist/<variant>`` (‖θ_avg − θ‖), at Lightning's own logging step (after update s: s − 1, where Lightning logs the
validation metrics of the same weights; the run directory keeps s). The module's ``forward`` must return logits
for ``loss_fn`` (default cross-entropy). One optimiser; with gradient accumulation an update happens every few
batches, and only then are the averages updated.

Recording plan: unless told otherwise (``plan=False``, or a plan of your own) the callback makes
``empirical.library.default_plan(total steps, lr, μ)`` at the start of the fit and adds the plan's
two-point lags missing from ``averages`` and its dense test evaluation, so that compare.report calibrates on the
run; with no ``averages`` at all the plan's EMAs, SWA and lags are used.

Checkpoints: the averages, the recorded series and the plan are the callback's ``state_dict`` (tensors and plain
Python), saved in every Lightning checkpoint; ``trainer.fit(module, loader, ckpt_path=...)`` with a new callback
continues them exactly (the run directory: ``out``, default the one the checkpoint was writing).

DDP: every rank keeps the averages (updated from its own weights, which DDP keeps identical across ranks, so the
averages are too, with no communication per step), because validation with an average runs on every rank; rank 0
alone measures, evaluates on ``test_batches``, logs and writes the run directory; a bank batch is swapped in on
every rank (that update's global batch is the bank batch on each rank).
"""
from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

try:  # the pinned extra is pytorch-lightning; the unified `lightning` package ships the same API
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import lightning.pytorch as pl
    except ImportError:
        raise ImportError("empirical.lightning needs PyTorch Lightning: pip install -e '.[lightning]' "
                          "(pytorch-lightning; its tested version is pinned in constraints.txt)") from None

from empirical.averaging import WeightAverages
from empirical.bank import FixedBatchBank
from empirical.library import RecordingPlan, RunWriter, default_plan, optimizer_config
from empirical.probes import Measurement
from empirical.recorder import tensorboard_tag
from theory.spec import EMA, SWA, Averaging, parse_variant_name

STATE_FORMAT = 1


def _warn(trainer, message: str) -> None:
    if trainer.is_global_zero:
        warnings.warn(message, stacklevel=3)


def _log_step(trainer, step: int) -> int:
    """The step Lightning's own logging uses now (what LearningRateMonitor logs at): the loops' count of optimiser
    steps before the current one, so after update s it is s − 1, where Lightning logs the validation metrics of the
    same weights θ_s; loggers that need increasing steps (W&B) then see ours and Lightning's in order."""
    return int(getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped", step))


class AveragingCallback(pl.Callback):
    """Keeps ``averages`` (theory.spec EMA / SWA / TwoPoint / NPoint, several at once; None: the recording plan's)
    of the LightningModule and the ``measurements``, and writes the run directory ``out`` (module docstring).

    ``test_batches``: held-out (inputs, targets) batches every variant is evaluated on; ``train_batches``: optional
    training-set batches for eval/train_*; ``bn_batches``: un-augmented training batches for the BatchNorm
    recomputation (None: the running statistics); ``eval_every``: steps between evaluations (also when the
    multi-point averages are read; default the plan's, else 100); ``measurements``: a FixedBatchBank (at most one:
    every rank trains on its batch at its steps) and probe / alignment / curvature objects, as RunWriter takes them;
    ``config``: anything else to record in config.json; ``loss_fn(logits, targets)``: the mean loss of the
    evaluation (default cross-entropy). The LR and momentum compare.report calibrates with are the optimiser's
    (its base LR and, for torch.optim.SGD, its μ; any other optimiser records momentum null, its type and
    hyperparameters, and why: empirical.library.optimizer_config).

    ``plan``: None (default) = ``default_plan(total steps, lr, μ)`` made at the start of the fit, for a constant LR
    to the end (a warning and no plan when the run is too short to calibrate); a RecordingPlan of your own, e.g.
    ``default_plan(total, lr, μ, constant_until=S)`` when the LR decays from update S; or False for exactly the
    averages given.
    ``validate_with``: an EMA or SWA variant name (``"ema_0.999"``, ``"swa"``): during every validation the
    LightningModule holds that average, BatchNorm prepared as for the run's evaluations (empirical.bn), and its own
    weights and buffers are put back afterwards; before the average starts it equals the raw weights (with the same
    BN procedure). Each evaluation also goes to ``trainer.loggers`` (``Trainer(logger=False)``: none).
    After fit: ``run_dir``, ``averages`` (the WeightAverages), ``plan`` and ``module(name)`` for an averaged copy.
    """

    def __init__(self, averages: Sequence[Averaging] | None = None, *, out: str | Path | None = None,
                 test_batches: Sequence, train_batches: Sequence | None = None, bn_batches: Sequence | None = None,
                 eval_every: int | None = None, measurements: Sequence[Measurement] = (), average_buffers: bool = False,
                 config: dict[str, Any] | None = None, loss_fn: Callable | None = None,
                 plan: RecordingPlan | bool | None = None, validate_with: str | None = None):
        super().__init__()
        if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int)
                                       or eval_every < 1):
            raise ValueError(f"eval_every must be an integer >= 1 (optimiser steps), got {eval_every!r}")
        if not (plan is None or plan is False or isinstance(plan, RecordingPlan)):
            raise ValueError(f"plan must be None (the default plan), False (none) or a RecordingPlan, got {plan!r}")
        if validate_with is not None:
            kind = parse_variant_name(validate_with)     # ValueError for a malformed name
            if not isinstance(kind, (EMA, SWA)):
                raise ValueError(f"validate_with={validate_with!r}: only an EMA or SWA variant can be validated at "
                                 f"any step (the multi-point averages keep their iterates for evaluation steps only)")
        self.specs = None if averages is None else list(averages)
        self.out, self._eval_every = out, eval_every
        self.test_batches = list(test_batches)
        self.train_batches = None if train_batches is None else list(train_batches)
        self.bn_batches = None if bn_batches is None else list(bn_batches)
        self.measurements = list(measurements)
        banks = [m for m in self.measurements if isinstance(m, FixedBatchBank)]
        if len(banks) > 1:
            raise ValueError(f"at most one FixedBatchBank among the measurements (it decides which batch every rank "
                             f"trains on), got {len(banks)}")
        self.bank = banks[0] if banks else None
        self.average_buffers = average_buffers
        self.config, self.loss_fn = dict(config or {}), loss_fn
        self._plan_arg, self.validate_with = plan, validate_with
        self.averages: WeightAverages | None = None
        self.plan: RecordingPlan | None = None
        self.run: RunWriter | None = None
        self.run_dir: Path | None = None
        self.eval_every: int | None = eval_every
        self._last_eval = self._measured_at = -1
        self._resume: dict | None = None        # the checkpoint's state, until the fit starts
        self._run_config: dict = {}
        self._stash: list[torch.Tensor] | None = None   # the module's own tensors while it holds an average

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":       # a new fit starts from nothing (or from its checkpoint), never from a previous fit
            self.averages, self.plan, self.run, self._stash = None, None, None, None
            self._last_eval = self._measured_at = -1

    def on_train_start(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        state, self._resume = self._resume, None
        if state is None and step != 0:
            raise ValueError(f"AveragingCallback: the fit starts at global_step {step} but the checkpoint holds no "
                             f"AveragingCallback state (the averages cannot be rebuilt); resume from a checkpoint "
                             f"saved with this callback in the Trainer")
        total = self._total_steps(trainer)
        if state is not None:
            self.plan = RecordingPlan.from_config(state["plan"]) if state["plan"] is not None else None
            self.eval_every, run_config = int(state["eval_every"]), state["run_config"]
        else:
            if not trainer.optimizers:
                raise ValueError("AveragingCallback needs an optimiser (configure_optimizers)")
            opt = optimizer_config(trainer.optimizers[0])
            lr, mom = opt["lr"], opt["momentum"]
            self.plan = self._make_plan(trainer, total, lr, mom)
            self.eval_every = self._eval_every or (self.plan.eval_every if self.plan is not None else 100)
            run_config = {"trainer": "pytorch_lightning", "max_steps": total, "eval_every": self.eval_every,
                          "validate_with": self.validate_with, **self.config}
        specs = self.specs
        if self.plan is not None:
            specs = self.plan.averages() if specs is None else self.plan.complete(specs)
        self.averages = WeightAverages(pl_module, specs or [], eval_every=self.eval_every, total_steps=total,
                                       average_buffers=self.average_buffers, plan=self.plan)
        if self.validate_with is not None and self.validate_with not in self.averages.all_names():
            raise ValueError(f"validate_with={self.validate_with!r} is not one of the averages "
                             f"{self.averages.all_names()}")
        if state is not None:
            self.averages.load_state_dict(state["averages"])
            self._last_eval, self._measured_at = int(state["last_eval"]), int(state["measured_at"])
            if self.bank is not None and state.get("bank_used_at") is not None:
                self.bank.used_at = [int(u) for u in state["bank_used_at"]]
        device = pl_module.device
        for m in self.measurements:           # their batches where the module is
            m.to(device)
        run_dir = None
        if trainer.is_global_zero:            # rank 0 alone measures, evaluates, logs and writes
            measurements = self.measurements
            if state is not None and state.get("run") is not None:
                self.run = RunWriter.resume(state["run"], self.out, averages=self.averages, measurements=measurements,
                                            bn_batches=self.bn_batches, loss_fn=self.loss_fn)
            else:
                self.run = RunWriter(self.out, trainer.optimizers[0], averages=self.averages,
                                     measurements=measurements, bn_batches=self.bn_batches, loss_fn=self.loss_fn,
                                     config=run_config)
            run_dir = str(self.run.run_dir)
        self._run_config = run_config
        run_dir = trainer.strategy.broadcast(run_dir, src=0)   # every rank knows where rank 0 writes
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run is not None and state is None:
            self._evaluate(0, pl_module, trainer)

    @staticmethod
    def _total_steps(trainer) -> int | None:
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        est = trainer.estimated_stepping_batches      # from max_epochs and the loader's length
        return int(est) if isinstance(est, (int, float)) and math.isfinite(est) else None

    def _make_plan(self, trainer, total: int | None, lr: float, mom: float | None) -> RecordingPlan | None:
        if self._plan_arg is False:
            return None
        if isinstance(self._plan_arg, RecordingPlan):
            return self._plan_arg
        if total is None:
            _warn(trainer, "AveragingCallback: no recording plan (the number of steps is not known: set max_steps); "
                  "compare.report may not be able to calibrate on this run")
            return None
        try:
            return default_plan(total, lr, mom)
        except ValueError as e:
            _warn(trainer, f"AveragingCallback: no recording plan: {e}")
            return None

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The averages (cloned tensors), the plan and, on rank 0, the run directory's recorded series: what a
        resumed fit continues from. Empty before the fit starts."""
        if self.averages is None:
            return {}
        avg = self.averages.state_dict()
        clone = lambda ts: [t.clone() for t in ts]  # noqa: E731 - saved after later updates (async checkpoint IO)
        avg = {**avg, "ema": [clone(y) for y in avg["ema"]], "swa": clone(avg["swa"]) if avg["swa"] else avg["swa"],
               "snapshots": {s: clone(v) for s, v in avg["snapshots"].items()},
               "nonfloat_buffers": clone(avg["nonfloat_buffers"])}
        return {"format": STATE_FORMAT, "averages": avg, "plan": self.plan.config() if self.plan else None,
                "eval_every": self.eval_every, "run_config": self._run_config,
                "run": self.run.state_dict() if self.run is not None else None,
                "last_eval": self._last_eval, "measured_at": self._measured_at,
                "bank_used_at": list(self.bank.used_at) if self.bank is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Kept until the fit starts (on_train_start), where the averages are rebuilt and loaded."""
        if state_dict.get("format") != STATE_FORMAT:
            raise ValueError(f"not an AveragingCallback state (format {STATE_FORMAT}); keys {list(state_dict)[:8]}")
        self._resume = state_dict

    # ------------------------------------------------------------------------------------------ per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.averages is None:
            return
        step = int(trainer.global_step)
        if step == self.averages.step and step != self._measured_at:   # once per update (the first micro-batch
            self._measured_at = step                                      # with gradient accumulation)
            if self.run is not None:
                lr = float(trainer.optimizers[0].param_groups[0]["lr"])
                pair = tuple(batch[:2]) if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
                self.run.measure(step, pl_module, lr=lr, batch=pair)   # batch: the B of GradientAlignment
            if self.bank is not None:                                  # every rank trains on the bank batch
                new = self.bank.batch_for(step, batch)
                if new is not batch:
                    self._overwrite(batch, new)

    @staticmethod
    @torch.no_grad()
    def _overwrite(batch, new) -> None:
        """Copy the bank batch into the tensors Lightning is about to train on (it keeps its own reference)."""
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2
                and all(a.shape == b.shape for a, b in zip(batch[:2], new))):
            raise ValueError("the bank batch planned for this step must have the shape of the training batches "
                             "((inputs, targets), same batch size: use drop_last=True)")
        batch[0].copy_(new[0])
        batch[1].copy_(new[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.averages is None:
            return
        step = int(trainer.global_step)
        if step == self.averages.step:     # no optimiser step this batch (accumulation, or a skipped step)
            return
        self.averages.update(pl_module, step)
        if self.run is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.run.train(step - 1, float(loss.detach()), float(trainer.optimizers[0].param_groups[0]["lr"]))
        if step % self.eval_every == 0:
            self._evaluate(step, pl_module, trainer)
        elif self.plan is not None and self.plan.is_dense(step):
            self._evaluate(step, pl_module, trainer, dense=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.run is None:
            return
        step = self.averages.step
        if self._last_eval != step:        # the last step, off the eval_every grid (its iterates were kept)
            self._evaluate(step, pl_module, trainer)
        self.run.close("ok", step)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore(pl_module)
        if self.run is not None:
            # the files stay valid: what was recorded up to the last update, and why it stopped
            self.run.close("interrupted", self.averages.step, error=f"{type(exception).__name__}: {exception}")
            self.run = None

    # ------------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        """With ``validate_with``: the module holds the average (BN per the run's procedure) while it validates."""
        if self.validate_with is None or self.averages is None or self._stash is not None:
            return
        name = self.validate_with if self.validate_with in self.averages.names() else "raw"
        held = self.averages.prepare(name, self.bn_batches, model=pl_module, device=pl_module.device)
        if held is pl_module:
            return
        own = list(itertools.chain(pl_module.parameters(), pl_module.buffers()))
        self._stash = [t.detach().clone() for t in own]
        with torch.no_grad():
            for dst, src in zip(own, itertools.chain(held.parameters(), held.buffers())):
                dst.copy_(src)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._restore(pl_module)

    @torch.no_grad()
    def _restore(self, pl_module) -> None:
        if self._stash is None:
            return
        for dst, src in zip(itertools.chain(pl_module.parameters(), pl_module.buffers()), self._stash):
            dst.copy_(src)
        self._stash = None

    # ------------------------------------------------------------------------------------------ helpers
    def _evaluate(self, step: int, pl_module, trainer, dense: bool = False) -> None:
        """The eval row at ``step`` (test split only at a dense step), the files, and the loggers."""
        row = self.run.evaluate(step, pl_module, test=self.test_batches, train=None if dense else self.train_batches,
                                write=not dense)
        if dense:
            self.run.recorder.append_metrics()
        self._last_eval = step
        if trainer.loggers:
            metrics = {tensorboard_tag(k): v for k, v in row.items() if math.isfinite(v)}
            dist = self.run.recorder.last("dist")
            metrics.update({f"dist/{k}": v for k, v in dist.items() if k != "step" and math.isfinite(v)}
                           if dist.get("step") == step else {})
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=_log_step(trainer, step))

    def module(self, name: str, model=None) -> torch.nn.Module:
        """A new copy of the module with variant ``name``'s weights and BN per this callback's bn_batches (an
        independent module per call; WeightAverages.module)."""
        if self.averages is None:
            raise ValueError("no averages yet: fit first")
        return self.averages.module(name, self.bn_batches, model=model)
