"""--shift-augment: random integer translations of in-memory training images, a pure function of (seed, step)."""
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from empirical import sampler


def _ds(n=32, c=2, h=6, w=5):
    x = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w) + 1.0
    return TensorDataset(x, torch.arange(n))


def test_each_output_is_a_shifted_copy_with_filled_border():
    ds, pad = _ds(), 2
    fill = torch.tensor([-1.0, -2.0])
    rs = sampler.RandomShift(ds, pad, fill, seed=0)
    idx = torch.arange(32)
    out, y = rs.batch(idx, step=7)
    assert torch.equal(y, ds.tensors[1])
    seen = set()
    for k in range(32):
        x = ds.tensors[0][k]
        big = torch.cat([f.expand(1, 6 + 2 * pad, 5 + 2 * pad) for f in fill])
        big[:, pad:pad + 6, pad:pad + 5] = x
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[k], big[:, dy:dy + 6, dx:dx + 5])]
        assert len(hits) == 1            # a translation by (dy − pad, dx − pad) of this very image
        seen.add(hits[0])
    assert len(seen) > 5                 # offsets vary across the batch


def test_offsets_depend_on_step_only():
    rs = sampler.RandomShift(_ds(), 1, torch.zeros(2), seed=3)
    idx = torch.arange(16)
    a, _ = rs.batch(idx, step=5)
    b, _ = rs.batch(idx, step=5)
    c, _ = rs.batch(idx, step=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rejects_zero_pad():
    with pytest.raises(ValueError, match="pad"):
        sampler.RandomShift(_ds(), 0, torch.zeros(2), seed=0)


def test_run_with_shift_is_reproducible_and_recorded(tmp_path):
    from empirical import run
    from common.rundir import load_run
    args = ["smoke", "--steps", "12", "--eval-every", "6", "--shift-augment", "1"]
    run.main([*args, "--out", str(tmp_path / "a")])
    run.main([*args, "--out", str(tmp_path / "b")])
    ta, tb = load_run(tmp_path / "a").trajectory, load_run(tmp_path / "b").trajectory
    np.testing.assert_array_equal(ta["train/loss"], tb["train/loss"])
    cfg = load_run(tmp_path / "a").config["config"]
    assert cfg["shift_augment"] == 1 and cfg["data"]["augmentation"].startswith("random shift of up to 1 px")


def test_shift_refused_for_datasets_with_their_own_augmentation(tmp_path):
    from empirical import data as D, train
    bundle = D.load_data("smoke", seed=0)
    import dataclasses
    other = dataclasses.replace(bundle, train_eval=D.load_data("smoke", seed=1).train)
    from empirical.config import ConfigError
    with pytest.raises(ConfigError, match="own augmentation"):
        train.with_shift(other, 1, 0)
