"""theory.matching: the constant-LR switch whose raw loss equals an average's over a finite window (theory.md §3.10).

Expected values are computed here, not by the code under test: for one direction without momentum the branch's
variance follows v_{t+1} = (1 − α_b)² v_t + α_b² σ² (α_b = λ_b h, theory.md §2.3) and the EMA's joint (x, y)
second moments the 2×2 recursion of theory.md §3.3, both written out as plain Python loops; the roots and minima
are found with scipy here; the stationary limit is the closed form of theory.md §3.3."""

import json

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from theory import equivalence, predict, spec
from theory.matching import match_switch, scan_switch, switch_candidates

LR, H, S2, GAMMA, T0 = 0.05, 2.0, 1.0, 0.99, 500     # α = λh = 0.1, β = 0.01: λ_eq ≈ λβ/(β + λh) (§3.3)
ALPHA = LR * H
V_INF = ALPHA * S2 / (2 - ALPHA)                       # stationary variance at λ (theory.md §2.4)
MODEL = spec.NQM(h=[H], sigma2=S2, v0=V_INF)           # the parent starts (and stays) stationary
OPT = spec.SGD(spec.Constant(LR))
AVG = spec.EMA(GAMMA, start=T0)


def branch_loss(lr_b, s, a, b):
    """Window mean over steps a..b of ½h·v_t for the run at λ up to s (stationary: v = v∞) and λ_b from s on."""
    ab, v, tot = lr_b * H, V_INF, 0.0
    for t in range(s, b + 1):
        if t >= a:
            tot += 0.5 * H * v
        v = (1 - ab) ** 2 * v + ab * ab * S2
    return tot / (b - a + 1)


def ema_loss(a, b):
    """Window mean of ½h·Var(y_t), y the EMA from T0 (y_T0 = x_T0): x' = ax + αε, y' = γy + βx'
    (theory.md §3.3)."""
    q, beta = 1 - ALPHA, 1 - GAMMA
    vx = vy = cxy = V_INF
    tot = 0.0
    for t in range(T0, b + 1):
        if t >= a:
            tot += 0.5 * H * vy
        vx, cxy, vy = (q * q * vx + ALPHA ** 2 * S2,
                       q * GAMMA * cxy + beta * q * q * vx + beta * ALPHA ** 2 * S2,
                       GAMMA ** 2 * vy + beta ** 2 * q * q * vx + 2 * GAMMA * beta * q * cxy
                       + beta ** 2 * ALPHA ** 2 * S2)
    return tot / (b - a + 1)


def largest_root(f, lo, hi):
    grid = np.geomspace(lo, hi, 400)
    vals = np.array([f(x) for x in grid])
    k = np.flatnonzero(vals[:-1] * vals[1:] < 0)[-1]
    return brentq(f, grid[k], grid[k + 1], xtol=1e-16, rtol=1e-14)


def test_one_direction_matches_the_closed_recursion():
    a, b, s = 800, 1100, 600
    target = ema_loss(a, b)
    lr_b = largest_root(lambda x: branch_loss(x, s, a, b) - target, LR * 1e-4, LR)
    m = match_switch(MODEL, OPT, AVG, (a, b), switch_at=s)
    assert m.target_loss == pytest.approx(target, rel=1e-10)
    assert m.raw_loss == pytest.approx(0.5 * H * V_INF, rel=1e-12)
    assert m.exists and m.switch_step == s and m.window_points == b - a + 1 and m.lr_parent == LR
    assert m.lr_branch == pytest.approx(lr_b, rel=1e-6)
    assert m.branch_loss == pytest.approx(target, rel=1e-9)
    assert m.lr_branch_per_direction[0] == pytest.approx(lr_b, rel=1e-6)
    assert m.unreachable_share == 0.0                                 # one direction with a root: nothing out of reach
    assert m.reached_fraction >= 1.0 and m.unimodal
    # the other root: a much smaller LR that has not relaxed yet (the falling side of the U)
    low = m.roots[0]
    assert low < lr_b / 1.5 and branch_loss(low, s, a, b) == pytest.approx(target, rel=1e-8)
    # 200 steps of relaxation is not enough: the branch needs a lower LR than the stationary λ_eq
    assert m.lr_branch < m.lr_eq_stationary


def test_switch_at_defaults_to_the_window_start():
    m = match_switch(MODEL, OPT, AVG, (900, 950))
    assert m.switch_step == 900


def test_long_after_the_switch_the_match_is_the_stationary_equivalent_lr():
    """A − s = 2500 steps ≫ 1/(2α_b) ≈ 55 (branch) and ≫ 1/β = 100 (EMA): transients e^-40 and below, so λ_b
    is the stationary λ_eq: α_eq = 2r/(1 + r), r = Var(EMA)/σ², Var(EMA) = v∞β(1 + aγ)/((1 + γ)(1 − aγ))
    (theory.md §3.3). Tolerance 1e-8 relative (the transients are far below it)."""
    q, beta = 1 - ALPHA, 1 - GAMMA
    var_ema = V_INF * beta * (1 + q * GAMMA) / ((1 + GAMMA) * (1 - q * GAMMA))
    r = var_ema / S2
    lr_eq = 2 * r / (1 + r) / H
    m = match_switch(MODEL, OPT, AVG, (3000, 3300), switch_at=T0)
    assert m.exists
    assert m.lr_branch == pytest.approx(lr_eq, rel=1e-8)
    assert m.lr_eq_stationary == pytest.approx(lr_eq, rel=1e-8)
    assert equivalence.scalar_equivalent_lr(MODEL, 0.5 * H * var_ema) == pytest.approx(m.lr_branch, rel=1e-8)


def test_no_switch_reaches_an_average_that_is_already_ahead():
    """Window 1000..1050 switched at 1000: the EMA (from 500) is ahead from the first step, the branch starts at v∞
    and has 50 steps to relax. The best branch is found here by minimising the loop over λ_b."""
    a, b, s = 1000, 1050, 1000
    target, raw = ema_loss(a, b), 0.5 * H * V_INF
    res = minimize_scalar(lambda u: branch_loss(np.exp(u), s, a, b), bounds=(np.log(LR * 1e-3), np.log(LR)),
                          method="bounded", options={"xatol": 1e-10})
    best = branch_loss(np.exp(res.x), s, a, b)
    assert best > target
    m = match_switch(MODEL, OPT, AVG, (a, b), switch_at=s)
    assert not m.exists and m.roots == ()
    assert m.lr_branch == m.best_lr == pytest.approx(np.exp(res.x), rel=1e-4)
    assert m.best_loss == pytest.approx(best, rel=1e-9)
    assert 0 < m.reached_fraction < 1
    assert m.reached_fraction == pytest.approx((raw - best) / (raw - target), rel=1e-8)
    # one direction: what the scalar misses is out of reach in that direction too
    assert np.isnan(m.lr_branch_per_direction[0])
    assert m.unreachable_share == pytest.approx(1 - m.reached_fraction, rel=1e-6)


def test_two_point_average_is_ahead_at_once():
    """Two points 200 steps apart: Var = v∞(1 + a^200)/2 ≈ v∞/2 from the first step (theory.md §3.5); a switch at
    the window start cannot catch up within 30 steps."""
    m = match_switch(MODEL, OPT, spec.TwoPoint(gap=200), (900, 930))
    assert m.target_loss == pytest.approx(0.5 * H * V_INF * (1 + (1 - ALPHA) ** 200) / 2, rel=1e-10)
    assert not m.exists and 0 < m.reached_fraction < 1


def test_per_direction_roots_are_the_single_direction_matches():
    """Two directions, h = 2 and 0.05: each direction's own λ_b equals the match of a model with that direction
    alone (its own target, the vectorised search against the scalar one)."""
    h = np.array([H, 0.05])
    v0 = h * LR * S2 / (2 - h * LR)
    both = match_switch(spec.NQM(h=h, sigma2=S2, v0=v0), OPT, AVG, (1500, 1700), switch_at=900)
    for k in range(2):
        one = match_switch(spec.NQM(h=[h[k]], sigma2=S2, v0=v0[k]), OPT, AVG, (1500, 1700), switch_at=900)
        assert one.exists
        assert both.lr_branch_per_direction[k] == pytest.approx(one.lr_branch, rel=1e-6)
        assert both.gain_per_direction[k] == pytest.approx(one.gain, rel=1e-10)
    assert np.sum(both.gain_per_direction) == pytest.approx(both.gain, rel=1e-12)
    d = both.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d and len(d["per_direction"]["lr_branch"]) == 2


def test_scan_moves_from_the_stationary_answer_to_none():
    ms = scan_switch(MODEL, OPT, AVG, (1000, 1300))
    assert [m.switch_step for m in ms] == switch_candidates(AVG, (1000, 1300)) == [500, 625, 750, 875, 1000]
    assert ms[0].exists and not ms[-1].exists
    assert ms[0].reached_fraction > ms[-1].reached_fraction
    assert all(m.target_loss == ms[0].target_loss for m in ms)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=(1200, 1100)), "A < B"),
    (dict(window=(1000, 1000)), "A < B"),
    (dict(window=(900, 1000), switch_at=950), r"\[0, A = 900\]"),
    (dict(window=(900, 1000), switch_at=-1), r"\[0, A = 900\]"),
    (dict(window=(100, 1000)), "before the average exists"),
    (dict(window=(900, 5000), total=4000), "ends after the run"),
    (dict(window=(900.5, 1000)), "two integer steps"),
])
def test_bad_input_says_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        match_switch(MODEL, OPT, AVG, **kwargs)


def test_refuses_zero_lr_and_no_average():
    sched = spec.Piecewise(lr=LR, boundaries=(800,), lrs=(0.0,))
    with pytest.raises(ValueError, match="LR at the switch step 900 is 0"):
        match_switch(MODEL, spec.SGD(sched), AVG, (900, 1000))
    with pytest.raises(ValueError, match="no gain to match"):
        match_switch(MODEL, OPT, spec.NoAverage(), (900, 1000))
    with pytest.raises(ValueError, match="diverges"):
        match_switch(MODEL, spec.SGD(spec.Constant(1.0)), AVG, (900, 1000))


# ------------------------------------------------------------------------------------------------ command line

CLI = ["--avg", "ema", "--lr", str(LR), "--curvature", str(H), "--decay", str(GAMMA), "--start", str(T0),
       "--steps", "1200"]


def test_cli_json_has_the_match(capsys, tmp_path):
    predict.main([*CLI, "--match-window", "900:1200", "--switch-at", "600", "--json", "--out", str(tmp_path / "r")])
    text = capsys.readouterr().out
    assert text.count("\n") == 1
    res = json.loads(text)
    got = res["match"]
    assert got["window"] == [900, 1200] and got["switch_step"] == 600 and got["exists"]
    target = ema_loss(900, 1200)
    assert got["target_loss"] == pytest.approx(target, rel=1e-10)
    lr_b = largest_root(lambda x: branch_loss(x, 600, 900, 1200) - target, LR * 1e-4, LR)
    assert got["lr_branch"] == pytest.approx(lr_b, rel=1e-6)
    assert got["lr_eq_stationary"] == pytest.approx(res["equivalent_lr_scalar"], rel=1e-9)


def test_cli_json_default_switch_is_the_window_start(capsys, tmp_path):
    predict.main([*CLI, "--match-window", "900:1200", "--json", "--out", str(tmp_path / "r")])
    got = json.loads(capsys.readouterr().out)["match"]
    assert got["switch_step"] == 900 and not got["exists"] and 0 < got["reached_fraction"] < 1


@pytest.mark.parametrize("argv, says", [
    (["--match-window", "5:3"], "A must be before B"),
    (["--match-window", "5"], "two integers A:B"),
    (["--match-window", "9x:12"], "two integers A:B"),
    (["--match-window", "900:5000"], "ends after the run"),
    (["--match-window", "900:1200", "--switch-at", "1000"], "--switch-at 1000"),
    (["--switch-at", "10"], "needs --match-window"),
    (["--match-window", "100:1200"], "before the average exists"),
])
def test_cli_bad_match_window_one_line_exit_2(capsys, tmp_path, argv, says):
    out = tmp_path / "r"
    assert predict.cli([*CLI, *argv, "--json", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not out.exists()


def test_long_window_is_sampled_and_says_so():
    """3,001 steps: sampled at 1,001 evenly spaced steps, each weighted by the steps nearest to it; the EMA's 100-step
    start transient is resolved to 1e-4 of the window mean (against every step, summed here)."""
    m = match_switch(MODEL, OPT, AVG, (600, 3600), switch_at=T0, per_direction=False)
    assert m.window_points == 1001
    assert m.target_loss == pytest.approx(ema_loss(600, 3600), rel=1e-4)
    assert m.lr_branch_per_direction is None and m.to_dict()["per_direction"] is None


def test_cli_human_output_names_the_switch(capsys, tmp_path):
    predict.main([*CLI, "--match-window", "900:1200", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "match over steps 900..1200" in out
    assert "switch at step 900: none exists; the best λ_b" in out and "of the average's gain" in out
    assert "share of the gain a scalar schedule cannot reach" in out and "stationary λ_eq (scalar)" in out
