"""A branch whose average settles only after the parent's constant phase gets a reason, not a row of n/a."""
from dataclasses import replace

import pytest

from compare import report, synthetic

@pytest.mark.slow
def test_slow_ema_branch_says_why_it_is_not_compared(tmp_path, synth_cfg):
    cfg = replace(synth_cfg, ema_decays=(0.99, 0.9999))
    runs = [synthetic.write_run(tmp_path / f"s{i}", cfg, seed=i) for i in range(2)]
    lam, beta = cfg.lr, 1 - 0.9999
    lr_eq = lam * beta / (beta + lam * cfg.h[0] / (1 - cfg.momentum))   # harmonic rule (theory.md §3.3), ≈ 5e-6
    branch = synthetic.write_run(tmp_path / "ema", cfg, seed=0, branch={"t0": 2000, "lr_fn": lambda t: lr_eq,
                                                                         "name": "ema"})
    out = tmp_path / "rep"
    assert report.main([*map(str, runs), str(branch), "--out", str(out), "--no-figures"]) == 0
    md = (out / "report.md").read_text()
    # EMA from step 0 with γ = 0.9999 settles at 0 + 3/(1 − γ) = 30000, after the 4000-step constant run
    assert "equivalent run of: ema_0.9999" in md
    assert "not compared with its average: ema_0.9999 settles only at step 30000" in md
