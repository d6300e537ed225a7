"""torchrun target for test_ddp.py: empirical.run with rank 1's batch iterator raising at its 6th batch."""
import os
import sys

from empirical import run, sampler

if os.environ.get("RANK") == "1":
    _orig = sampler.train_batches

    def _failing(*args, **kwargs):
        for i, item in enumerate(_orig(*args, **kwargs)):
            if i == 5:
                raise RuntimeError("injected failure on rank 1")
            yield item

    sampler.train_batches = _failing

sys.exit(run.cli())
