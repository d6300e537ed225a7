"""scripts/reproduce.py: the plan, the cost line, and the whole pipeline with empirical.run replaced by synthetic
NQM runs (so the stage logic — calibrate, branch commands, report, figures — is exercised without torch)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import synthetic_runs

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)

CFG = synthetic_runs.SynthSetup(steps=3000, swa_start=1500, d=(200,), two_point_gaps=(10, 1000), n_point_gap=200,
                           eval_noise=0.002)


def _arg(cmd, flag):
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def fake_runner(cmd, cwd=None, **kw):
    """Stands in for subprocess.run: empirical.run → a synthetic run dir; compare/figures → their main()."""
    mod = cmd[2]
    if mod == "empirical.run":
        seed, out, sched = int(_arg(cmd, "--seed")), _arg(cmd, "--out"), _arg(cmd, "--branch-schedule")
        branch = None
        if sched:
            lam, mu, t0 = CFG.lr, CFG.momentum, CFG.swa_start
            kind, *vals = sched.split(":")
            if kind == "half":
                fn = lambda t: lam / 2                                            # noqa: E731
            elif kind == "ema":
                g, h = map(float, vals)
                fn = lambda t, g=g, h=h: lam * (1 - g) / (1 - g + lam * h / (1 - mu))   # noqa: E731
            else:
                tau = (1 - mu) / (lam * float(vals[0]))
                fn = lambda t, tau=tau: lam * tau / (tau + t - t0)                # noqa: E731
            branch = {"t0": t0, "lr_fn": fn, "name": sched, "spec": sched}
        synthetic_runs.write_run(out, CFG, seed=seed, branch=branch)
        return SimpleNamespace(returncode=0)
    if mod == "empirical.posthoc":
        _fake_posthoc(Path(cmd[3]), Path(_arg(cmd, "--out")), _arg(cmd, "--schedule"), int(_arg(cmd, "--from")))
        return SimpleNamespace(returncode=0)
    from compare import report
    from figures import build
    return SimpleNamespace(returncode=(report.main if mod == "compare.report" else build.main)(cmd[3:]))


def _fake_posthoc(base: Path, out: Path, schedule: str, t0: int) -> None:
    """A post-hoc run directory as empirical.posthoc writes it (the base config plus a ``posthoc`` section, one eval
    row at T); the base run's SWA loss at T stands in for the average's."""
    from common import rundir
    b = rundir.load_run(base)
    tr, T = b.trajectory, int(b.trajectory["eval/step"][-1])
    sec = {"schedule": schedule, "syntax": "branch", "from_step": t0, "at": T, "h": float(schedule.split(":")[1]),
           "checkpoint_steps": [t0, T], "weights": [0.5, 0.5], "max_spacing": T - t0, "negative_mass": 0.0,
           "n_negative": 0, "kernel_rel_error": 0.0, "variance_ratio": 1.0}
    rundir.new_run_dir("empirical", "posthoc", out=out)
    rundir.write_config(out, "empirical", {**b.config["config"], "posthoc": sec}, command=["fake"])
    rundir.write_env(out)
    series = {"eval/step": np.array([T], dtype=np.int64)}
    for split in ("test", "train"):
        for name, src in (("posthoc", "swa"), ("raw", "raw")):
            series[f"eval/{split}_loss_{name}"] = np.asarray(tr[f"eval/{split}_loss_{src}"])[-1:]
            series[f"eval/{split}_acc_{name}"] = np.asarray(tr[f"eval/{split}_acc_{src}"])[-1:]
    rundir.Trajectory(series).save(out / "trajectory.npz")
    rundir.write_summary(out, "ok", T)


def test_dry_run_prints_plan_and_cost(capsys, tmp_path):
    assert reproduce.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "expected cost" in out and "digits" in out and "mnist" in out
    assert out.count("empirical.run digits") == 10 and out.count("empirical.run mnist") == 3
    assert "--checkpoint-keep-every 900" in out      # mnist: the branch point only (its SWA start, 900)
    assert out.count("--checkpoint-keep-every 50") == 10   # digits: the post-hoc grid
    assert "empirical.posthoc" in out
    assert not any(tmp_path.iterdir())


def test_branch_commands_use_calibrated_curvature(tmp_path):
    e = reproduce.plan(False, [0], tmp_path)[0]
    cmds = [" ".join(b["cmd"]) for b in reproduce.branch_commands(e, 2.5, {0.99: 0.125, 0.998: 0.03})]
    assert any("--branch-schedule half" in c for c in cmds)
    assert any("--branch-schedule swa:2.5" in c for c in cmds)
    assert any("--branch-schedule ema:0.99:0.125" in c for c in cmds)
    assert any("--branch-schedule ema:0.998:0.03" in c for c in cmds)
    assert all("step_000001050.pt" in c for c in cmds)                 # the digits preset's SWA start
    # the digits preset's constant LR ends at step 2,100 (its decay start): branches stop there, also when resumed
    assert all(c.endswith("--max-steps 2100") for c in cmds)
    b = reproduce.branch_commands(e, 2.5, {})[0]
    b["dir"].mkdir(parents=True)
    (b["dir"] / "config.json").write_text("{}")
    assert reproduce.resumable(b)[-3:] == ["--resume", "--max-steps", "2100"]


def test_rerun_resumes_started_runs_and_starts_the_rest(tmp_path):
    """An interrupted reproduction is continued by the same command: a run whose directory holds a config.json is
    resumed (`--out DIR --resume`, its own saved config), a run not yet started gets its full command."""
    e = reproduce.plan(False, [0, 1], tmp_path, ("mnist",))[0]
    started, fresh = e["base"]
    started["dir"].mkdir(parents=True)
    (started["dir"] / "config.json").write_text("{}")
    assert reproduce.resumable(started)[2:] == ["empirical.run", "--out", str(started["dir"]), "--resume"]
    assert reproduce.resumable(fresh) == fresh["cmd"] and "--resume" not in fresh["cmd"]
    seen = []
    reproduce._run_all(e["base"], lambda cmd, **kw: seen.append(cmd) or SimpleNamespace(returncode=0), jobs=1)
    assert sorted("--resume" in c for c in seen) == [False, True]


@pytest.mark.slow
def test_pipeline_with_synthetic_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce.QUICK_T0, "digits", CFG.swa_start)
    assert reproduce.main(["--quick", "--out", str(tmp_path)], runner=fake_runner) == 0
    rep = tmp_path / "digits" / "report"
    assert (rep / "report.md").is_file() and (rep / "metrics.json").is_file()
    assert (tmp_path / "digits" / "figures" / "ema_equivalence.png").is_file()
    md = (rep / "report.md").read_text()
    assert "branch from step 1500" in md
    (setup,) = json.loads((rep / "metrics.json").read_text())["setups"]
    (ph,) = setup["posthoc_results"]                        # paired with the swa branch of the same seed
    assert ph["schedule"].startswith("swa:") and ph["branch"].endswith("s0-swa") and "agrees" in ph
    assert [c["id"] for c in setup["claims"]].count("posthoc") == 1


def test_posthoc_commands_follow_the_swa_branch(tmp_path):
    """Digits keeps a checkpoint every POSTHOC_EVERY steps (dividing T0, so T0 stays a branch point) and averages
    them for the same target text and branch point as the swa:h branch; mnist keeps none."""
    digits, mnist = reproduce.plan(False, [0, 1], tmp_path, ("digits", "mnist"))
    k = reproduce.POSTHOC_EVERY["digits"]
    assert digits["t0"] % k == 0 and all(_arg(b["cmd"], "--checkpoint-keep-every") == str(k) for b in digits["base"])
    cmds = reproduce.posthoc_commands(digits, 2.5)
    assert [_arg(c["cmd"], "--schedule") for c in cmds] == ["swa:2.5"] * 2
    assert all(_arg(c["cmd"], "--from") == "1050" and c["cmd"][2] == "empirical.posthoc" for c in cmds)
    branch = [b for b in reproduce.branch_commands(digits, 2.5, {}) if "swa:2.5" in b["cmd"]]
    assert branch and all(_arg(b["cmd"], "--branch-schedule") == "swa:2.5" for b in branch)
    assert reproduce.posthoc_commands(mnist, 2.5) == []


@pytest.mark.slow
def test_quick_reproduction_with_real_training(tmp_path):
    """The reduced pipeline CI keeps alive (~2 min on 2 cores): real digits runs, branches, report, figures."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)   # no timeout: a slow machine is not a failure
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    root = tmp_path / "digits"
    m = json.loads((root / "report" / "metrics.json").read_text())
    (setup,) = m["setups"]
    assert setup["n_seeds"] == 1 and len(setup["branches"]) == 4
    nulls = {f"not distinguishable from {n}" for n in ("zero gain", "mean of the other seeds",
                                                       "identity without its drift term")}
    assert {c["verdict"] for c in setup["claims"]} <= {"reproduced", "not reproduced", "not testable here"} | nulls
    # the 9 paper claims and the model's own: identified, three-way consistency, cross-fit (compare/claims.py)
    assert len(setup["claims"]) == 12
    (ph,) = setup["posthoc_results"]                        # the kept checkpoints' average vs the swa branch
    assert "agrees" in ph and ph["at"] == 480 and ph["negative_mass"] == 0
    h_swa, h_ema, _ = reproduce.calibrated_h([root / "s0"])
    assert f"swa:{h_swa:.6g}" in r.stdout       # the SWA branch used the cooldown curvature of the calibration
    for g, h in h_ema.items():
        assert f"ema:{g:g}:{h:.6g}" in r.stdout
    for fig in ("one_step_probe", "ema_equivalence", "swa_equivalence", "two_point_vs_distance"):
        assert (root / "figures" / f"{fig}.png").stat().st_size > 1000
    md = (root / "report" / "report.md").read_text()
    assert "## Setup 1: 1 seed run(s), 4 branch run(s)" in md and "| claim |" in md


def test_calibrated_ema_curvature_makes_the_branch_run_at_the_equivalent_lr(synth_runs):
    """ema:GAMMA:H with the H from calibrated_h gives (through empirical.config.branch_lr's harmonic rule, an
    independent code path) the constant LR whose stationary raw excess equals the EMA's under the calibration."""
    from compare import predict
    from compare.calibrate import calibrate
    from compare.load import Variant, group_runs, load_runs
    from empirical.config import branch_lr

    h_swa, h_ema, text = reproduce.calibrated_h(synth_runs)
    setup = group_runs(load_runs(synth_runs))[0]
    cal = calibrate(setup)
    assert h_ema and h_swa > 0 and "calibration" in text
    for g, h in h_ema.items():
        lam_eq = predict.equivalent_lr(cal, predict.stationary_excess(cal, Variant(f"ema_{g!r}", "ema", decay=g),
                                                                      setup.config))
        got = float(branch_lr(f"ema:{g}:{h}", cal.lr, cal.momentum, 0).lr_at(0))
        assert got == pytest.approx(lam_eq, rel=1e-9)
