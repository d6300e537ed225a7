"""Monte Carlo reference: literally sample the noisy-quadratic model and the averages (theory.md §2.2, §2.6, §3.1,
§3.3–3.5). Slow and obviously correct; the exact code (theory/moments.py, theory/stationary.py) is tested against it.

Per direction (deviation x = u_kᵀ(θ − θ*), parameter units), with ε_t ~ N(0, σ²) drawn independently per step,
direction and chain:

    b_t = μ b_{t−1} + h (x_t − ε_t),   x_{t+1} = x_t − λ_t b_t,   b_{−1} = 0,   x_0 ~ N(m0, v0)

i.e. torch.optim.SGD's momentum buffer written out (theory/spec.py's module docstring). At constant LR this is the
heavy-ball recursion x_{t+1} = (1 + μ − α) x_t − μ x_{t−1} + α ε_t with α = λh. Averages follow the spec.py docstrings: EMA reset to the
iterate at ``start`` then y ← g y + (1 − g) θ every ``every`` steps (g = γ^every); SWA a running sum of θ_start,
θ_{start+every}, … (at most ``length`` of them); two-point / N-point from a ring buffer of past iterates; before an
average exists it equals the iterate. Steps loop in Python, chains and directions are numpy-vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import EMA, NQM, SGD, SWA, Averaging, NoAverage, NPoint, TwoPoint

__all__ = ["MCResult", "simulate", "ProbeMC", "probe_gains", "mean_se", "var_se"]


def mean_se(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and its standard error sd/√n over ``axis``."""
    n = x.shape[axis]
    return x.mean(axis=axis), x.std(axis=axis, ddof=1) / np.sqrt(n)


def var_se(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased sample variance and its standard error √((m₄ − m₂²(n−3)/(n−1))/n), m_k central sample moments."""
    n = x.shape[axis]
    d = x - x.mean(axis=axis, keepdims=True)
    m2, m4 = (d * d).mean(axis=axis), (d ** 4).mean(axis=axis)
    return m2 * n / (n - 1), np.sqrt(np.maximum(m4 - m2 * m2 * (n - 3) / (n - 1), 0.0) / n)


@dataclass(frozen=True)
class MCResult:
    """Sample moments over chains at the requested steps; arrays are [len(step), D]. ``se_*`` standard errors."""

    step: np.ndarray
    n_chains: int
    mean_x: np.ndarray
    var_x: np.ndarray
    mean_avg: np.ndarray
    var_avg: np.ndarray
    se_mean_x: np.ndarray
    se_var_x: np.ndarray
    se_mean_avg: np.ndarray
    se_var_avg: np.ndarray
    x_last: np.ndarray        # samples of x at the last requested step, [n_chains, D] (parameter units)
    avg_last: np.ndarray      # samples of the average at the last requested step, [n_chains, D]


class _Averager:
    """The average of the iterate per its spec (theory/spec.py); ``value(t, x)`` after update t has been made."""

    def __init__(self, avg: Averaging, shape: tuple[int, int]):
        if not isinstance(avg, (NoAverage, EMA, SWA, TwoPoint, NPoint)):
            raise ValueError(f"avg must be NoAverage, EMA, SWA, TwoPoint or NPoint; got {type(avg).__name__}")
        self.avg, self.y, self.count = avg, None, 0
        npts, gap = (2, avg.gap) if isinstance(avg, TwoPoint) else (avg.n, avg.gap) if isinstance(avg, NPoint) \
            else (1, 0)
        self.npts, self.gap = npts, gap
        self.ring = np.zeros((max(1, (npts - 1) * gap + 1),) + shape) if npts > 1 else None

    def value(self, t: int, x: np.ndarray) -> np.ndarray:
        avg = self.avg
        if isinstance(avg, (EMA, SWA)):
            if t >= avg.start and (t - avg.start) % avg.every == 0:
                if t == avg.start:
                    self.y, self.count = x.copy(), 1
                elif isinstance(avg, EMA):
                    g = avg.decay ** avg.every
                    self.y = g * self.y + (1.0 - g) * x
                elif avg.length is None or self.count < avg.length:
                    self.y, self.count = self.y + x, self.count + 1
            if t < avg.start:
                return x
            return self.y if isinstance(avg, EMA) else self.y / self.count
        if self.ring is None:
            return x
        size = self.ring.shape[0]
        self.ring[t % size] = x                                   # ring[(t − j) % size] holds x_{t−j}
        if t < (self.npts - 1) * self.gap:
            return x
        return sum(self.ring[(t - i * self.gap) % size] for i in range(self.npts)) / self.npts


def simulate(model: NQM, opt: SGD, avg: Averaging, steps, n_chains: int, rng: np.random.Generator) -> MCResult:
    """Sample ``n_chains`` independent runs and record x_t and its average after t updates for t in ``steps``.

    Example: ``simulate(NQM(h=[1.]), SGD(Constant(0.1)), EMA(0.99), [0, 500], 10_000, np.random.default_rng(0))``.
    """
    steps = np.atleast_1d(np.asarray(steps))
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer) or np.any(steps < 0):
        raise ValueError("steps must be a non-empty 1-D array of integers >= 0")
    if int(n_chains) != n_chains or n_chains < 2:
        raise ValueError(f"n_chains must be an integer >= 2, got {n_chains}")
    n_chains, d, mu = int(n_chains), model.dim, float(opt.momentum)
    total = int(steps.max())
    lrs = opt.schedule.lr_at(np.arange(total)) if total else np.zeros(0)
    sd = np.sqrt(model.sigma2)
    x = model.m0 + np.sqrt(model.v0) * rng.standard_normal((n_chains, d))
    # torch.optim.SGD literally: buf ← μ·buf + g (buf = g at the first step, i.e. buf_{−1} = 0), θ ← θ − λ_t·buf.
    # Per direction g = h(x − ε). With a changing LR this differs from the textbook heavy ball
    # x_{t+1} = x_t − α_t(x_t − ε) + μ(x_t − x_{t−1}) by the factor λ_t/λ_{t−1} on the momentum term.
    buf = np.zeros_like(x)
    averager = _Averager(avg, (n_chains, d))
    want = {int(s) for s in steps}
    rec_x, rec_a = {}, {}
    for t in range(total + 1):
        if t > 0:
            eps = sd * rng.standard_normal((n_chains, d))         # update t−1 uses λ_{t−1}
            buf = mu * buf + model.h * (x - eps)
            x = x - lrs[t - 1] * buf
        z = averager.value(t, x)
        if t in want:
            rec_x[t], rec_a[t] = x.copy(), np.array(z, copy=True)
    stats = {key: np.empty((steps.size, d)) for key in ("mx", "vx", "ma", "va", "smx", "svx", "sma", "sva")}
    for i, s in enumerate(steps):
        s = int(s)
        stats["mx"][i], stats["smx"][i] = mean_se(rec_x[s])
        stats["vx"][i], stats["svx"][i] = var_se(rec_x[s])
        stats["ma"][i], stats["sma"][i] = mean_se(rec_a[s])
        stats["va"][i], stats["sva"][i] = var_se(rec_a[s])
    last = int(steps[-1])
    return MCResult(step=steps.astype(np.int64), n_chains=n_chains, mean_x=stats["mx"], var_x=stats["vx"],
                    mean_avg=stats["ma"], var_avg=stats["va"], se_mean_x=stats["smx"], se_var_x=stats["svx"],
                    se_mean_avg=stats["sma"], se_var_avg=stats["sva"], x_last=rec_x[last], avg_last=rec_a[last])


@dataclass(frozen=True)
class ProbeMC:
    """Sampled one-step probe gains (theory.md §3.1), summed over directions; arrays over the η grid."""

    eta: np.ndarray
    batch_gain: np.ndarray        # E[ℓ_B(θ) − ℓ_B(θ − η g_B)], loss units
    heldout_gain: np.ndarray      # E[ℓ_B′(θ) − ℓ_B′(θ − η g_B)], B′ a fresh independent batch
    se_batch_gain: np.ndarray
    se_heldout_gain: np.ndarray


def probe_gains(model: NQM, x: np.ndarray, eta, rng: np.random.Generator) -> ProbeMC:
    """For sampled states x [n, D]: draw a probe batch B and a held-out batch B′ (offsets ~ N(0, σ²)), take one
    plain GD step θ − η g_B with g_B = h (x − ε_B), and average the loss decreases ℓ = ½ Σ h (x − ε)² (§2.1, c_B = 0).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != model.dim or x.shape[0] < 2:
        raise ValueError(f"x must be samples of shape [n >= 2, {model.dim}], got {x.shape}")
    eta = np.atleast_1d(np.asarray(eta, dtype=float))
    sd, h = np.sqrt(model.sigma2), model.h
    eb = sd * rng.standard_normal(x.shape)                        # probe batch offsets ε_B
    eh = sd * rng.standard_normal(x.shape)                        # held-out batch offsets ε_B′
    loss = lambda xx, e: 0.5 * np.sum(h * (xx - e) ** 2, axis=-1)   # noqa: E731 - batch loss, loss units
    out = {key: np.empty(eta.size) for key in ("b", "h", "sb", "sh")}
    for i, e in enumerate(eta):
        x_new = x - e * h * (x - eb)
        out["b"][i], out["sb"][i] = mean_se(loss(x, eb) - loss(x_new, eb))
        out["h"][i], out["sh"][i] = mean_se(loss(x, eh) - loss(x_new, eh))
    return ProbeMC(eta=eta, batch_gain=out["b"], heldout_gain=out["h"], se_batch_gain=out["sb"],
                   se_heldout_gain=out["sh"])
