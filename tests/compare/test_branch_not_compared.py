"""A branch whose average settles only after the parent's constant phase is compared over the second half of what
remains of that phase, and the report says the average still remembers its start (no silent row of n/a)."""
from dataclasses import replace

import pytest

from compare import report

import synthetic_runs

@pytest.mark.slow
def test_slow_ema_branch_says_why_it_is_not_compared(tmp_path, synth_cfg):
    cfg = replace(synth_cfg, ema_decays=(0.99, 0.9999))
    runs = [synthetic_runs.write_run(tmp_path / f"s{i}", cfg, seed=i) for i in range(2)]
    lam, beta = cfg.lr, 1 - 0.9999
    lr_eq = lam * beta / (beta + lam * cfg.h[0] / (1 - cfg.momentum))   # harmonic rule (theory.md §3.3), ≈ 5e-6
    branch = synthetic_runs.write_run(tmp_path / "ema", cfg, seed=0, branch={"t0": 2000, "lr_fn": lambda t: lr_eq,
                                                                         "name": "ema"})
    out = tmp_path / "rep"
    assert report.main([*map(str, runs), str(branch), "--out", str(out), "--no-figures"]) == 0
    md = (out / "report.md").read_text()
    # EMA from step 0 with γ = 0.9999 settles at 0 + 3/(1 − γ) = 30000, after the constant run: compared anyway from
    # halfway between the branch step and the end of the window, and flagged
    assert "equivalent run of: ema_0.9999" in md
    assert "the parent's ema_0.9999 still remembers its start (it forgets it at step 30000)" in md
    assert "gain captured n/a" not in md
