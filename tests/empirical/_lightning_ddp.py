"""Two CPU processes (Lightning strategy "ddp", gloo) fit a tiny module with AveragingCallback; every rank saves its
averages, weights and view of the run to DUMP/rank<r>.pt. A rank other than 0 that tries to write a run file fails
the fit (tests/empirical/test_lightning.py). Usage: python _lightning_ddp.py DUMP (run in an empty directory)."""
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from common import rundir
from _tiny_module import Tiny
from empirical import EMA, SWA, TwoPoint
from empirical.lightning import AveragingCallback

RANK = int(os.environ.get("LOCAL_RANK", "0"))
if RANK != 0:      # only rank 0 writes the run directory: any write from another rank is an error
    def _refuse(*args, **kwargs):
        raise RuntimeError(f"rank {RANK} tried to write a run file")
    rundir.atomic_write_bytes = rundir.new_run_dir = _refuse


def main(dump: Path) -> None:
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g)
    test = [(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))]
    bn = [(xs[:32], ys[:32])]
    torch.manual_seed(0)
    cb = AveragingCallback([EMA(0.9, start=2), SWA(start=20), TwoPoint(4)], test_batches=test, bn_batches=bn,
                           validate_with="ema_0.9")            # out=None: runs/empirical/<stamp>-library-<rand>
    trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=40, callbacks=[cb],
                         logger=pl.loggers.CSVLogger("logs"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         val_check_interval=8)
    module = Tiny()
    trainer.fit(module, DataLoader(TensorDataset(xs, ys), 16, shuffle=True, drop_last=True),
                DataLoader(TensorDataset(xs[:64], ys[:64]), 16))
    dump.mkdir(parents=True, exist_ok=True)
    torch.save({"rank": trainer.global_rank, "averages": cb.averages.state_dict(),
                "params": [p.detach().clone() for p in module.parameters()], "run_dir": str(cb.run_dir),
                "writer": cb.run is not None, "plan": cb.plan.config() if cb.plan else None},
               dump / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
