"""The fixed-batch bank for any training loop (theory.md §3.2, §4.2 E2; series: docs/run-series.md ``bank/*`` and
``static/bank_used_at``).

K fixed training batches and K held-out batches; their eval-mode losses are measured on the weights now held
(θ_step), and each training batch is trained on once, at a step the loop tells the bank, so its loss curve shows
the dip after use that the NQM predicts (theory.probes.fixed_batch_loss). No sampler is needed: you hand the bank
its batches and either

* plan when each is trained on (``train_at=[u_0, ..., u_{K−1}]``) and let :meth:`batch_for` swap it into your
  stream at that step, or
* train on bank batch k yourself and call :meth:`trained_on` (k, step).

``step`` is always the number of optimiser updates done: batch k "used at u" is the batch of update u (after it the
model holds θ_{u+1}). Losses use the first ⌈fraction·B⌉ images of each batch (``fraction``, config.json
``bank_fraction``): in the NQM the dip after use is the same for any subset of the trained batch (docs/tools.md).

    bank = FixedBatchBank(train_batches, heldout_batches, train_at=[30, 60, 90], every=5)   # RunWriter attaches its recorder
    for step, (x, y) in enumerate(loader):
        if bank.due(step):
            bank.measure(step, model)                 # {"train_loss": [K], "heldout_loss": [K]}
        x, y = bank.batch_for(step, (x, y))         # bank batch k at step train_at[k], else your batch
        ...                                          # forward, backward, optimiser step
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from empirical import measure as M
from empirical.probes import Batch, Measurement, batch_pairs, checked_int


class FixedBatchBank(Measurement):
    """K fixed training batches (each trained on once, when the loop says) and K held-out batches (module docstring).

    ``train_batches``, ``heldout_batches``: sequences of (inputs, targets) tensor pairs (kept where they are;
    :meth:`to` moves them). ``train_at``: the optimiser step at which each training batch is to be trained on (one per batch, or
    None to report it with :meth:`trained_on`). ``fraction`` in (0, 1]: share of each batch whose loss is measured.
    ``every``: cadence of :meth:`due`, steps."""

    group = "bank"

    def __init__(self, train_batches: Sequence[Batch], heldout_batches: Sequence[Batch], *,
                 train_at: Sequence[int] | None = None, fraction: float = 1.0, every: int = 1,
                 loss_fn: Callable | None = None):
        super().__init__(every)
        self.train = batch_pairs("train_batches", train_batches, None)
        self.heldout = batch_pairs("heldout_batches", heldout_batches, None)
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1] (share of each batch measured), got {fraction!r}")
        self.fraction, self.loss_fn = float(fraction), loss_fn
        self.used_at = [-1] * len(self.train)     # step of the update that trained on each batch; -1 = not yet
        self._plan: dict[int, int] = {}
        if train_at is not None:
            steps = [checked_int("train_at step", u, 0) for u in train_at]
            if len(steps) != len(self.train) or len(set(steps)) != len(steps):
                raise ValueError(f"train_at needs one distinct step per training batch ({len(self.train)}), "
                                 f"got {list(train_at)}")
            self._plan = {u: k for k, u in enumerate(steps)}
        self.publish()

    @property
    def images(self) -> int:
        """Images measured per batch: ⌈fraction · B⌉ with B the first training batch's size."""
        return max(1, math.ceil(self.fraction * len(self.train[0][1])))

    def publish(self) -> None:
        """Write ``used_at`` to the recorder (if any) as the static series ``bank_used_at``."""
        if self.recorder is not None:
            self.recorder.set_static("bank_used_at", list(self.used_at))

    def trained_on(self, k: int, step: int) -> None:
        """Training bank batch ``k`` is the batch of optimiser update ``step`` (updates done before it)."""
        k, step = checked_int("bank batch index", k, 0), checked_int("step", step, 0)
        if k >= len(self.train):
            raise ValueError(f"bank batch {k}: the bank has {len(self.train)} training batches "
                             f"(0..{len(self.train) - 1})")
        if self.used_at[k] >= 0 and self.used_at[k] != step:
            raise ValueError(f"bank batch {k} was already trained on at step {self.used_at[k]}; each is used once")
        self.used_at[k] = step
        self.publish()

    def batch_for(self, step: int, batch):
        """The batch to train on at update ``step``: the bank batch planned for it (``train_at``; then marked as
        trained at ``step``), else ``batch`` unchanged."""
        k = self._plan.get(int(step))
        if k is None:
            return batch
        self.trained_on(k, step)
        x, y = self.train[k]
        if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor):
            x, y = x.to(batch[0].device), y.to(batch[1].device)
        return type(batch)((x, y)) if isinstance(batch, (tuple, list)) else (x, y)

    @torch.no_grad()
    def measure(self, step: int, model: nn.Module) -> dict:
        """{"train_loss": [K], "heldout_loss": [K]}: eval-mode mean loss of each bank batch (its first ``images``
        images) on θ_step (measure.batch_losses)."""
        n = self.images
        loss = lambda bs: M.batch_losses(model, [(x[:n], y[:n]) for x, y in bs], loss_fn=self.loss_fn)  # noqa: E731
        return self._log(step, {"train_loss": loss(self.train), "heldout_loss": loss(self.heldout)})

    def config(self) -> dict:
        return {"bank_every": self.every, "bank_size": len(self.train), "bank_fraction": self.fraction,
                "bank_images": self.images,
                "bank_train_at": [u for u, _ in sorted(self._plan.items(), key=lambda uk: uk[1])] or None}
