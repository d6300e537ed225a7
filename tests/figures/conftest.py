"""Small synthetic setups for the figure tests (compare/synthetic.py, no torch): two seeds with a two-point lag grid
on the evaluation grid (so the calibration source is D(τ)), and an EMA-equivalent branch of seed 0."""

import pytest

from compare import synthetic

CFG = synthetic.SynthSetup(h=(2.0, 0.05), s=(0.5, 2.0), d=(40, 40), b=(0.0, 0.0), steps=2000, swa_start=1000,
                           eval_every=50, probe_every=100, bank_every=10, two_point_gaps=(50, 100, 200, 400, 800),
                           n_point_gap=200, eval_noise=0.001, ema_decays=(0.99, 0.999))
BRANCH_T0 = 1000


@pytest.fixture(scope="session")
def fig_cfg():
    return CFG


@pytest.fixture(scope="session")
def fig_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figsynth")
    base = [synthetic.write_run(root / f"s{i}", CFG, seed=i) for i in range(2)]
    a = CFG.lr * CFG.h[0] / (1 - CFG.momentum)
    lr_ema = CFG.lr * 0.01 / (0.01 + a)       # harmonic rule with λ_eff (theory.md §3.3, §2.6)
    branch = synthetic.write_run(root / "s0-ema", CFG, seed=0, branch={"t0": BRANCH_T0, "lr_fn": lambda t: lr_ema,
                                                                      "name": "ema", "spec": "ema:0.99:1"})
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
