"""tests/synthetic_runs.py draws each fixed batch's dip from the heavy-ball impulse response of theory.inverse (its one
home, theory.md §2.6, §3.2), checked here against the response written out by hand."""

import numpy as np

from common import rundir

import synthetic_runs


def test_bank_dip_follows_the_impulse_response(tmp_path):
    """Right after the use step s the bank loss of the batch sits h·s_h·r(t − s) below its level before s, with
    r(m) = k_{m−1}: k_0 = α, k_1 = cα, k_2 = c k_1 − μ k_0, c = 1 + μ − α. One scale h = 2, λ = 0.01 (α = 0.02,
    c = 1.88), μ = 0.9; noise mass 50 so that the dip (≥ 2 loss units) dwarfs the bank noise (s.d. 0.002)."""
    cfg = synthetic_runs.SynthSetup(h=(2.0,), s=(50.0,), d=(10,), b=(0.0,), steps=200, swa_start=100, eval_every=10,
                               probe_every=100, bank_every=1, two_point_gaps=(10,), n_point_gap=10)
    tr = rundir.Trajectory.load(synthetic_runs.write_run(tmp_path / "s0", cfg) / "trajectory.npz")
    used = int(np.atleast_1d(tr["static/bank_used_at"])[0])
    steps = np.asarray(tr["bank/step"])
    loss = np.asarray(tr["bank/train_loss"])[:, 0]
    dip = loss[np.searchsorted(steps, used + np.arange(1, 4))] - loss[np.searchsorted(steps, used - 1)]
    k = np.array([0.02, 1.88 * 0.02, 1.88 * (1.88 * 0.02) - 0.9 * 0.02])
    np.testing.assert_allclose(dip, -2.0 * 50.0 * k, rtol=0.01)
