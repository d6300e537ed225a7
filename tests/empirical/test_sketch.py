"""empirical/sketch.py: the CountSketch used for distances across runs (branch vs parent average)."""
import numpy as np
import torch

from empirical.sketch import CountSketch

SHAPES = [torch.Size([64, 3, 3, 3]), torch.Size([64]), torch.Size([10, 640])]


def _rand(gen):
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]


def test_linear_and_shared_between_instances():
    g = torch.Generator().manual_seed(0)
    a, b = _rand(g), _rand(g)
    s1, s2 = CountSketch(SHAPES, 256), CountSketch(SHAPES, 256)
    np.testing.assert_allclose(s1([x - y for x, y in zip(a, b)]), s1(a) - s2(b), atol=1e-9)
    np.testing.assert_allclose(s1([3 * x for x in a]), 3 * s2(a), rtol=1e-12, atol=1e-12)


def test_norm_estimate_unbiased_with_bounded_spread():
    """E‖Sx‖² = ‖x‖² and rel. s.d. of ‖Sx‖² ≤ √(2/d): over 400 random x the mean ratio is 1 within 4 s.e."""
    d = 128
    sk = CountSketch(SHAPES, d)
    g = torch.Generator().manual_seed(1)
    r = []
    for _ in range(400):
        x = _rand(g)
        r.append(np.sum(sk(x) ** 2) / sum(float((t.double() ** 2).sum()) for t in x))
    r = np.array(r)
    bound = np.sqrt(2 / d)
    assert abs(r.mean() - 1) < 4 * bound / np.sqrt(len(r))
    assert r.std() < 1.2 * bound


def test_sketch_distance_matches_exact_distance_in_a_run(tmp_path):
    from empirical import run
    from common.rundir import load_run
    assert run.main(["smoke", "--out", str(tmp_path / "r"), "--steps", "40", "--eval-every", "20"])
    t = load_run(tmp_path / "r").trajectory
    names = [k.split("/", 1)[1] for k in t.series if k.startswith("sketch/") and k not in ("sketch/step", "sketch/raw")]
    assert names
    for v in names:
        est = np.linalg.norm(t[f"sketch/{v}"] - t["sketch/raw"], axis=1)
        exact = t[f"dist/{v}"]
        ok = np.isfinite(exact) & (exact > 0)
        assert ok.any()
        # d = 1024: rel. s.d. of the norm ≤ 1/√(2d) ≈ 2.2 %; allow 5 s.d.
        np.testing.assert_allclose(est[ok], exact[ok], rtol=0.11)
