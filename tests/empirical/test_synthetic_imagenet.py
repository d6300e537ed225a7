"""synthetic-imagenet: ImageNet-shaped images generated on the device (data.SyntheticImages), its preset, and the CPU
smoke mode of scripts/gpu_check.py. Nothing here needs a GPU; the device paths run on the CPU with the same code."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical import config, presets, sampler, validation
from empirical import data as D
from empirical.models import build_model, count_parameters

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


def small(seed=0, split=0, n=200, k=10, side=32):
    return D.SyntheticImages(n, k, side, seed, split, device="cpu")


# ------------------------------------------------------------------------------------------------ the dataset

def test_bundle_has_imagenet_shapes_and_classes():
    b = D.load_data("synthetic-imagenet", seed=0, max_train=40, max_test=12)
    assert (b.num_classes, b.in_channels, b.image_size) == (1000, 3, 224)
    assert (len(b.train), len(b.test)) == (40, 12) and b.train_eval is b.train
    x, y = b.train.make_batch([0, 1, 39])
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 39]          # label = index mod 1000
    d = b.describe()
    assert json.loads(json.dumps(d)) == d and d["num_train"] == 40 and d["num_classes"] == 1000
    full = D.load_data("synthetic-imagenet")
    assert (len(full.train), len(full.test)) == (1_281_167, 50_000)     # ImageNet-1k's split sizes, no memory
    assert "synthetic-imagenet" in D.NAMES and set(config.DATASETS) == set(D.NAMES)


def test_same_seed_and_indices_give_identical_tensors():
    a, b = small(seed=3), small(seed=3)
    xa, ya = a.make_batch([5, 17, 199, 5])
    xb, yb = b.make_batch(np.array([5, 17, 199, 5]))
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(xa[0], xa[3])
    # a function of the index alone: not of the other indices in the batch, nor of how they are given
    x1, _ = a.make_batch(torch.tensor([17]))
    assert torch.equal(x1[0], xa[1])
    xi, yi = a[199]
    assert torch.equal(xi, xa[2]) and int(yi) == 199 % 10
    assert torch.equal(a.to("cpu").make_batch([5])[0][0], xa[0])


def test_seeds_and_splits_differ():
    x0, _ = small(seed=0).make_batch(range(8))
    x1, _ = small(seed=1).make_batch(range(8))
    xt, _ = small(seed=0, split=1).make_batch(range(8))
    assert not torch.equal(x0, x1) and not torch.equal(x0, xt)
    assert (x0 - x1).abs().mean() > 0.5 and (x0 - xt).abs().mean() > 0.5   # not a small perturbation
    assert len({tuple(r.tolist()) for r in x0.flatten(1)[:, :6]}) == 8       # images differ from each other


def test_pixel_statistics_and_learnable_labels():
    """pattern (unit variance) + noise (unit variance): mean 0, variance 2; the class is recovered from block means
    by a nearest-class-mean rule fitted on the train split and applied to the test split (same patterns)."""
    tr, te = small(n=400), small(split=1, n=100)
    x, y = tr.make_batch(range(400))
    assert abs(float(x.mean())) < 0.02 and abs(float(x.var()) - 2.0) < 0.05
    pool = lambda z: torch.nn.functional.avg_pool2d(z, 4).flatten(1)   # noqa: E731  8x8 blocks of 4x4 px
    means = torch.stack([pool(x[y == c]).mean(0) for c in range(10)])
    xt, yt = te.make_batch(range(100))
    pred = torch.cdist(pool(xt), means).argmin(1)
    assert (pred == yt).float().mean() > 0.95


def test_hash_matches_python_integers_without_overflow():
    """_hash32 on int64 tensors equals the same arithmetic on Python's unbounded integers (so no product
    overflowed), including the largest input 2^32 - 1."""
    def ref(v):
        v ^= v >> 16
        v = (v * 0x7FEB352D) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 0x045D9F3B) & 0xFFFFFFFF
        return v ^ (v >> 16)

    xs = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1]
    got = D._hash32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [ref(v) for v in xs] and all(0 <= g < 2 ** 32 for g in got)
    u = D._uniform_unit(D._hash32(torch.arange(100_000, dtype=torch.int64)))
    assert abs(float(u.mean())) < 0.02 and abs(float(u.var()) - 1.0) < 0.02 and u.abs().max() <= 3 ** 0.5


def test_bad_indices_and_sizes():
    ds = small(n=10)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        ds.make_batch([3, 10])
    with pytest.raises(IndexError):
        ds.make_batch([-1])
    with pytest.raises(ValueError, match="n must be"):
        D.SyntheticImages(0, 10, 32, 0)


def test_sampler_paths_generate_whole_batches():
    """Training batches (sampler.train_batches) and fixed batches (FixedBatches, the bank / BN / evaluation sets)
    come from make_batch in one call each, equal to it for the same indices."""
    ds = small(n=64)
    smp = sampler.EpochSampler(len(ds), 8, seed=2)
    calls = []
    orig = ds.make_batch
    ds.make_batch = lambda idx: (calls.append(len(idx)), orig(idx))[1]
    got = list(sampler.train_batches(ds, smp, 3, 6))
    assert [s for s, _, _ in got] == [3, 4, 5] and calls == [8, 8, 8]
    for step, x, y in got:
        ex, ey = orig(smp.indices(step))
        assert torch.equal(x, ex) and torch.equal(y, ey)
    chunks = [np.arange(0, 8), np.arange(8, 13)]
    fixed = sampler.FixedBatches(ds, chunks, torch.device("cpu"))
    assert torch.equal(fixed[1][0], orig(chunks[1])[0]) and torch.equal(fixed[0][1], orig(chunks[0])[1])


def test_preset_and_model_build():
    cfg = validation.validate(presets.PRESETS["synthetic-imagenet"])
    assert (cfg.dataset, cfg.arch, cfg.batch_size) == ("synthetic-imagenet", "resnet50", 256)
    assert cfg.bf16 and cfg.channels_last and cfg.steps <= 500
    assert cfg.ema_decays and cfg.swa_start is not None and cfg.two_point_gaps and cfg.n_points
    assert cfg.bank_every > 0 and cfg.probe_every > 0 and cfg.bank_size * cfg.batch_size <= cfg.max_test
    model = build_model(cfg.arch, 1000, 3, 224)
    assert count_parameters(model) == 25_557_032     # torchvision's ResNet-50 (1000 classes)


# --------------------------------------------------------------------------------------- end to end (slow)

TINY = ["--arch", "resnet8", "--batch-size", "8", "--no-channels-last", "--steps", "4", "--max-train", "64",
        "--max-test", "32", "--train-eval-size", "16", "--decay-start", "3", "--ema-start", "1", "--swa-start", "2",
        "--two-point-gaps", "2", "--n-point-gap", "1", "--eval-every", "2", "--bank-every", "2", "--bank-size", "2",
        "--bn-batches", "2", "--probe-every", "4", "--probe-etas", "3", "--align-every", "4", "--align-batches", "1",
        "--curv-every", "4", "--curv-batches", "1", "--curv-iters", "2"]


@pytest.mark.slow
def test_run_in_process_at_32px_records_every_average_and_the_bank(tmp_path, monkeypatch):
    from empirical import run

    monkeypatch.setitem(D.SYNTHETIC_IMAGENET, "image_size", 32)
    assert run.cli(["synthetic-imagenet", "--device", "cpu", "--out", str(tmp_path / "r"), *TINY]) == 0
    doc = gpu_check.check_run_dir(tmp_path / "r")
    assert doc["ok"], doc.get("error")
    assert doc["steps"] == 4 and all(doc["averages"].values()) and all(doc["series"].values())
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert cfg["data"]["name"] == "synthetic-imagenet" and cfg["data"]["image_size"] == 32


@pytest.mark.slow
def test_python_m_empirical_run_synthetic_imagenet_on_cpu(tmp_path):
    """The CLI at the dataset's real 224 px (a subprocess cannot shrink it): small net, batch and run."""
    argv = ["--arch", "resnet8", "--batch-size", "4", "--no-channels-last", "--steps", "2", "--max-train", "16",
            "--max-test", "8", "--train-eval-size", "8", "--decay-start", "1", "--ema-start", "1", "--swa-start",
            "1", "--two-point-gaps", "1", "--n-points", "2", "--n-point-gap", "1", "--eval-every", "2",
            "--bank-every", "2", "--bank-size", "2", "--bn-batches", "1", "--probe-every", "2", "--probe-etas", "3",
            "--align-every", "2", "--align-batches", "1", "--curv-every", "2", "--curv-batches", "1",
            "--curv-iters", "1"]
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "empirical.run", "synthetic-imagenet", "--device", "cpu",
                           "--out", str(out), *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 2


@pytest.mark.slow
def test_gpu_check_cpu_smoke_prints_the_ratio(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "throughput", "--out", str(tmp_path),
                           "--device", "cpu", "--image-size", "32", "--arch", "resnet8", "--batch-size", "8",
                           "--steps", "2", "--warmup", "2", "--light", "--max-test", "16"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = re.search(r"throughput ratio ours/bare = (\S+) ", proc.stdout)
    assert m, proc.stdout
    ratio = float(m.group(1))
    assert math.isfinite(ratio) and ratio > 0
    doc = json.loads((tmp_path / "throughput.json").read_text())
    assert doc["ok"] and set(doc["ours"]["extra_s"]) <= set(gpu_check.MEASUREMENTS)
    assert doc["ours"]["plain_steps"] >= 1 and len(doc["bare"]) == 2


def test_gpu_check_summary_reads_stage_files(tmp_path, capsys):
    """The summary from stage files alone (no torch): a passing throughput stage, a timed-out run stage."""
    gpu_check.write_json(tmp_path, "throughput", {
        "ok": True, "pass": True, "target": 0.9, "ratio_imagenet": 0.95, "ratio_steady": 0.97, "ratio_window": 0.5,
        "bare_img_s": 3000.0, "bare": [{"peak_gib": 20.0}], "ours": {"peak_gib": 24.5},
        "env": {"name": "GPU X", "torch": "2.11", "torchvision": "0.26"}})
    (tmp_path / "throughput.rc").write_text("0 95\n")
    gpu_check.write_json(tmp_path, "run", {"ok": False})
    (tmp_path / "run.rc").write_text("124 115\n")
    assert gpu_check.main(["summary", str(tmp_path)]) == 1
    text = (tmp_path / "summary.txt").read_text()
    assert text == capsys.readouterr().out
    assert "ratio 0.950 (target >= 0.90: PASS)" in text and "24.50 GiB" in text and "GPU X" in text
    assert "FAIL (b)+(d)" in text and "timed out" in text and text.rstrip().endswith("SOME CHECKS FAILED")
