"""Small synthetic setups for the figure tests (tests/synthetic_runs.py, no torch, through the shared ``synth`` fixture
of tests/conftest.py): two seeds with a two-point lag grid on the evaluation grid (so the calibration source is
D(τ)), and an EMA-equivalent branch of seed 0."""

import pytest

import synthetic_runs

CFG = synthetic_runs.SynthSetup(h=(2.0, 0.05), s=(0.5, 2.0), d=(40, 40), b=(0.0, 0.0), steps=2000, swa_start=1000,
                           eval_every=50, probe_every=100, bank_every=10, two_point_gaps=(50, 100, 150, 200, 300),
                           n_point_gap=200, eval_noise=0.001, ema_decays=(0.99, 0.999))
BRANCH_T0 = 1000


@pytest.fixture(scope="session")
def fig_cfg():
    return CFG


@pytest.fixture(scope="session")
def fig_runs(synth):
    base = synth.seeds("figsynth", CFG, 2)
    branch = synth.branch("figsynth-branch", CFG, "ema", BRANCH_T0, synth.harmonic_lr(CFG, 0.99), spec="ema:0.99:1")
    return base, branch


def _analyse(paths):
    from compare.analysis import analyse
    from compare.load import group_runs, load_runs
    return analyse(group_runs(load_runs(paths))[0])


@pytest.fixture(scope="session")
def a_plain(fig_runs):
    """Analysis of the two seeds without any branch run."""
    return _analyse(fig_runs[0])


@pytest.fixture(scope="session")
def a_branch(fig_runs):
    """Analysis of the two seeds and the EMA-equivalent branch."""
    return _analyse([*fig_runs[0], fig_runs[1]])
