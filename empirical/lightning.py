"""PyTorch Lightning: every average, the fixed-batch bank and the probes of a LightningModule, written as a run
directory that ``compare.report`` and ``figures.build`` read (docs/tools.md "PyTorch Lightning"; theory.md §3-4).

    from empirical import EMA, SWA, TwoPoint, FixedBatchBank, OneStepProbe
    from empirical.lightning import AveragingCallback

    cb = AveragingCallback([EMA(0.999, start=200), SWA(start=600), TwoPoint(50)], out="runs/mine",
                           test_batches=test_batches, bn_batches=bn_batches, eval_every=50,
                           bank=FixedBatchBank(train_batches, heldout_batches, train_at=[100, 300], every=10),
                           probes=[OneStepProbe(b, hb, lr=0.05, momentum=0.9, every=50)])
    pl.Trainer(max_steps=1000, callbacks=[cb]).fit(module, loader)

Needs the optional extra ``lightning`` (pytorch-lightning; its tested version is pinned in constraints.txt); this is the only module of the
project that imports it (``lightning.pytorch`` is used when that is the one installed).

What it does, per optimiser step (``trainer.global_step`` = updates done, the project's ``step``):
before the update, the due measurements on θ_step (BN-consistent raw weights, as empirical.run) and the bank batch
planned for this step copied into the batch Lightning is about to train on (same shapes); after it, every average
updated, the train loss and LR logged, and every ``eval_every`` steps raw, raw_running_bn and each average
evaluated on ``test_batches`` with BatchNorm recomputed on ``bn_batches``. The module's ``forward`` must return
logits for ``loss_fn`` (default cross-entropy). One optimiser; with gradient accumulation an update happens every
few batches, and only then are the averages updated.
"""
from __future__ import annotations

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
from empirical.library import RunWriter
from empirical.probes import Measurement
from theory.spec import Averaging


def _first_lr(trainer) -> tuple[float, float]:
    """(LR, momentum) of the first parameter group of the first optimiser (torch.optim.SGD's names)."""
    if not trainer.optimizers:
        raise ValueError("AveragingCallback needs an optimiser (configure_optimizers)")
    g = trainer.optimizers[0].param_groups[0]
    mom = g.get("momentum", 0.0)
    return float(g["lr"]), float(mom if mom is not None else 0.0)


class AveragingCallback(pl.Callback):
    """Keeps ``averages`` (theory.spec EMA / SWA / TwoPoint / NPoint, several at once) of the LightningModule, the
    bank and the probes, and writes the run directory ``out`` (module docstring).

    ``test_batches``: held-out (inputs, targets) batches every variant is evaluated on; ``train_batches``: optional
    training-set batches for eval/train_*; ``bn_batches``: un-augmented training batches for the BatchNorm
    recomputation (None: the running statistics); ``eval_every``: steps between evaluations (also when the
    multi-point averages are read); ``lr``, ``momentum``: recorded for compare.report (default: the optimiser's
    first parameter group at the start); ``config``: anything else to record in config.json; ``loss_fn(logits,
    targets)``: the mean loss of the evaluation (default cross-entropy).
    After fit: ``run_dir``, ``averages`` (the WeightAverages) and ``module(name)`` for an averaged copy.
    """

    def __init__(self, averages: Sequence[Averaging], *, out: str | Path | None = None,
                 test_batches: Sequence, train_batches: Sequence | None = None, bn_batches: Sequence | None = None,
                 eval_every: int = 100, bank: FixedBatchBank | None = None, probes: Sequence[Measurement] = (),
                 lr: float | None = None, momentum: float | None = None, average_buffers: bool = False,
                 config: dict[str, Any] | None = None, loss_fn: Callable | None = None):
        super().__init__()
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1 (optimiser steps), got {eval_every!r}")
        self.specs, self.out, self.eval_every = list(averages), out, eval_every
        self.test_batches = list(test_batches)
        self.train_batches = None if train_batches is None else list(train_batches)
        self.bn_batches = None if bn_batches is None else list(bn_batches)
        self.bank, self.probes = bank, list(probes)
        self.lr, self.momentum, self.average_buffers = lr, momentum, average_buffers
        self.config, self.loss_fn = dict(config or {}), loss_fn
        self.averages: WeightAverages | None = None
        self.run: RunWriter | None = None
        self.run_dir: Path | None = None
        self._last_eval = self._measured_at = -1

    # ------------------------------------------------------------------------------------------ set-up
    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:   # rank 0 keeps the averages and writes; other ranks only train
            return
        step = int(trainer.global_step)
        if step != 0:
            raise ValueError(f"AveragingCallback starts with the training (global_step 0), got {step}; resuming "
                             f"a fit is not supported")
        lr, mom = _first_lr(trainer)
        total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None
        self.averages = WeightAverages(pl_module, self.specs, eval_every=self.eval_every, total_steps=total,
                                       average_buffers=self.average_buffers)
        device = pl_module.device
        for m in (self.bank, *self.probes):   # their batches where the module is
            if m is not None:
                m.to(device)
        self.run = RunWriter(self.out, lr=self.lr if self.lr is not None else lr,
                             momentum=self.momentum if self.momentum is not None else mom, averages=self.averages,
                             measurements=[m for m in (self.bank, *self.probes) if m is not None],
                             bn_batches=self.bn_batches, name="lightning", device=device, loss_fn=self.loss_fn,
                             config={"trainer": "pytorch_lightning", "max_steps": total, "eval_every": self.eval_every,
                                     **self.config})
        self.run_dir = self.run.run_dir
        self._evaluate(0, pl_module)

    # ------------------------------------------------------------------------------------------ per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.run is None:
            return
        step = int(trainer.global_step)
        if step == self.averages.step and step != self._measured_at:   # once per update (the first micro-batch
            self._measured_at = step                                      # with gradient accumulation)
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pair = tuple(batch[:2]) if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
            self.run.measure(step, pl_module, lr=lr, batch=pair)   # batch: the B of GradientAlignment
            if self.bank is not None:
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
        if self.run is None:
            return
        step = int(trainer.global_step)
        if step == self.averages.step:     # no optimiser step this batch (accumulation, or a skipped step)
            return
        self.averages.update(pl_module, step)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.run.train(step - 1, float(loss.detach()), float(trainer.optimizers[0].param_groups[0]["lr"]))
        if step % self.eval_every == 0:
            self._evaluate(step, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.run is None:
            return
        step = self.averages.step
        if self._last_eval != step:        # the last step, off the eval_every grid (its iterates were kept)
            self._evaluate(step, pl_module)
        self.run.close("ok", step)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.run is not None:
            # the files stay valid: what was recorded up to the last update, and why it stopped
            self.run.close("interrupted", self.averages.step, error=f"{type(exception).__name__}: {exception}")
            self.run = None

    # ------------------------------------------------------------------------------------------ helpers
    def _evaluate(self, step: int, pl_module) -> None:
        self.run.evaluate(step, pl_module, test=self.test_batches, train=self.train_batches)
        self._last_eval = step

    def module(self, name: str, model=None) -> torch.nn.Module:
        """A copy of the module with variant ``name``'s weights and BN per this callback's bn_batches."""
        if self.averages is None:
            raise ValueError("no averages yet: fit first")
        return self.averages.module(name, self.bn_batches, model=model)
