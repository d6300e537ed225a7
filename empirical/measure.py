"""Cheap probes on the live weights (theory.md §3.1, §3.2, §3.7, §4.2 E1-E3, E8; names: docs/run-series.md).

Every probe returns plain floats / numpy arrays and never prints or writes. Each uses BatchNorm in EVAL mode (running
statistics) — the project's choice for E1 (theory.md §4.2), kept for all probes so that the loss is a function of
the weights alone — and goes through ``torch.func.functional_call`` with a parameter dict, so the model is never
modified (its train/eval flags are restored on return). ``loss_fn(output, target)`` defaults to mean cross-entropy.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

# torch.func.jvp's first call registers its decompositions through torch.jit.script, which torch ≥ 2.9 flags as
# deprecated: torch's own internals, nothing a user can act on, so keep it off their terminal.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def _eval_mode(model: nn.Module):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, f in flags:
            m.training = f


def _state(model: nn.Module):
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def _loss_of(model, buffers, loss_fn: LossFn):
    """params -> mean loss on (x, y), via functional_call (no in-place change of ``model``)."""
    def f(params, x, y):
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)
    return f


def _dot(a: dict, b: dict) -> torch.Tensor:
    return sum((a[k].double() * b[k].double()).sum() for k in a)


def _hvp(f, params, v, *args):
    """H v with H the Hessian of f at params: forward-mode derivative of the gradient (one jvp of grad).

    Some ops lack forward-over-reverse support (torch 2.14: F.mse_loss raises "ZeroTensors are immutable"); then
    H v = ∇_θ ⟨∇f(θ), v⟩ by reverse-over-reverse, which costs about one more backward pass."""
    try:
        return jvp(lambda p: grad(f)(p, *args), (params,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        return grad(lambda p: sum((grad(f)(p, *args)[k] * v[k]).sum() for k in p))(params)


def _to(t, device):
    return t if device is None else t.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device=None, loss_fn: LossFn | None = None,
             ctx=None) -> tuple[float, float]:
    """(mean loss per example, accuracy) of ``model`` in eval mode over (inputs, targets) ``batches`` — the one
    evaluation function for the raw weights and every averaged variant (empirical.run, RunWriter, posthoc); the
    model's train/eval flags are restored. ``ctx``: the forward's autocast context (bf16 runs); ``loss_fn(logits,
    y)`` returns the mean loss (default cross-entropy). Sums stay on the device: one synchronisation per call."""
    total = correct = None
    n = 0
    with _eval_mode(model):
        for x, y in batches:
            x, y = _to(x, device), _to(y, device)
            with (ctx if ctx is not None else nullcontext()):
                logits = model(x)
            loss = (F.cross_entropy(logits.float(), y, reduction="sum") if loss_fn is None
                    else loss_fn(logits.float(), y) * len(y)).double()
            hit = (logits.argmax(1) == y).sum()
            total, correct = (loss, hit) if total is None else (total + loss, correct + hit)
            n += len(y)
    if total is None:
        return 0.0, 0.0
    return total.item() / n, correct.item() / n


def _joined(batches: Sequence, device) -> tuple[torch.Tensor, torch.Tensor, list[int]] | None:
    """The (inputs, targets) batches concatenated along the batch axis, with each batch's size; None if their
    trailing shapes differ. In eval mode a model treats every example on its own, so one forward of the concatenation
    gives each batch's outputs: fewer, larger kernel calls (the bank's K training + K held-out batches of 16 digits
    images went from 8 forwards to 1)."""
    xs, ys = [b[0] for b in batches], [b[1] for b in batches]
    if not xs or len({(x.shape[1:], x.dtype) for x in xs}) > 1 or len({(y.shape[1:], y.dtype) for y in ys}) > 1:
        return None
    return _to(torch.cat(xs), device), _to(torch.cat(ys), device), [len(x) for x in xs]


def batch_losses(model: nn.Module, batches: Iterable, *, device=None, loss_fn: LossFn | None = None) -> np.ndarray:
    """Mean loss of each batch (eval mode, no grad) -> float64 array [K] (E2, theory.md §3.2). Batches of one shape
    go through the model as one concatenated forward (``_joined``), each batch's loss taken on its own slice."""
    loss_fn = loss_fn or F.cross_entropy
    batches = list(batches)
    with _eval_mode(model), torch.no_grad():
        joined = _joined(batches, device)
        if joined is None:
            return np.asarray([float(loss_fn(model(_to(x, device)), _to(y, device)).double()) for x, y in batches],
                              dtype=np.float64)
        x, y, sizes = joined
        out = model(x)
        losses, a = [], 0
        for n in sizes:
            losses.append(loss_fn(out[a:a + n], y[a:a + n]).double())
            a += n
        return torch.stack(losses).cpu().numpy()


def probe_etas(lr: float, momentum: float, n: int = 25, lo: float = 1e-3, hi: float = 1e3) -> np.ndarray:
    """``n`` log-spaced probe LRs from lo to hi times λ_eff = λ/(1−μ) (theory.md §2.6, §4.2 E1); absolute LR units."""
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if not (math.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"need 0 < lo < hi < inf (multiples of lr/(1-momentum)), got lo={lo}, hi={hi}")
    return np.geomspace(lo, hi, int(n)) * (lr / (1.0 - momentum))


def quadratic_fit(eta, loss) -> tuple[np.ndarray, float]:
    """Least-squares c + bη + aη² through (η, loss) -> (array [c, b, a] in absolute η units, R²) (theory.md §3.1).

    η is rescaled by max|η| for conditioning (the grid spans 6 decades). R² = 1 − SS_res/SS_tot; a constant curve
    fitted exactly gives 1. Needs >= 3 finite points with distinct η, else ValueError."""
    eta, loss = np.asarray(eta, dtype=np.float64).ravel(), np.asarray(loss, dtype=np.float64).ravel()
    if eta.shape != loss.shape:
        raise ValueError(f"eta and loss must have the same length, got {eta.size} and {loss.size}")
    ok = np.isfinite(eta) & np.isfinite(loss)
    eta, loss = eta[ok], loss[ok]
    if np.unique(eta).size < 3:
        raise ValueError(f"a quadratic fit needs >= 3 finite points with distinct eta, got {np.unique(eta).size}")
    scale = float(np.max(np.abs(eta)))
    s = eta / scale
    coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(s), s, s * s], axis=1), loss, rcond=None)
    resid = loss - (coef[0] + coef[1] * s + coef[2] * s * s)
    ss_res, ss_tot = float(resid @ resid), float(((loss - loss.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else math.nan)
    return np.array([coef[0], coef[1] / scale, coef[2] / scale ** 2]), r2


def fit_range(eta: np.ndarray, loss: np.ndarray, loss0: float, max_ratio: float = 1.0,
              rtol: float = 1e-5) -> np.ndarray:
    """Boolean mask of the probe LRs used for the quadratic fit (``eta`` increasing).

    The NQM one-step curve is exactly quadratic in η (theory.md §3.1); a network's is quadratic only up to some η,
    beyond which the step overshoots (and at huge η the loss is inf, or dips again by chance). Kept: the contiguous
    run of η from the smallest one while loss <= top = loss0 + (max_ratio − 1)·|loss0|, stopping at the first η
    above it or not finite. max_ratio = 1 (default) keeps the descent region, ≈ (0, 2η*] for a parabola; math.inf
    keeps every point up to the first non-finite one. Before the curve has gone below loss0, points up to
    loss0 + rtol·|loss0| are also kept: at tiny η the change is below float rounding."""
    if not max_ratio > 0:
        raise ValueError(f"max_ratio must be > 0 (1 = descent region, inf = all finite points), got {max_ratio}")
    loss = np.asarray(loss, dtype=np.float64)
    top = math.inf if math.isinf(max_ratio) else loss0 + (max_ratio - 1.0) * abs(loss0)
    mask = np.zeros(loss.shape, dtype=bool)
    descended = False
    for i, v in enumerate(loss):
        if not np.isfinite(v) or not (v <= top or (not descended and v <= loss0 + rtol * abs(loss0))):
            break
        mask[i], descended = True, descended or v < loss0
    return mask


def _safe_fit(eta, loss):
    try:
        return quadratic_fit(eta, loss)
    except ValueError:  # fewer than 3 usable points
        return np.full(3, math.nan), math.nan


def one_step_probe(model: nn.Module, x, y, x_held, y_held, etas, *, loss_fn: LossFn | None = None,
                   fit_max_ratio: float = 1.0) -> dict:
    """One plain GD step θ' = θ − η∇ℓ_B(θ) on batch B = (x, y) for every η (no momentum, no weight decay, eval-mode
    BN; theory.md §3.1, §4.2 E1/E3), and the losses of B and of a held-out batch (x_held, y_held) after it.

    Returns loss_train [E], loss_heldout [E], loss0_train, loss0_heldout, grad_sq = ‖g_B‖², gHg = g_Bᵀ H_B g_B (one
    Hessian-vector product, jvp of grad; Taylor ℓ(η) ≈ ℓ0 − η‖g‖² + ½η² gᵀHg), and quadratic fits (c, b, a) with
    R² of both curves. The fit uses η = 0 (ℓ0) plus the grid η chosen by ``fit_range(..., fit_max_ratio)`` on the
    TRAINING curve; the held-out fit uses the same η so the two are comparable.
    """
    loss_fn = loss_fn or F.cross_entropy
    etas = np.asarray(etas, dtype=np.float64).ravel()
    if etas.size == 0 or not np.all(np.isfinite(etas)) or np.any(etas < 0):
        raise ValueError("etas must be a non-empty array of finite probe LRs >= 0")
    with _eval_mode(model):
        params, buffers = _state(model)
        f = _loss_of(model, buffers, loss_fn)
        g = grad(f)(params, x, y)
        hg = _hvp(f, params, g, x, y)
        joined = _joined([(x, y), (x_held, y_held)], None)

        def both(p):   # (loss on B, loss on the held-out batch) at parameters p: one forward when shapes allow
            if joined is None:
                return f(p, x, y).double(), f(p, x_held, y_held).double()
            out = functional_call(model, (p, buffers), (joined[0],))
            n = len(y)
            return loss_fn(out[:n], y).double(), loss_fn(out[n:], y_held).double()

        with torch.no_grad():
            rows = [torch.stack(both(params))]
            for eta in etas:
                rows.append(torch.stack(both({k: params[k] - float(eta) * g[k] for k in params})))
            rows = torch.stack(rows).cpu().numpy()      # one synchronisation for the whole grid
            (loss0, loss0_h), lt, lh = map(float, rows[0]), rows[1:, 0].copy(), rows[1:, 1].copy()
        grad_sq, ghg = float(_dot(g, g)), float(_dot(g, hg))
    mask = fit_range(etas, lt, loss0, fit_max_ratio)
    e_fit = np.concatenate([[0.0], etas[mask]])
    coef, r2 = _safe_fit(e_fit, np.concatenate([[loss0], lt[mask]]))
    coef_h, r2_h = _safe_fit(e_fit, np.concatenate([[loss0_h], lh[mask]]))
    return {"loss_train": lt, "loss_heldout": lh, "loss0_train": loss0, "loss0_heldout": loss0_h,
            "grad_sq": grad_sq, "gHg": ghg, "fit_coef": coef, "fit_r2": r2,
            "fit_coef_heldout": coef_h, "fit_r2_heldout": r2_h}


def _equal_join(batches: Sequence, device):
    """``_joined`` when every batch has the same size (then the mean loss over the concatenation is the mean of the
    batches' mean losses, each weighted equally), else None."""
    j = _joined(batches, device)
    return j if j is not None and len(set(j[2])) == 1 else None


def _mean_grad(f, params, batches: Sequence, device) -> dict:
    j = _equal_join(batches, device)
    if j is not None:            # one gradient of the concatenation (fewer, larger kernel calls)
        return grad(f)(params, j[0], j[1])
    acc = None
    for x, y in batches:
        gb = grad(f)(params, _to(x, device), _to(y, device))
        acc = gb if acc is None else {k: acc[k] + gb[k] for k in acc}
    return {k: v / len(batches) for k, v in acc.items()}


def grad_alignment(model: nn.Module, x, y, ref_batches, *, loss_fn: LossFn | None = None, device=None) -> float:
    """cos(g_B, ĝ): g_B the gradient of the mean loss on (x, y), ĝ the mean of the gradients of ``ref_batches``
    (each batch weighted equally) — the estimate of the full-batch gradient (theory.md §3.7, §4.2 E8)."""
    ref_batches = list(ref_batches)
    if not ref_batches:
        raise ValueError("grad_alignment needs at least one reference batch")
    with _eval_mode(model):
        params, buffers = _state(model)
        f = _loss_of(model, buffers, loss_fn or F.cross_entropy)
        g = grad(f)(params, _to(x, device), _to(y, device))
        gm = _mean_grad(f, params, ref_batches, device)
        num, den = _dot(g, gm), torch.sqrt(_dot(g, g) * _dot(gm, gm))
    return float(num / den) if den > 0 else math.nan


def top_curvature(model: nn.Module, batches, iters: int = 20, seed: int = 0, *, loss_fn: LossFn | None = None,
                  device=None) -> float:
    """Largest-magnitude Hessian eigenvalue of the mean loss over ``batches`` (sign kept), by ``iters`` steps of
    power iteration on Hessian-vector products (one jvp-of-grad per batch per step); returns the final Rayleigh
    quotient vᵀHv, ‖v‖ = 1, in 1/(LR units) (theory.md §3.1: h₀ ≈ 1/η*). Start vector: normal, torch seed ``seed``."""
    batches = [(_to(x, device), _to(y, device)) for x, y in batches]
    if not batches:
        raise ValueError("top_curvature needs at least one batch")
    j = _equal_join(batches, None)
    if j is not None:            # the mean loss of equal-size batches is that of their concatenation: one HVP per step
        batches = [(j[0], j[1])]
    if isinstance(iters, bool) or int(iters) != iters or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters}")
    gen = torch.Generator().manual_seed(int(seed))
    with _eval_mode(model):
        params, buffers = _state(model)
        f = _loss_of(model, buffers, loss_fn or F.cross_entropy)
        v = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for k, p in params.items()}
        lam = math.nan
        for _ in range(int(iters)):
            norm = torch.sqrt(_dot(v, v))
            v = {k: t / norm.to(t.dtype) for k, t in v.items()}
            hv = None
            for x, y in batches:
                h = _hvp(f, params, v, x, y)
                hv = h if hv is None else {k: hv[k] + h[k] for k in hv}
            hv = {k: t / len(batches) for k, t in hv.items()}
            lam = float(_dot(v, hv))
            v = hv
            if float(_dot(v, v)) == 0.0:
                break
    return lam
