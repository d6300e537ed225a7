"""theory.moments under schedules whose LR changes every step: both block kernels (theory/kernels.py) against the
plain per-step recursion (theory.moments.step_by_step, theory.md §2.3, §2.6, §8) to relative 1e-9."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from theory import kernels, moments as M, segments, spec

RTOL = 1e-9    # block kernels vs one step at a time, both exact float64 recursions
FIELDS = ("mean_x", "var_x", "mean_avg", "var_avg", "cov_x_avg")


def close(a, b, rtol=RTOL):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * (1e-300 + np.max(np.abs(y))), err_msg=f)


@st.composite
def schedules(draw):
    lr = draw(st.floats(0.02, 1.0))
    total = draw(st.integers(20, 120))
    start = draw(st.integers(0, total - 1))
    kind = draw(st.sampled_from(["cosine", "linear", "wsd", "step", "piecewise", "hyperbolic"]))
    if kind in ("cosine", "linear"):
        base = spec.make_schedule(kind, lr=lr, total=total, start=start, final_lr=lr * draw(st.floats(0.01, 1.0)))
    elif kind == "wsd":
        w = draw(st.integers(0, 10))
        base = spec.WSD(lr=lr, warmup=w, decay_start=w + draw(st.integers(0, 30)), decay=draw(st.integers(1, 60)),
                        final_lr=lr * 0.05, shape=draw(st.sampled_from(["linear", "sqrt"])))
    elif kind == "step":
        base = spec.Step(lr=lr, milestones=(start, start + 7), factor=draw(st.floats(0.2, 1.0)))
    elif kind == "piecewise":
        base = spec.Piecewise(lr=lr, boundaries=(start + 1, start + 4, start + 30), lrs=(lr / 2, lr / 3, lr / 5))
    else:
        base = spec.Hyperbolic(lr=lr, start=start, tau=draw(st.floats(0.5, 40.0)))
    warm = draw(st.integers(0, 25))
    return spec.Warmup(base, warm) if warm else base


from test_moments import averagings  # noqa: E402  (one strategy of every averaging spec for both files)


@pytest.fixture(params=["tree", "seq"])
def kernel(request, monkeypatch):
    monkeypatch.setattr(M, "KERNEL", request.param)
    monkeypatch.setattr(M, "SEQ_BLOCK", 5)           # several blocks per stretch, block ends inside events
    monkeypatch.setattr(M, "TREE_ELEMS", 21)         # several tree blocks too (21 // D steps each)
    return request.param


@given(h=st.lists(st.floats(1e-3, 1.5), min_size=1, max_size=3), sched=schedules(), avg=averagings,
       mu=st.sampled_from([0.0, 0.5, 0.9]), m0=st.one_of(st.just(0.0), st.floats(-2, 2)), v0=st.floats(0, 1),
       total=st.integers(1, 150), seed=st.integers(0, 2 ** 16))
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_varying_schedules_equal_step_by_step(kernel, h, sched, avg, mu, m0, v0, total, seed):
    model = spec.NQM(h=h, sigma2=1.3, m0=m0, v0=v0)
    opt = spec.SGD(sched, momentum=mu)
    steps = np.random.default_rng(seed).choice(total + 1, size=min(total + 1, 7), replace=False)
    close(M.moments(model, opt, avg, steps), M.step_by_step(model, opt, avg, steps))


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_many_directions_in_chunks_equal_step_by_step(kernel, monkeypatch, mu):
    # more directions than one engine call takes: the chunks must line up with the per-direction rates
    monkeypatch.setattr(M, "CHUNK_DIRECTIONS", 7)
    model = spec.NQM(h=np.logspace(-3, 0.2, 17), sigma2=np.linspace(0.5, 2, 17), m0=0.3, v0=0.1)
    opt = spec.SGD(spec.Warmup(spec.Cosine(lr=0.6, total=200, start=40, final_lr=0.01), 30), momentum=mu)
    for avg in (spec.EMA(0.97, start=100, every=3), spec.SWA(start=120, length=40), spec.TwoPoint(30)):
        steps = np.arange(0, 201, 25)
        close(M.moments(model, opt, avg, steps), M.step_by_step(model, opt, avg, steps))


def test_schedule_pieces_cover_the_run_and_reproduce_every_lr():
    sched = spec.Warmup(spec.WSD(lr=1.0, warmup=0, decay_start=500, decay=300, final_lr=0.1), 40)
    pieces = segments.schedule_phases(sched, np.array([1.0, 2.0]), 1000)
    t = 0
    for p in pieces:
        a, b = (p.start, p.stop) if isinstance(p, segments.Varying) else p[:2]
        alpha = p.alpha(a, b) if isinstance(p, segments.Varying) else np.broadcast_to(p[2], (b - a, 2))
        np.testing.assert_array_equal(alpha[:, 0], sched.lr_at(np.arange(a, b)))      # h = 1: α = λ
        np.testing.assert_array_equal(alpha[:, 1], 2 * sched.lr_at(np.arange(a, b)))
        assert a == t
        t = b
    assert t == 1000
    # by hand: the ramp λ(t+1)/40 reaches λ at t = 39; the decay λ + (final − λ)(t − 500)/300 still equals λ at
    # t = 500 and reaches final at t = 800: varying [0, 39), constant [39, 501), varying [501, 800), constant after
    assert [(p.start, p.stop) if isinstance(p, segments.Varying) else p[:2] for p in pieces] == \
        [(0, 39), (39, 501), (501, 800), (800, 1000)]


def test_lr_runs_across_scan_chunks(monkeypatch):
    monkeypatch.setattr(segments, "SCAN_CHUNK", 7)
    # a one-step warmup changes nothing but hides the breakpoints, so the schedule is scanned (7 steps at a time)
    base = spec.Piecewise(lr=1.0, boundaries=(5, 6, 30, 31, 32, 60), lrs=(0.5, 0.4, 0.3, 0.2, 0.1, 0.05))
    runs = segments.lr_runs(spec.Warmup(base, 1), 80, min_const=4)
    assert runs == [(0, 5, 1.0), (5, 6, None), (6, 30, 0.4), (30, 32, None), (32, 60, 0.1), (60, 80, 0.05)]
    # read from the breakpoints: every run constant, short ones too
    assert segments.lr_runs(base, 80, min_const=4) == [(0, 5, 1.0), (5, 6, 0.5), (6, 30, 0.4), (30, 31, 0.3),
                                                        (31, 32, 0.2), (32, 60, 0.1), (60, 80, 0.05)]


def test_memory_does_not_grow_with_steps(monkeypatch):
    # the engine holds one block of rates and one scanned chunk of the schedule at a time: 4x the steps, the same
    # peak of traced allocations (±20 %)
    import tracemalloc

    monkeypatch.setattr(segments, "SCAN_CHUNK", 1024)
    model = spec.NQM(h=np.logspace(-3, 0, 100))      # > TREE_MAX_D: the sequential kernel
    peaks = []
    for total in (8000, 32000):                     # output every 400 / 1600 steps > SEQ_SPAN
        opt = spec.SGD(spec.Cosine(lr=0.5, total=total))
        tracemalloc.start()
        M.moments(model, opt, spec.EMA(0.99, start=total // 2), np.linspace(0, total, 21).astype(np.int64))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0]


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_default_block_sizes_equal_step_by_step(mu):
    # the kernels as the CLI runs them: a few hundred stretches composed per call, output every 37 steps
    model = spec.NQM(h=[1.0, 0.01], sigma2=[1.0, 3.0], m0=[0.2, -1.0], v0=0.05)
    opt = spec.SGD(spec.Warmup(spec.Cosine(lr=0.4, total=1200, start=300, final_lr=0.0), 100), momentum=mu)
    steps = np.arange(0, 1201, 37)
    for avg in (spec.EMA(0.995, start=500), spec.SWA(start=800, every=2), spec.NPoint(3, 20)):
        close(M.moments(model, opt, avg, steps), M.step_by_step(model, opt, avg, steps))


@pytest.mark.parametrize("expanded_max", [0.0, 10.0])   # c_t formed and squared / c_t² expanded, everywhere
def test_separable_kernel_both_forms_of_c2_equal_step_by_step(monkeypatch, expanded_max):
    # the separable seq kernel carries the second moments divided by s = h²σ²; a slab with a σ² = 0 direction has
    # no such scale and goes through the element-wise form. Rates up to λh = 1.2 (c² ≈ 0 at h = 0.999 near peak
    # LR) with a large v0, where c² matters most, by both forms of c².
    monkeypatch.setattr(M, "KERNEL", "seq")
    monkeypatch.setattr(M, "SEQ_BLOCK", 5)
    monkeypatch.setattr(kernels, "EXPANDED_MAX_RATE", expanded_max)
    opt = spec.SGD(spec.Warmup(spec.Cosine(lr=1.0, total=300, final_lr=0.05), 20))
    h = np.array([1e-3, 0.3, 0.999, 1.2])
    for sigma2 in (np.array([1.0, 0.5, 2.0, 1.3]), np.array([1.0, 0.0, 2.0, 1.3])):
        model = spec.NQM(h=h, sigma2=sigma2, m0=0.4, v0=1e6)
        for avg in (spec.EMA(0.95, start=50, every=2), spec.SWA(start=100), spec.NoAverage()):
            steps = np.arange(0, 301, 30)
            close(M.moments(model, opt, avg, steps), M.step_by_step(model, opt, avg, steps))
