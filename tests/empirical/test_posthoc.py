"""empirical.posthoc: the inverse-map weights on a checkpoint grid (theory.md §3.6a), the streamed average, the
command line's bad-input contract, and the whole path smoke run → posthoc + branch → compare.report."""
from __future__ import annotations

import json
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch

from common import rundir
from empirical import checkpoint, config, posthoc, presets


def _cfg(**kw) -> config.RunConfig:
    """A constant-LR smoke config; only the LR table matters to make_plan (no data, no model)."""
    base = dict(steps=100, lr=0.1, momentum=0.0, schedule="constant", warmup_steps=0)
    return replace(presets.PRESETS["smoke"], **{**base, **kw})


def _grid(every: int, stop: int = 100, start: int = 0) -> dict[int, str]:
    return {s: f"step_{s:09d}.pt" for s in range(start, stop + 1, every)}


# ------------------------------------------------------------------------------------------- (a) the weights

def test_constant_target_is_the_last_checkpoint():
    """The run's own (constant) schedule: the scheduled iterate is the iterate, weight 1 on the last checkpoint."""
    p = posthoc.make_plan(_cfg(), _grid(10), "constant", h=1.0)
    assert p.checkpoint_steps == [100] and p.weights == [1.0] and p.n_negative == 0
    p = posthoc.make_plan(_cfg(momentum=0.9), _grid(10), "constant", h=3.0, at=60)
    assert p.checkpoint_steps == [60] and p.weights == [1.0]


def test_swa_target_per_step_weights_match_the_hand_derivation():
    """swa:H from T0 (μ = 0) is λ_n = λτ/(τ + n), τ = 1/α, α = λH. Its kernel telescopes to the flat
    w = α/(1 + α(L − 1)), L = T − T0 (theory.md §3.6a), so c_t = α/(1 + α(L − 1)) on T0 < t < T and
    c_T = 1/(1 + α(L − 1)). Every step kept: the checkpoint weights are these."""
    lam, H, t0, T = 0.1, 2.0, 40, 100
    a, L = lam * H, T - t0
    p = posthoc.make_plan(_cfg(lr=lam), _grid(1), f"swa:{H}", from_step=t0)
    assert p.h == H and p.h_source == "schedule" and p.at == T
    assert p.checkpoint_steps == list(range(t0 + 1, T + 1))
    u = a / (1 + a * (L - 1))
    assert np.allclose(p.weights[:-1], u, rtol=1e-9, atol=0)
    assert p.weights[-1] == pytest.approx(1 / (1 + a * (L - 1)), rel=1e-9)
    assert p.n_negative == 0 and p.kernel_rel_error < 1e-12 and p.variance_ratio == pytest.approx(1.0, rel=1e-9)


def test_swa_target_on_a_grid_of_ten_steps():
    """The same target with checkpoints every 10 steps: the uniform weights u on 41..99 split linearly between
    neighbours give 4.5u to step 40 (Σ_{j=1..9} (10 − j)/10), 10u to 50..90 (4.5u + u + 4.5u) and 4.5u plus the
    lump 1/(1 + α(L − 1)) to step 100."""
    lam, H, t0, T = 0.1, 2.0, 40, 100
    a, L = lam * H, T - t0
    u, lump = a / (1 + a * (L - 1)), 1 / (1 + a * (L - 1))
    p = posthoc.make_plan(_cfg(lr=lam), _grid(10), f"swa:{H}", from_step=t0)
    assert p.checkpoint_steps == [40, 50, 60, 70, 80, 90, 100] and p.max_spacing == 10
    assert np.allclose(p.weights, [4.5 * u] + [10 * u] * 5 + [4.5 * u + lump], rtol=1e-9, atol=0)
    assert p.alpha_eff_spacing == pytest.approx(a * 10)
    assert p.variance_ratio > 1.0 and 0 < p.kernel_rel_error < 1      # the grid costs something at α·K = 2


def test_half_target_matches_the_closed_form():
    """λ/2 from T0 (μ = 0), b = 1 − α/2: c_T0 = b^(L−1)/2, c_t = (α/4) b^(T−1−t), c_T = 1/2 (theory.md §3.6a)."""
    lam, h, t0, T = 0.1, 1.5, 70, 100
    a, L, b = lam * h, T - t0, 1 - lam * h / 2
    p = posthoc.make_plan(_cfg(lr=lam), _grid(1), "half", from_step=t0, h=h)
    assert p.checkpoint_steps == list(range(t0, T + 1))
    want = [b ** (L - 1) / 2] + [a / 4 * b ** (T - 1 - t) for t in range(t0 + 1, T)] + [0.5]
    assert np.allclose(p.weights, want, rtol=1e-9, atol=1e-15)
    assert sum(p.weights) == pytest.approx(1.0)


def test_lr_increase_gives_negative_weights_and_they_are_reported():
    """scale:2 (μ = 0): c_t ∝ w_s − a w_{s+1} = −2α²(1 − 2α)^(T−2−s) < 0 inside the range (theory.md §3.6 sign rule)."""
    p = posthoc.make_plan(_cfg(lr=0.05), _grid(1), "scale:2", from_step=50, h=1.0)
    w = np.array(p.weights)
    assert p.n_negative == int((w < 0).sum()) > 0
    assert p.negative_mass == pytest.approx(-w[w < 0].sum()) and sum(p.weights) == pytest.approx(1.0)


def test_checkpoint_weights_split_linearly():
    assert np.allclose(posthoc.checkpoint_weights(np.array([0, .5, 0, 0, .5]), 0, [0, 2, 4]), [.25, .25, .5])
    assert np.allclose(posthoc.checkpoint_weights(np.array([.3, .7]), 5, [0, 10]), 
                       [.3 * .5 + .7 * .4, .3 * .5 + .7 * .6])   # step 5 splits 1:1, step 6 splits 4:6


# ------------------------------------------------------------------------------------------- (a') bad plans

@pytest.mark.parametrize("kw, match", [
    (dict(schedule="half", from_step=40), "give --h"),
    (dict(schedule="half", h=1.0), "branch syntax"),
    (dict(schedule="half", from_step=40, h=1.0, at=55), "no checkpoint at that step"),
    (dict(schedule="nosuch:x=1", h=1.0), "unknown schedule"),
    (dict(schedule="swa:-1", from_step=40), "finite and > 0"),
])
def test_bad_requests_are_one_line_errors(kw, match):
    with pytest.raises(posthoc.PosthocError, match=match):
        posthoc.make_plan(_cfg(), _grid(10), **kw)


def test_range_not_covered_and_lr_not_constant():
    with pytest.raises(posthoc.PosthocError, match="keep checkpoints from step 40"):
        posthoc.make_plan(_cfg(), _grid(10, start=50), "half", from_step=40, h=1.0)
    cos = _cfg(schedule="cosine", decay_start=60)
    with pytest.raises(posthoc.PosthocError, match="not constant over steps 40..100"):
        posthoc.make_plan(cos, _grid(10), "half", from_step=40, h=1.0, at=100)
    with pytest.raises(posthoc.PosthocError, match="no checkpoints"):
        posthoc.make_plan(_cfg(), {}, "half", from_step=40, h=1.0)


# ------------------------------------------------------------------------------------------- (b) streaming

def _tiny_states(tmp_path):
    torch.manual_seed(0)
    paths, states = [], []
    for i, step in enumerate((10, 20, 30)):
        m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        with torch.no_grad():
            for q in m.parameters():
                q.copy_(torch.randn_like(q))
            m[1].running_mean.fill_(i + 1.0)
            m[1].num_batches_tracked.fill_(step)
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        states.append(sd)
        paths.append(checkpoint.save(tmp_path, step, {"model": sd}, keep_every=10))
    return paths, states


def test_stream_average_is_the_weighted_sum_one_checkpoint_at_a_time(tmp_path, monkeypatch):
    paths, states = _tiny_states(tmp_path)
    w = [0.2, 0.3, 0.5]
    live, peak = [0], [0]

    def counting_load(path):
        state = checkpoint.load(path)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(state["model"]["0.weight"], lambda: live.__setitem__(0, live[0] - 1))
        return state

    avg, last = posthoc.stream_average(paths, w, load=counting_load)
    for k, v in states[0].items():
        if v.is_floating_point():
            want = sum(wi * s[k].double() for wi, s in zip(w, states))
            assert torch.allclose(avg[k], want, rtol=1e-12, atol=0), k
        else:
            assert k not in avg
    assert avg["1.running_mean"].tolist() == pytest.approx([0.2 + 0.6 + 1.5] * 2)
    assert int(last["1.num_batches_tracked"]) == 30 and torch.equal(last["0.weight"], states[2]["0.weight"])
    assert peak[0] == 1          # each checkpoint is released before the next one is read
    assert live[0] == 1          # only the last one (θ_T, returned) is still held


# ------------------------------------------------------------------------------------------- (c), (d) CLI

SMOKE = ["smoke", "--steps", "60", "--eval-every", "10", "--swa-start", "20", "--two-point-gaps", "5,10",
         "--ema-decays", "0.9", "--bank-every", "5", "--bank-size", "3", "--probe-every", "10", "--align-every", "10",
         "--curv-every", "30", "--curv-iters", "3"]


@pytest.fixture(scope="module")
def smoke_base(tmp_path_factory):
    from empirical import run

    out = tmp_path_factory.mktemp("posthoc") / "base"
    assert run.main([*SMOKE, "--out", str(out), "--checkpoint-every", "10", "--checkpoint-keep-every", "10"]) == out
    return out


def test_smoke_run_posthoc_branch_and_report(smoke_base, tmp_path, capsys):
    from compare import report
    from empirical import run

    ph, br, rep = tmp_path / "ph", tmp_path / "br", tmp_path / "rep"
    assert posthoc.cli([str(smoke_base), "--schedule", "swa:2", "--from", "20", "--out", str(ph)]) == 0
    out = capsys.readouterr().out
    assert "no negative weight" in out and str(ph) in out
    r = rundir.load_run(ph)
    sec = r.config["config"]["posthoc"]
    assert r.source == "empirical" and sec["schedule"] == "swa:2" and sec["at"] == 60
    assert sec["checkpoint_steps"] == [20, 30, 40, 50, 60] and sum(sec["weights"]) == pytest.approx(1.0)
    assert r.trajectory["eval/step"].tolist() == [60]
    # θ_T evaluated by the posthoc run is the base run's raw iterate at T, evaluated the same way
    base = rundir.load_run(smoke_base).trajectory
    i = base["eval/step"].tolist().index(60)
    assert float(r.trajectory["eval/test_loss_raw"][0]) == pytest.approx(float(base["eval/test_loss_raw"][i]),
                                                                          rel=1e-6)
    assert r.summary["status"] == "ok" and r.summary["negative_mass"] == 0
    ckpt = smoke_base / "checkpoints" / "step_000000020.pt"
    assert run.main([*SMOKE, "--out", str(br), "--branch-from", str(ckpt), "--branch-schedule", "swa:2"]) == br
    assert report.main([str(smoke_base), str(br), str(ph), "--out", str(rep)]) == 0
    m = json.loads((rep / "metrics.json").read_text())
    (setup,) = m["setups"]
    assert setup["posthoc"] == [str(ph)] and setup["n_seeds"] == 1 and len(setup["branches"]) == 1
    (res,) = setup["posthoc_results"]
    assert res["branch"] == str(br) and "agrees" in res and res["at"] == 60
    claim = [c for c in setup["claims"] if c["id"] == "posthoc"]
    assert len(claim) == 1 and claim[0]["verdict"] in ("reproduced", "not reproduced")
    assert "Post-hoc averages of constant-LR checkpoints" in (rep / "report.md").read_text()


def _fails(argv, capsys, out=None):
    assert posthoc.cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("empirical.posthoc: error:") and "\n" not in err
    if out is not None:
        assert not out.exists()
    return err


def test_bad_input_exit_2_one_line_nothing_written(smoke_base, tmp_path, capsys):
    out = tmp_path / "never"
    assert "give --h" in _fails([str(smoke_base), "--schedule", "half", "--from", "20", "--out", str(out)], capsys, out)
    assert "not a run directory" in _fails([str(tmp_path), "--schedule", "constant", "--h", "1", "--out", str(out)],
                                           capsys, out)
    assert "no checkpoint at that step" in _fails([str(smoke_base), "--schedule", "half", "--from", "20", "--h", "1",
                                                   "--at", "55", "--out", str(out)], capsys, out)
    bare = tmp_path / "bare"                      # a run directory without kept checkpoints
    bare.mkdir()
    (bare / "config.json").write_text((smoke_base / "config.json").read_text())
    assert "no checkpoints" in _fails([str(bare), "--schedule", "half", "--from", "20", "--h", "1", "--out", str(out)],
                                      capsys, out)
    # a corrupt checkpoint in the range: refused when it is read, still nothing written
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.json").write_text((smoke_base / "config.json").read_text())
    (early / "checkpoints").mkdir()
    for s in (20, 30):
        for suf in ("", ".sha256"):
            src = smoke_base / "checkpoints" / f"step_{s:09d}.pt{suf}"
            (early / "checkpoints" / src.name).write_bytes(src.read_bytes())
    p = early / "checkpoints" / "step_000000020.pt"
    p.write_bytes(p.read_bytes()[:100])
    assert "checksum" in _fails([str(early), "--schedule", "half", "--from", "20", "--h", "1", "--at", "30",
                                 "--out", str(out)], capsys, out)
    # an existing non-empty --out
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert "not empty" in _fails([str(smoke_base), "--schedule", "swa:2", "--from", "20", "--out", str(busy)], capsys)


def test_from_report_completes_the_schedule_like_a_branch(smoke_base, tmp_path, capsys):
    """--from-report gives swa the calibrated H: with one scale h the cooldown τ = 1/(λ_eff h) and swa:H uses
    τ = 1/(λ_eff H), so H = h (theory.md §3.4), the same completion empirical.run --branch-schedule makes."""
    rep = tmp_path / "rep"
    rep.mkdir()
    cal = {"lr": 0.05, "momentum": 0.9, "h": [2.0], "noise_mass": [1.0]}
    (rep / "metrics.json").write_text(json.dumps({"schema_version": 1, "setups": [{"calibration": cal}]}))
    ph = tmp_path / "ph"
    assert posthoc.cli([str(smoke_base), "--schedule", "swa", "--from", "20", "--from-report", str(rep),
                        "--out", str(ph)]) == 0
    assert "swa:2" in capsys.readouterr().out
    sec = rundir.load_run(ph).config["config"]["posthoc"]
    assert sec["schedule"].startswith("swa:") and float(sec["schedule"][4:]) == pytest.approx(2.0, rel=1e-5)
