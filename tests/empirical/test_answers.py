"""empirical.answers: the equivalent LR scheduler steps like lr(step), post-hoc weights on any checkpoint steps match
the hand derivation of theory.md §3.6a and the command line's, and the state-dict average is the hand-computed one,
with BatchNorm recomputed exactly as torch.optim.swa_utils.update_bn does. The docstring examples run too."""
from __future__ import annotations

import doctest
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import empirical
from empirical import answers, checkpoint, posthoc, presets
from theory import advice, spec


def test_docstring_examples_run():
    res = doctest.testmod(answers)
    assert res.attempted >= 6 and res.failed == 0


def test_exported_from_empirical():
    for name in ("equivalent_lr_scheduler", "posthoc_weights", "average_state_dicts"):
        assert name in empirical.__all__ and getattr(empirical, name) is getattr(answers, name)


# ------------------------------------------------------------------------------------------ the LR scheduler

@pytest.mark.parametrize("avg, mu", [(spec.EMA(0.99, start=20), 0.0), (spec.SWA(start=15, length=40), 0.9),
                                     (spec.TwoPoint(30), 0.5), (spec.SWA(start=0), 0.0)])
def test_scheduler_reproduces_the_schedule_at_every_step(avg, mu):
    lr, h, s = 0.05, [1.0, 0.2], [1.0, 3.0]
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([{"params": [w]}, {"params": [torch.zeros(1, requires_grad=True)], "lr": 2 * lr}],
                          lr=lr, momentum=mu)
    sched = answers.equivalent_lr_scheduler(opt, avg, lr, mu, h, s)
    f = advice.equivalent_schedule(avg, lr, mu, h, s)
    for t in range(100):
        assert opt.param_groups[0]["lr"] == pytest.approx(f(t), rel=1e-13, abs=1e-300), t
        assert opt.param_groups[1]["lr"] == pytest.approx(2 * f(t), rel=1e-13, abs=1e-300), t
        w.grad = torch.ones(2)
        opt.step()
        sched.step()


def test_scheduler_state_dict_resumes_the_schedule():
    def make():
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        return opt, answers.equivalent_lr_scheduler(opt, spec.SWA(start=5), 0.1, 0.0, 1.0, 1.0)

    opt, sched = make()
    for _ in range(12):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * 10 / (10 + 11))


def test_scheduler_refuses_another_momentum():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        answers.equivalent_lr_scheduler(opt, spec.EMA(0.99), 0.1, 0.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------------ post-hoc weights

def test_swa_cooldown_weights_by_hand_and_path_by_path():
    """The SWA-equivalent cooldown from T0 (μ = 0, one direction, α = λh, τ = 1/α, update T0 + n − 1 at α/(1 + nα))
    makes θ_T = (τθ_T0 + ε_T0 + … + ε_{T−1})/(τ + L), L = T − T0: the inverse map gives c_t = α/(1 + αL) on
    θ_T0..θ_{T−1} and 1/(1 + αL) on θ_T (sum 1). On one noise sequence the average of the constant-LR run equals the
    scheduled iterate."""
    lr, h, t0, T = 0.1, 0.5, 40, 100
    a, L = lr * h, T - t0
    target = advice.equivalent_schedule(spec.SWA(start=t0), lr, 0.0, h, 1.0)
    w = answers.posthoc_weights(range(T + 1), target, h, lr=lr)
    assert w.checkpoint_steps == list(range(t0, T + 1)) and w.at == T and w.departure == t0
    np.testing.assert_allclose(w.weights[:-1], a / (1 + a * L), rtol=1e-9)
    assert w.weights[-1] == pytest.approx(1 / (1 + a * L), rel=1e-9)
    assert w.n_negative == 0 and w.kernel_rel_error < 1e-12

    eps = np.random.default_rng(0).normal(size=T)
    theta, x = [0.3], 0.3
    for t in range(T):                                                   # the constant-LR run
        x = (1 - a) * x + a * eps[t]
        theta.append(x)
    y = 0.3
    for t in range(T):                                                   # the scheduled run, same noise
        at = target(t) * h
        y = (1 - at) * y + at * eps[t]
    assert np.dot(w.weights, [theta[s] for s in w.checkpoint_steps]) == pytest.approx(y, rel=1e-10)


def test_same_weights_as_the_command_line_on_its_grid():
    """``half`` from step 70 at h = 1.5 on checkpoints every 10 steps: posthoc_weights given the run's constant LR and
    the target's LR table gives the weights empirical.posthoc.make_plan gives for the branch syntax."""
    cfg = replace(presets.PRESETS["smoke"], steps=100, lr=0.1, momentum=0.0, schedule="constant", warmup_steps=0)
    grid = {s: f"step_{s:09d}.pt" for s in range(0, 101, 10)}
    plan = posthoc.make_plan(cfg, grid, "half", from_step=70, h=1.5)
    table = np.where(np.arange(100) < 70, 0.1, 0.05)
    w = answers.posthoc_weights(sorted(grid, reverse=True), table, 1.5, lr=0.1)
    assert w.checkpoint_steps == plan.checkpoint_steps and w.at == plan.at == 100
    np.testing.assert_allclose(w.weights, plan.weights, rtol=1e-12)
    assert w.kernel_rel_error == pytest.approx(plan.kernel_rel_error) and w.variance_ratio == plan.variance_ratio


def test_any_steps_and_the_callable_forms():
    """Irregular checkpoint steps, the target as a plain function, ``at`` chosen: the weights sum to 1, sit on the
    checkpoints from the last one at or before the departure to ``at``."""
    def target(t):
        return 0.1 if t < 50 else 0.1 * 0.9 ** (t - 49)
    w = answers.posthoc_weights([90, 12, 47, 55, 61, 75, 83], target, 1.0, lr=lambda t: 0.1, at=83)
    assert w.checkpoint_steps[0] == 47 and w.checkpoint_steps[-1] == 83 and w.at == 83
    assert sum(w.weights) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(steps=[0, 50, 100], at=70), "at 70: no checkpoint"),
    (dict(steps=[60, 80, 100]), "keep checkpoints from step"),
    (dict(steps=[0, 50, 100], h=0.0), "curvature"),
    (dict(steps=[], ), "at least one"),
    (dict(steps=[0, 50, 100], lr=[0.1] * 10), "table of at least 100"),
])
def test_posthoc_weights_bad_input(kw, match):
    args = dict(steps=[0, 50, 100], schedule=spec.Piecewise(0.1, boundaries=(50,), lrs=(0.05,)), h=1.0, lr=0.1)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        answers.posthoc_weights(args.pop("steps"), args.pop("schedule"), args.pop("h"), **args)


# ------------------------------------------------------------------------------------------ averaging state dicts

def _sd(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=g), "d": torch.randn(4, generator=g, dtype=torch.float64),
            "h": torch.randn(2, generator=g).half(), "n": torch.tensor(seed * 10)}


def test_two_state_dicts_by_hand():
    a, b = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, {"w": torch.tensor([5.0, -2.0]), "n": torch.tensor(7)}
    out = answers.average_state_dicts([a, b], [0.25, 0.75])
    assert torch.equal(out["w"], torch.tensor([4.0, -1.0])) and out["w"].dtype == torch.float32
    assert out["n"].item() == 7                                           # integer entries: the last state's
    out = answers.average_state_dicts([a, b], [1.0, 3.0], normalise=True)
    assert torch.equal(out["w"], torch.tensor([4.0, -1.0]))


def test_dtypes_paths_and_checkpoints(tmp_path):
    s0, s1, s2 = _sd(0), _sd(1), _sd(2)
    torch.save(s0, tmp_path / "plain.pt")
    ck = checkpoint.save(tmp_path / "run", 20, {"model": s1})
    out = answers.average_state_dicts([tmp_path / "plain.pt", str(ck), s2], [0.5, 0.3, -(0.5 + 0.3 - 1.0)])
    ws = (0.5, 0.3, 0.2)
    for k in ("w", "d", "h"):
        want = sum(w * s[k].double() for w, s in zip(ws, (s0, s1, s2)))
        assert out[k].dtype == s0[k].dtype
        assert torch.allclose(out[k].double(), want, rtol=1e-3 if k == "h" else 1e-6)
    assert out["d"].dtype == torch.float64 and torch.allclose(out["d"], sum(
        w * s["d"] for w, s in zip(ws, (s0, s1, s2))), rtol=1e-13)
    assert out["n"].item() == 20


@pytest.mark.parametrize("states, weights, kw, match", [
    ([], [], {}, "at least one"),
    ([{"w": torch.ones(2)}] * 2, [0.5, 0.6], {}, "sum to 1.1"),
    ([{"w": torch.ones(2)}] * 2, [0.5], {}, "one each"),
    ([{"w": torch.ones(2)}, {"v": torch.ones(2)}], [0.5, 0.5], {}, "other keys"),
    ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], [0.5, 0.5], {}, "shape"),
    ([{"w": torch.ones(2)}] * 2, [0.5, -0.5], {"normalise": True}, "sum to 0"),
    ([{"w": torch.ones(2)}], [1.0], {"bn_batches": [torch.ones(1)]}, "needs model"),
    ([{"opt": {"lr": 1}}], [1.0], {}, "no state dict"),
])
def test_bad_state_input_is_one_value_error(states, weights, kw, match):
    with pytest.raises(ValueError, match=match):
        answers.average_state_dicts(states, weights, **kw)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_bn_recompute_equals_torch_update_bn():
    """A conv net with BatchNorm: two trained-looking states (weights and running statistics perturbed), averaged
    0.4/0.6 with BN recomputed on four batches, equals loading the plain average and calling
    torch.optim.swa_utils.update_bn on the same batches."""
    torch.manual_seed(0)
    states = []
    for i in range(2):
        m = _net()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.normal_()
                    mod.running_var.uniform_(0.5, 2.0)
                    mod.num_batches_tracked.fill_(100 + i)
        states.append({k: v.clone() for k, v in m.state_dict().items()})
    batches = [(torch.randn(8, 1, 6, 6) + 0.5, torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    plain = answers.average_state_dicts(states, [0.4, 0.6])
    assert plain["1.num_batches_tracked"].item() == 101
    for k, v in plain.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.4 * states[0][k] + 0.6 * states[1][k], rtol=1e-6, atol=1e-7), k

    model = _net().train(False)
    got = answers.average_state_dicts(states, [0.4, 0.6], model=model, bn_batches=batches)
    ref = _net()
    ref.load_state_dict(plain)
    torch.optim.swa_utils.update_bn(batches, ref)
    want = ref.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert not torch.allclose(got["1.running_mean"], plain["1.running_mean"])   # the statistics were recomputed
    assert got["1.num_batches_tracked"].item() == 4 and model.training is False   # the mode is restored


def test_the_docs_example_runs(tmp_path, capsys):
    """docs/library.md's code block, on a tiny BatchNorm model trained 700 steps at the constant LR 0.05 (momentum
    0.9) with a checkpoint every 50 steps."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "library.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = [(torch.randn(16, 4), torch.randn(16, 1)) for _ in range(10)]
    paths = {}
    for step in range(701):
        if step % 50 == 0:
            paths[step] = tmp_path / f"step_{step}.pt"
            torch.save(model.state_dict(), paths[step])
        x, y = data[step % 10]
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    ns = {"optimizer": optimizer, "paths": paths, "model": model, "batches": data[:4]}
    exec(compile(code, "docs/library.md", "exec"), ns)
    assert ns["w"].checkpoint_steps == [600, 650, 700] and sum(ns["w"].weights) == pytest.approx(1.0)
    assert set(ns["state"]) == set(model.state_dict()) and ns["state"]["1.num_batches_tracked"].item() == 4
    gains = [r.gain for r in ns["rows"]]
    assert gains == sorted(gains, reverse=True) and "0.998" in capsys.readouterr().out
