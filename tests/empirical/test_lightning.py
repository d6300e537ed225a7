"""empirical.lightning.AveragingCallback: a tiny LightningModule on digits, 100 CPU steps, every average, the bank
and the probe recorded in a run directory that compare.report reads (docs/lightning.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pl = pytest.importorskip("pytorch_lightning")   # the pinned extra `lightning` (make test installs it)

from common.rundir import load_run  # noqa: E402
from _tiny_module import Tiny  # noqa: E402
from empirical import EMA, SWA, FixedBatchBank, NPoint, OneStepProbe, TwoPoint  # noqa: E402
from empirical.lightning import AveragingCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


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
                           out=tmp_path / "run", test_batches=test, bn_batches=fixed[3:], eval_every=10,
                           measurements=[bank, probe], plan=False)     # its own lag grid: exactly these evaluation steps
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
    assert (cfg["lr"], cfg["momentum"], cfg["trainer"]) == (0.05, 0.9, "pytorch_lightning")
    assert cfg["averaging"]["specs"]["ema_0.95"] == {"kind": "EMA", "decay": 0.95, "start": 30, "every": 1}
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
    cb = AveragingCallback([EMA(0.9)], out=tmp_path / "run", test_batches=[bank_b], eval_every=5,
                           measurements=[bank], plan=False)
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
                           measurements=[probe], plan=False)
    trainer = pl.Trainer(max_steps=4, accumulate_grad_batches=2, accelerator="cpu", devices=1, callbacks=[cb],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), DataLoader(TensorDataset(xs, ys), 16))
    tr = load_run(tmp_path / "run").trajectory
    assert cb.averages.step == 4 and tr["probe/step"].tolist() == [0, 1, 2, 3]
    assert tr["train/step"].tolist() == [0, 1, 2, 3] and tr["eval/step"].tolist() == [0, 2, 4]


def _digits():
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    X, Y = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(Y)
    return TensorDataset(x[:1500], y[:1500]), list(zip(x[1500:].split(100), y[1500:].split(100)))


def _trainer(**kw) -> "pl.Trainer":
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False)
    return pl.Trainer(**{**base, **kw})


def test_default_plan_makes_a_first_run_calibratable(tmp_path):
    """EMA, SWA and one two-point lag, nothing else said: the callback adds the default plan's lag grid and dense
    evaluation, and compare.report calibrates on the run's two-point averages."""
    from torch.utils.data import DataLoader

    from empirical.library import default_plan

    train, test = _digits()
    fixed = list(DataLoader(train, 64))[:3]
    torch.manual_seed(0)
    cb = AveragingCallback([EMA(0.99), SWA(start=150), TwoPoint(50)], out=tmp_path / "run", test_batches=test[:2],
                           bn_batches=fixed)
    _trainer(max_steps=300, callbacks=[cb]).fit(Tiny(), DataLoader(train, 64, shuffle=True, drop_last=True))

    plan = default_plan(300, 0.05, 0.9)
    assert cb.plan == plan and len(plan.lags) >= 5 and max(plan.lags) <= (plan.window[1] - plan.window[0]) / 3
    run = load_run(tmp_path / "run")
    tr, cfg = run.trajectory, run.config["config"]
    gaps = [s["gap"] for s in cfg["averaging"]["specs"].values() if s["kind"] == "TwoPoint"]
    assert sorted(gaps) == sorted({50, *plan.lags}) and cfg["recording_plan"] == plan.config()
    steps = set(tr["eval/step"].tolist())
    assert set(plan.dense_steps()) <= steps and set(range(0, 301, plan.eval_every)) <= steps
    dense_only = sorted(set(plan.dense_steps()) - set(range(0, 301, plan.eval_every)))
    assert np.isfinite(tr["eval/test_loss_two_point_k50"][tr["eval/step"] == dense_only[-1]]).all()
    report = tmp_path / "report"
    p = subprocess.run([sys.executable, "-m", "compare.report", str(tmp_path / "run"), "--out", str(report),
                        "--no-figures"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((report / "metrics.json").read_text())
    assert [s["calibration"]["source"] for s in metrics["setups"]] == ["two-point"]


# ------------------------------------------------------------------------------------------ checkpoint and resume
class Crash(pl.Callback):
    """Stops a fit with an error once ``at`` updates are done (a killed job)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("killed")


def _fixed_data():
    """Four fixed batches of 16, in order every epoch: a resume at an epoch boundary sees the batches an
    uninterrupted fit sees."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    test = [(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))]
    loader = DataLoader(TensorDataset(xs, ys), 16, shuffle=False, drop_last=True)
    return loader, test, [(xs[:16], ys[:16]), (xs[16:32], ys[16:32])]


def _resumable(out, bank_batches, test):
    bank = FixedBatchBank(bank_batches[:1], test, train_at=[26], every=2)
    probe = OneStepProbe(bank_batches[1], test[0], lr=0.05, momentum=0.9, every=8, n_etas=5)
    return AveragingCallback([EMA(0.9, start=3), SWA(start=5), TwoPoint(4), NPoint(3, 2)], out=out, test_batches=test,
                             bn_batches=bank_batches, eval_every=8, measurements=[bank, probe])   # + the default plan


def _same_tensors(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same_tensors(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_tensors(x, y)
    else:
        assert a == b


def test_resuming_from_a_checkpoint_continues_the_averages_and_the_run_exactly(tmp_path):
    """A fit killed after update 23 and resumed from its checkpoint at update 20 (same run directory), and the
    uninterrupted fit's checkpoint at update 32 resumed into a new directory and (out=None) into its own, all end
    with the uninterrupted fit's averages (tensors equal) and run-directory records (trajectory.npz, metrics.csv,
    config.json)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    loader, test, batches = _fixed_data()

    def fit(out, ckpt_dir, ckpt_path=None, crash=None):
        torch.manual_seed(0)
        cb = _resumable(out, batches, test)
        saver = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1)
        trainer = _trainer(max_steps=40, callbacks=[cb, saver] + ([Crash(crash)] if crash else []),
                           enable_checkpointing=True)
        module = Tiny()
        trainer.fit(module, loader, ckpt_path=ckpt_path)
        return cb, module

    def records(path):
        run = load_run(path)
        return (run.summary["status"], run.summary["steps"], run.config["config"],
                {k: run.trajectory[k] for k in run.trajectory.series}, (path / "metrics.csv").read_text())

    def same_records(got, ref):
        assert got[:3] == ref[:3] and got[3].keys() == ref[3].keys() and got[4] == ref[4]
        for k in ref[3]:
            np.testing.assert_array_equal(got[3][k], ref[3][k], err_msg=k)

    whole, module = fit(tmp_path / "whole", tmp_path / "ck_whole")
    ref = records(tmp_path / "whole")
    assert ref[:2] == ("ok", 40) and whole.plan is not None and whole.plan.dense_every == 1
    assert list(ref[3]["static/bank_used_at"]) == [26] and ref[3]["probe/step"].tolist() == [0, 8, 16, 24, 32]
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path / "killed", tmp_path / "ck_killed", crash=23)
    assert load_run(tmp_path / "killed").summary["status"] == "interrupted"
    resumed, module_r = fit(tmp_path / "killed", tmp_path / "ck_resumed",
                            ckpt_path=next((tmp_path / "ck_killed").glob("*step=20.ckpt")))
    at32 = next((tmp_path / "ck_whole").glob("*step=32.ckpt"))
    copied, _ = fit(tmp_path / "copy", tmp_path / "ck_copy", ckpt_path=at32)
    same_records(records(tmp_path / "killed"), ref)
    same_records(records(tmp_path / "copy"), ref)
    own, _ = fit(None, tmp_path / "ck_own", ckpt_path=at32)      # out=None: the directory the checkpoint wrote
    assert own.run_dir == tmp_path / "whole"
    same_records(records(tmp_path / "whole"), ref)
    for other in (resumed, copied, own):
        _same_tensors(whole.averages.state_dict(), other.averages.state_dict())
    for a, b in zip(module.parameters(), module_r.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_without_the_callbacks_state_is_refused(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    loader, test, batches = _fixed_data()
    saver = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1)
    _trainer(max_steps=4, callbacks=[saver], enable_checkpointing=True).fit(Tiny(), loader)
    cb = AveragingCallback([EMA(0.9)], out=tmp_path / "run", test_batches=test, plan=False)
    with pytest.raises(ValueError, match="holds no AveragingCallback state"):
        _trainer(max_steps=8, callbacks=[cb]).fit(Tiny(), loader, ckpt_path=next((tmp_path / "ck").glob("*.ckpt")))


# ------------------------------------------------------------------------------------------ validation with an average
class Checked(Tiny):
    """Sums the validation loss exactly as empirical.measure.evaluate does (per-batch sums in float64)."""

    def on_validation_epoch_start(self):
        self.val_sum, self.val_n = None, 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x).float(), y, reduction="sum").double()
        self.val_sum = loss if self.val_sum is None else self.val_sum + loss
        self.val_n += len(y)


def test_validation_with_an_average_is_the_average_evaluated_directly(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from empirical.measure import evaluate

    loader, test, batches = _fixed_data()
    val = list(zip(torch.randn(48, 1, 8, 8).split(16), torch.randint(0, 10, (48,)).split(16)))
    seen = []

    class Before(pl.Callback):          # before the averaging callback: the module's own weights
        def on_validation_epoch_start(self, trainer, m):
            name = "ema_0.9" if "ema_0.9" in cb.averages.names() else "raw"
            direct = cb.module(name)      # the average, BN recomputed on bn_batches: evaluated directly
            self.expect = evaluate(direct, val)[0]
            self.own = [t.detach().clone() for t in list(m.parameters()) + list(m.buffers())]
            seen.append((trainer.global_step, name))

    class After(pl.Callback):           # after it: the module holds the average, then its own weights again
        def on_validation_epoch_start(self, trainer, m):
            if seen[-1][1] == "ema_0.9":
                for p, q in zip(m.parameters(), cb.averages.parameters_of("ema_0.9")):
                    assert torch.equal(p, q)

        def on_validation_epoch_end(self, trainer, m):
            assert float(m.val_sum) / m.val_n == before.expect
            for t, own in zip(list(m.parameters()) + list(m.buffers()), before.own):
                assert torch.equal(t, own)

    before = Before()
    cb = AveragingCallback([EMA(0.9, start=6)], out=tmp_path / "run", test_batches=test, bn_batches=batches,
                           eval_every=4, plan=False, validate_with="ema_0.9")
    module = Checked()
    _trainer(max_steps=12, callbacks=[before, cb, After()], num_sanity_val_steps=0).fit(
        module, loader, DataLoader(TensorDataset(torch.cat([x for x, _ in val]), torch.cat([y for _, y in val])), 16))
    assert seen == [(4, "raw"), (8, "ema_0.9"), (12, "ema_0.9")]   # before its start the EMA is the raw iterate
    with pytest.raises(ValueError, match="only an EMA or SWA"):
        AveragingCallback([TwoPoint(4)], test_batches=test, validate_with="two_point_k4")


# ------------------------------------------------------------------------------------------ logging, the optimiser
class TinyAdam(Tiny):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-4)


def test_evaluations_go_to_the_trainers_logger_and_adam_is_recorded_as_not_heavy_ball(tmp_path):
    import csv

    from pytorch_lightning.loggers import CSVLogger

    loader, test, batches = _fixed_data()
    cb = AveragingCallback([EMA(0.9, start=2), TwoPoint(4)], out=tmp_path / "run", test_batches=test,
                           bn_batches=batches, eval_every=4, plan=False)
    logger = CSVLogger(tmp_path / "logs", name="tiny")
    _trainer(max_steps=12, callbacks=[cb], logger=logger).fit(TinyAdam(), loader)

    run = load_run(tmp_path / "run")
    tr, cfg = run.trajectory, run.config["config"]
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    logged = {}
    for r in rows:
        for k, v in r.items():
            if v != "" and k != "step":
                logged[(int(r["step"]), k)] = float(v)
    for i, s in enumerate(tr["eval/step"].tolist()):   # Lightning's logging step: updates done − 1 (0 at the start)
        at = max(s - 1, 0)
        assert logged[(at, "test_loss/raw")] == pytest.approx(tr["eval/test_loss_raw"][i], rel=1e-6)
        if s >= 4:
            assert logged[(at, "test_loss/two_point_k4")] == pytest.approx(tr["eval/test_loss_two_point_k4"][i],
                                                                          rel=1e-6)
            assert logged[(at, "dist/ema_0.9")] == pytest.approx(tr["dist/ema_0.9"][i], rel=1e-6)
    assert (cfg["optimizer"], cfg["momentum"], cfg["lr"]) == ("Adam", None, 0.001)
    assert cfg["optimizer_hparams"]["betas"] == [0.9, 0.99] and cfg["optimizer_hparams"]["weight_decay"] == 1e-4
    assert "heavy-ball SGD" in cfg["optimizer_assumption"] and "Adam" in cfg["optimizer_assumption"]


# ------------------------------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_ddp_every_rank_holds_the_same_averages_and_only_rank_0_writes(tmp_path):
    """strategy "ddp" with 2 CPU processes (gloo), validation with an EMA on both ranks: the averages (and weights)
    are equal on the two ranks, both know rank 0's run directory, and rank 1 writes no run file (a write there
    raises, tests/empirical/_lightning_ddp.py)."""
    import socket

    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    env.pop("LOCAL_RANK", None)
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("_lightning_ddp.py")), str(tmp_path / "dump")],
                       cwd=work, env=env, capture_output=True, text=True, timeout=240)
    if p.returncode != 0 and "Address already in use" in p.stderr:
        pytest.skip("the rendezvous port was taken")
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["writer"], r1["writer"]) == (0, 1, True, False)
    _same_tensors(r0["averages"], r1["averages"])
    _same_tensors(r0["params"], r1["params"])
    assert r0["run_dir"] == r1["run_dir"] and r0["plan"] == r1["plan"] is not None
    runs = list((work / "runs" / "empirical").iterdir())
    assert len(runs) == 1 and str(runs[0]) == str(work / r0["run_dir"])
    run = load_run(runs[0])
    assert run.summary["status"] == "ok" and run.summary["steps"] == 40
    assert np.isfinite(run.trajectory["eval/test_loss_ema_0.9"][-1])
    assert {f.name for f in runs[0].iterdir()} == {"config.json", "env.json", "trajectory.npz", "summary.json",
                                                   "metrics.csv"}
