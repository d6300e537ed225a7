"""Synthetic run directories drawn from the NQM (compare/synthetic.py), built once per test session."""

import pytest

from compare import synthetic

# Low eval noise so that excess-loss errors measure the model, not the noise (loss units).
CFG = synthetic.SynthSetup(h=(2.0,), s=(0.5,), d=(400,), b=(0.0,), lr=0.01, momentum=0.9, steps=4000,
                           swa_start=2000, two_point_gaps=(10, 100, 1000), n_point_gap=300, eval_noise=0.001,
                           probe_every=50)


@pytest.fixture(scope="session")
def synth_cfg():
    return CFG


@pytest.fixture(scope="session")
def synth_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return [synthetic.write_run(root / f"s{i}", CFG, seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def synth_branches(tmp_path_factory, synth_runs):
    """A λ/2 branch (two-point equivalent) and an EMA-equivalent branch, both from step 2000 of seed 0."""
    root = tmp_path_factory.mktemp("branch")
    lam = CFG.lr
    a = lam * CFG.h[0] / (1 - CFG.momentum)
    beta = 1 - 0.99
    lr_ema = lam * beta / (beta + a)          # harmonic rule with λ_eff (theory.md §3.3, §2.6)
    return [synthetic.write_run(root / "half", CFG, seed=0, branch={"t0": 2000, "lr_fn": lambda t: lam / 2, "name": "half"}),
            synthetic.write_run(root / "ema", CFG, seed=0, branch={"t0": 2000, "lr_fn": lambda t: lr_ema, "name": "ema"})]
