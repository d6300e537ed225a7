"""empirical.lightning.AveragingCallback: a tiny LightningModule on digits, 100 CPU steps, every average, the bank
and the probe recorded in a run directory that compare.report reads (README "PyTorch Lightning")."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("pytorch_lightning")   # the pinned extra `lightning` (make test installs it)

from common.rundir import load_run  # noqa: E402
from empirical import EMA, SWA, FixedBatchBank, NPoint, OneStepProbe, TwoPoint  # noqa: E402
from empirical.lightning import AveragingCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Tiny(pl.LightningModule):
    """A small conv net with BatchNorm on 8×8 digits; forward returns logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_callback_writes_a_run_compare_report_reads(tmp_path):
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    X, Y = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(Y)
    train, test = TensorDataset(x[:1500], y[:1500]), list(zip(x[1500:].split(100), y[1500:].split(100)))
    fixed = list(DataLoader(train, 64))[:5]
    torch.manual_seed(0)
    bank = FixedBatchBank(fixed[:2], test[:2], train_at=[30, 70], every=5)
    probe = OneStepProbe(fixed[2], test[0], lr=0.05, momentum=0.9, every=10, n_etas=9)
    cb = AveragingCallback([EMA(0.95, start=30), SWA(start=50), NPoint(3, 10), *map(TwoPoint, (10, 20, 30, 40))],
                           out=tmp_path / "run", test_batches=test, bn_batches=fixed[3:], eval_every=10, bank=bank,
                           probes=[probe])
    trainer = pl.Trainer(max_steps=100, accelerator="cpu", devices=1, callbacks=[cb], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module = Tiny()
    trainer.fit(module, DataLoader(train, 64, shuffle=True, drop_last=True))

    run = load_run(tmp_path / "run")
    tr, cfg = run.trajectory, run.config["config"]
    assert run.summary["status"] == "ok" and run.summary["steps"] == 100
    assert tr["eval/step"].tolist() == list(range(0, 101, 10))
    assert tr["train/step"].tolist() == list(range(100))
    for name in ("raw", "raw_running_bn", "ema_0.95", "swa", "points_n3_g10", "two_point_k40"):
        assert np.isfinite(tr[f"eval/test_loss_{name}"][-1]), name
    assert list(tr["static/bank_used_at"]) == [30, 70] and tr["probe/step"].tolist() == list(range(0, 100, 10))
    assert (cfg["lr"], cfg["momentum"], cfg["ema_start"], cfg["trainer"]) == (0.05, 0.9, 30, "pytorch_lightning")
    ema = cb.module("ema_0.95")                      # an nn.Module holding the average, the trained one untouched
    torch.testing.assert_close(ema.net[5].weight, cb.averages.parameters_of("ema_0.95")[-2], rtol=0, atol=0)
    assert ema is not module and not torch.equal(ema.net[5].weight, module.net[5].weight)

    report = tmp_path / "report"
    p = subprocess.run([sys.executable, "-m", "compare.report", str(tmp_path / "run"), "--out", str(report),
                        "--no-figures"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    md = (report / "report.md").read_text()
    for name in ("ema_0.95", "swa", "points_n3_g10"):
        assert f"| {name} |" in md


def test_bank_batch_is_the_batch_trained_on(tmp_path):
    """At a planned step the callback copies the bank batch into Lightning's batch: the loss logged for that step is
    the bank batch's loss before the update."""
    torch.manual_seed(0)
    xs, ys = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    bank_b = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    seen = {}

    class Spy(Tiny):
        def training_step(self, batch, batch_idx):
            seen[self.trainer.global_step] = batch[0].clone()
            return super().training_step(batch, batch_idx)

    from torch.utils.data import DataLoader, TensorDataset
    bank = FixedBatchBank([bank_b], [bank_b], train_at=[3], every=0)
    cb = AveragingCallback([EMA(0.9)], out=tmp_path / "run", test_batches=[bank_b], eval_every=5, bank=bank)
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", devices=1, callbacks=[cb], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Spy(), DataLoader(TensorDataset(xs, ys), 16, drop_last=True))
    assert torch.equal(seen[3], bank_b[0]) and not torch.equal(seen[2], bank_b[0])
    assert bank.used_at == [3]


def test_gradient_accumulation_updates_and_measures_once_per_optimiser_step(tmp_path):
    torch.manual_seed(0)
    from torch.utils.data import DataLoader, TensorDataset
    xs, ys = torch.randn(160, 1, 8, 8), torch.randint(0, 10, (160,))
    b = (xs[:16], ys[:16])
    probe = OneStepProbe(b, b, lr=0.05, momentum=0.9, every=1, n_etas=5)
    cb = AveragingCallback([EMA(0.9), TwoPoint(2)], out=tmp_path / "run", test_batches=[b], eval_every=2,
                           probes=[probe])
    trainer = pl.Trainer(max_steps=4, accumulate_grad_batches=2, accelerator="cpu", devices=1, callbacks=[cb],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), DataLoader(TensorDataset(xs, ys), 16))
    tr = load_run(tmp_path / "run").trajectory
    assert cb.averages.step == 4 and tr["probe/step"].tolist() == [0, 1, 2, 3]
    assert tr["train/step"].tolist() == [0, 1, 2, 3] and tr["eval/step"].tolist() == [0, 2, 4]
