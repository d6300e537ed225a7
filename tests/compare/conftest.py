"""Synthetic run directories drawn from the NQM (tests/synthetic_runs.py), built once per test session through the
shared ``synth`` fixture of tests/conftest.py."""

import pytest

import synthetic_runs

# Low eval noise so that excess-loss errors measure the model, not the noise (loss units).
CFG = synthetic_runs.SynthSetup(h=(2.0,), s=(0.5,), d=(400,), b=(0.0,), lr=0.01, momentum=0.9, steps=4000,
                           swa_start=2000, two_point_gaps=(10, 100, 1000), n_point_gap=300, eval_noise=0.001,
                           probe_every=50)


@pytest.fixture(scope="session")
def synth_cfg():
    return CFG


@pytest.fixture(scope="session")
def synth_runs(synth):
    return synth.seeds("synth", CFG, 3)


@pytest.fixture(scope="session")
def synth_branches(synth, synth_runs):
    """A λ/2 branch (two-point equivalent) and an EMA-equivalent branch, both from step 2000 of seed 0."""
    return [synth.branch("branch", CFG, "half", 2000, CFG.lr / 2),
            synth.branch("branch", CFG, "ema", 2000, synth.harmonic_lr(CFG, 0.99))]
