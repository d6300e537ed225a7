"""The quadratic closure test (dataset and arch ``quadratic``): a task whose every batch loss is exactly the noisy
quadratic of docs/theory.md §2.1 (M1, with a shared diagonal H),

    ℓ_B(θ) = ½ (θ − θ_B)ᵀ H (θ − θ_B) + c_B,      θ_B = θ*(t) + ε_B,

trained by the same loop, averages and recordings as the ResNets (empirical/train.py), so that what compare/
recovers can be checked against the truth (:func:`truth`, written to config.json as ``config["truth"]``).

* The spectrum is a list of scales (h, noise, directions) (``--quad-spectrum``, parsed by validation.parse_spectrum):
  h the Hessian eigenvalue in 1/LR units, noise = Σ Var(ε_{B,k}) over the scale's directions in param² (the σ_k² of
  theory.md §2.0, summed). H is diagonal in the parameter basis, the scales' directions in the order given.
* An example is a point x_i = θ*(t_i) + z_i with z_{i,k} ~ N(0, B·noise/directions), independent, t_i the optimiser
  step that trains on it; the model's output on it is θ − x_i and its loss ½ Σ_k h_k (θ_k − x_{i,k})². The mean over
  a batch of B examples is ℓ_B above with θ_B = x̄, so Var ε_{B,k} = noise/directions, and c_B = ½ mean_i
  (x_i − x̄)ᵀH(x_i − x̄), a constant of the batch (theory.md §2.1 takes c_B = 0; any θ-free constant changes no
  gradient and no dip).
* The training set holds steps × B examples and the sampler's one epoch uses each once: independent batch minima.
* Every test example is θ*_ref, so the test loss is ½ (θ − θ*_ref)ᵀH(θ − θ*_ref) exactly: the population excess loss
  of theory.md §2.3 / §3.1, floor 0.
* ``--drift RATE``: the training distribution moves, θ*(t) = θ*_ref + RATE·(t − t_ref)·u, u a unit vector spread
  equally over the directions of the flattest scale (RATE/√n per direction), t_ref the middle of the window compare/
  calibrates on (:func:`drift_reference`). The drift is in the data (each example's minimum is where θ* was when it
  is trained on; a bank batch keeps its own), while the test loss stays one fixed function of the weights — what the
  identity of theory.md §3.8a needs, and what a real run's test loss is. Over the window the iterate trails θ*(t) at
  a constant lag, (θ_t − θ_{t−τ}) gains RATE·τ·u, and D(τ) gains h·RATE²·τ²: the c·τ² term.
* θ*_ref = 0; θ_0 sits START_SDS stationary standard deviations (heavy ball at the peak LR, theory.md §2.6) off
  θ*(0) in every direction, with random signs: a visible descent of the slow directions before the stationary window.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from empirical.config import DECAY_SCHEDULES, RunConfig
from empirical.validation import parse_spectrum
from empirical.bundle import DataBundle

START_SDS = 3.0     # |θ_0 − θ*_0| per direction, in stationary standard deviations
N_TEST = 256        # test examples when --max-test is not given (all equal to θ*_0: any number gives one loss)
_TRAIN_STREAM, _START_STREAM = 100, 101   # numpy default_rng([seed, stream]) streams of this module


def directions(spectrum: str) -> tuple[np.ndarray, np.ndarray]:
    """(h [D] in 1/LR units, batch-minimum variance σ² [D] in param²) per parameter direction, scales in order."""
    scales = parse_spectrum(spectrum)
    h = np.concatenate([np.full(n, hk) for hk, _, n in scales])
    var = np.concatenate([np.full(n, noise / n) for _, noise, n in scales])
    return h, var


def _slow(spectrum: str) -> tuple[int, float, int]:
    """(first direction, h, number of directions) of the flattest scale (the first one on a tie): where the minimum
    drifts."""
    scales = parse_spectrum(spectrum)
    j = min(range(len(scales)), key=lambda i: scales[i][0])
    return sum(n for _, _, n in scales[:j]), scales[j][0], scales[j][2]


def drift_vector(cfg: RunConfig) -> np.ndarray:
    """dθ*/dt [D], parameter units per step: cfg.drift/√n on each of the n directions of the flattest scale."""
    first, _, n = _slow(cfg.quad_spectrum)
    v = np.zeros(len(directions(cfg.quad_spectrum)[0]))
    v[first:first + n] = cfg.drift / math.sqrt(n)
    return v


def truth(cfg: RunConfig) -> dict:
    """What compare/ must recover from a run of ``cfg`` (config.json's ``config["truth"]``): per scale h (1/LR),
    noise (param²), directions and relax_steps = (1 − μ)/(λh) (the heavy-ball mean's time constant at the peak LR,
    steps); the drift's speed (parameter units per step), the h it moves along and D_coefficient = h·rate² (loss
    per step², the c of D(τ) ⊃ c·τ², theory.md §3.8a); the test loss's floor; the number of parameters."""
    _, h_slow, _ = _slow(cfg.quad_spectrum)
    scales = [{"h": h, "noise": noise, "directions": n, "relax_steps": (1 - cfg.momentum) / (cfg.peak_lr * h)}
              for h, noise, n in parse_spectrum(cfg.quad_spectrum)]
    return {"scales": scales, "drift": {"rate": cfg.drift, "h": h_slow, "D_coefficient": h_slow * cfg.drift ** 2},
            "floor": 0.0, "dimension": sum(s["directions"] for s in scales)}


def drift_reference(cfg: RunConfig) -> int:
    """t_ref (steps): the middle of the window compare/ calibrates on, the last half of the constant-LR phase
    (compare.calibrate.STATIONARY_FROM = 0.5): 3/4 of the decay start, or of the run for a schedule without one."""
    end = cfg.decay_start if cfg.schedule in DECAY_SCHEDULES and cfg.decay_start > 0 else cfg.steps
    return int(round(0.75 * end))


def step_of_example(cfg: RunConfig) -> np.ndarray:
    """[N] the optimiser step that trains on each training example: the run's sampler (same seed, one epoch) puts
    example perm[p] in the batch of step p // B."""
    from empirical.sampler import EpochSampler

    n = cfg.steps * cfg.batch_size
    perm = EpochSampler(n, cfg.batch_size, cfg.seed).permutation(0).numpy()
    steps = np.empty(n, np.int64)
    steps[perm] = np.arange(n) // cfg.batch_size
    return steps


def make_data(cfg: RunConfig) -> DataBundle:
    """Training set of steps × batch_size examples θ*(t_i) + z_i (float32, dummy int64 labels 0), z drawn from
    numpy's default_rng([seed, 100]) (the same seed gives the same data); test set of max_test (default N_TEST)
    copies of θ*_ref = 0. ``in_channels`` carries the dimension D (the model's only size)."""
    _, var = directions(cfg.quad_spectrum)
    n_train, n_test, dim = cfg.steps * cfg.batch_size, cfg.max_test or N_TEST, len(var)
    sd = np.sqrt(cfg.batch_size * var).astype(np.float32)     # per-example s.d.: B examples per batch minimum
    x = np.random.default_rng([cfg.seed, _TRAIN_STREAM]).standard_normal((n_train, dim), dtype=np.float32)
    x *= sd
    if cfg.drift:
        t = (step_of_example(cfg) - drift_reference(cfg)).astype(np.float64)
        x += (t[:, None] * drift_vector(cfg)[None, :]).astype(np.float32)
    zeros = lambda n: torch.zeros(n, dtype=torch.int64)  # noqa: E731
    train = TensorDataset(torch.from_numpy(x), zeros(n_train))
    test = TensorDataset(torch.zeros(n_test, dim), zeros(n_test))
    details = {"source": f"synthetic quadratic (seed {cfg.seed}): spectrum {cfg.quad_spectrum} (h:noise:directions), "
                         f"drift {cfg.drift:g} per step around step {drift_reference(cfg)}; examples θ*(t) + "
                         f"N(0, B·noise/directions), test examples θ*_ref",
               "augmentation": "none", "data_seed": cfg.seed}
    return DataBundle(train, train, test, 1, dim, 1, "quadratic", details)


def start_point(cfg: RunConfig) -> np.ndarray:
    """θ_0 [D]: θ*(0) + START_SDS·√v∞ per direction with random signs (default_rng([seed, 101])), v∞ the heavy-ball
    stationary variance at the peak LR (theory.md §2.6; the batch variance itself where that LR is unstable)."""
    from theory.stationary import iterate_variance

    h, var = directions(cfg.quad_spectrum)
    v = iterate_variance(cfg.peak_lr * h, var, cfg.momentum)
    v = np.where(np.isfinite(v), v, var)
    signs = np.random.default_rng([cfg.seed, _START_STREAM]).choice([-1.0, 1.0], size=len(h))
    return START_SDS * np.sqrt(v) * signs - drift_reference(cfg) * drift_vector(cfg)


class QuadraticModel(nn.Module):
    """One parameter θ ∈ R^D (float32); ``forward(x)`` returns θ − x, shape [B, D]: the displacement of θ from
    each example's minimum, which :class:`QuadraticLoss` weighs by H. Starts at ``theta0`` (default 0 = θ*_0)."""

    def __init__(self, dim: int, theta0=None):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim) if theta0 is None else torch.as_tensor(theta0).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta - x


class QuadraticLoss:
    """``loss(out, y)`` = mean over rows of ½ Σ_k h_k out_k² (``y`` unused): out = θ − x_i from QuadraticModel.
    Computed and returned in float64: a training batch's loss carries c_B ≈ ½ tr(H·Σ_example) (≈ 320 on the preset),
    and float32 (ε ≈ 6e-8 relative) would blur the dips after use and one-step gains (~1e-2 and below) that the
    probes record on top of it."""

    def __init__(self, h):
        self.h = torch.as_tensor(np.asarray(h), dtype=torch.float64)

    def __call__(self, out: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r = out.double()
        return 0.5 * (r * r * self.h.to(out.device)).sum(1).mean()


def loss_of(cfg: RunConfig) -> QuadraticLoss:
    return QuadraticLoss(directions(cfg.quad_spectrum)[0])
