"""Fixtures shared by tests/compare and tests/figures: synthetic run directories drawn from the NQM
(tests/synthetic_runs.py, no torch), written once per test session."""

import pytest

import synthetic_runs


class SynthRuns:
    """Writes seeds and constant-LR branch runs of a SynthSetup into fresh session folders."""

    def __init__(self, factory: pytest.TempPathFactory):
        self._factory = factory

    @staticmethod
    def harmonic_lr(cfg: synthetic_runs.SynthSetup, decay: float, scale: int = 0) -> float:
        """The EMA-equivalent constant LR of the harmonic rule with λ_eff (theory.md §3.3, §2.6), written out here
        by hand so that the tests do not take it from the code they check: λβ/(β + λh/(1 − μ)), β = 1 − γ."""
        beta = 1.0 - decay
        return cfg.lr * beta / (beta + cfg.lr * cfg.h[scale] / (1.0 - cfg.momentum))

    def seeds(self, folder: str, cfg: synthetic_runs.SynthSetup, n: int) -> list:
        """Seeds 0..n−1 of ``cfg``, one run directory each (folder/s<seed>)."""
        root = self._factory.mktemp(folder)
        return [synthetic_runs.write_run(root / f"s{i}", cfg, seed=i) for i in range(n)]

    def branch(self, folder: str, cfg: synthetic_runs.SynthSetup, name: str, t0: int, lr: float, seed: int = 0,
               spec: str | None = None):
        """A branch of seed ``seed`` from step ``t0`` at the constant LR ``lr`` (folder/name); ``spec`` is the
        --branch-schedule text its config records, if any."""
        branch = {"t0": t0, "lr_fn": lambda t: lr, "name": name}
        if spec is not None:
            branch["spec"] = spec
        return synthetic_runs.write_run(self._factory.mktemp(folder) / name, cfg, seed=seed, branch=branch)


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> SynthRuns:
    return SynthRuns(tmp_path_factory)
