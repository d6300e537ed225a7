"""The spectrum-level answers a branch needs (theory.stationary.spectrum_*, *_branch_curvature; theory.md §3.3-3.4),
checked against hand-derived single-direction values: with one direction they must reduce to the closed forms."""
import math

import numpy as np
import pytest

from theory import stationary as st


def test_raw_excess_one_direction_by_hand():
    # μ = 0: v∞ = ασ²/(2 − α); λ = 0.1, h = 2 → α = 0.2, σ² = 3: v = 0.6/1.8 = 1/3, excess ½·2·(1/3) = 1/3
    assert st.spectrum_raw_excess(0.1, [2.0], [3.0]) == pytest.approx(1 / 3, rel=1e-12)
    assert st.spectrum_raw_excess(1.1, [2.0], [3.0]) == math.inf      # α = 2.2 beyond the edge 2


def test_equivalent_lr_inverts_the_raw_excess():
    # one direction, μ = 0: the LR whose excess is ½h·v with v = ασ²/(2 − α) at α = 0.05 → λ = 0.05/h
    h, s2 = 4.0, 0.5
    v = 0.05 * s2 / (2 - 0.05)
    assert st.spectrum_equivalent_lr(0.5 * h * v, 0.1, [h], [s2]) == pytest.approx(0.05 / h, rel=1e-8)
    assert math.isnan(st.spectrum_equivalent_lr(0.0, 0.1, [h], [s2]))


def test_cooldown_tau_single_scale_is_one_over_alpha_eff():
    # τ = (1 − μ)/(λh): λ = 0.05, h = 2, μ = 0.9 → 0.1/0.1 = 1 step... use h = 0.01 → 0.1/0.0005 = 200 steps
    assert st.spectrum_cooldown_tau(0.05, [0.01], [1.0], 0.9) == pytest.approx(200.0, rel=1e-12)
    # two scales with equal excess shares: τ is the plain mean of their τ_k (weights h_k v_k equal)
    # μ = 0, λ = 0.01: h = 1 → α = 0.01, v = 0.01σ²/1.99; h = 0.1 → α = 0.001, v = 0.001σ²/1.999
    h = np.array([1.0, 0.1])
    s2 = np.array([1.0, (0.01 / 1.99) / (0.1 * 0.001 / 1.999)])   # makes h_k v_k equal
    assert st.spectrum_cooldown_tau(0.01, h, s2) == pytest.approx((100 + 1000) / 2, rel=1e-10)


def test_swa_branch_curvature_round_trips_to_tau():
    # swa:H cools down with τ = (1 − μ)/(λH): H from a single scale h gives back h
    assert st.swa_branch_curvature(0.05, [0.3], [1.0], 0.9) == pytest.approx(0.3, rel=1e-12)


def test_ema_branch_curvature_runs_the_branch_at_the_exact_equivalent_lr():
    # one direction, μ = 0, EMA γ = 0.99 at α = λh = 0.1: exact λ_eq from the EMA's stationary variance, then the
    # branch's harmonic rule λβ/(β + λ_eff·H) at the returned H must give that λ_eq (independent closed forms)
    lr, h, g = 0.05, 2.0, 0.99
    v_ema = float(st.ema_variance(lr * h, g, 1.0))
    alpha_eq = 2 * v_ema / (1 + v_ema)            # inverse of v = α/(2 − α), σ² = 1 (theory.md §3.3)
    H = st.ema_branch_curvature(lr, g, [h], [1.0])
    beta = 1 - g
    assert lr * beta / (beta + lr * H) == pytest.approx(alpha_eq / h, rel=1e-8)
    # a decay whose average is worth more than the run's own LR has no such H
    assert math.isnan(st.ema_branch_curvature(lr, 0.0, [h], [1.0]))
