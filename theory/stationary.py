"""Stationary variances at a constant LR, and the forward map "averaging → equivalent constant rate".

Everything is per direction in the dimensionless rate α = λh and vectorised: array arguments broadcast. With
momentum μ = 0 the closed forms of theory.md §8 are used; with μ > 0 the stationary state of the heavy-ball
recursion (theory.md §2.6) is computed from its small discrete Lyapunov equation (EMA) or from the exact
autocovariance of the AR(2) iterate (SWA, two-point, N-point), batched over directions.

Where α ≥ 2(1+μ) the iterate has no stationary distribution: variances are ``np.inf``.
"""

from __future__ import annotations

import functools

import numpy as np

from .moments import MapPowers, compose_maps, heavy_ball_step_map, identity_map, sandwich_product
from .spec import EMA, SGD, SWA, Averaging, Constant, NoAverage, NPoint, TwoPoint, check_ema_decay

__all__ = ["max_stable_alpha", "iterate_variance", "ema_variance", "swa_variance", "two_point_variance",
           "n_point_variance", "averaged_variance", "equivalent_alpha", "equivalent_alpha_approx",
           "harmonic_equivalent_lr", "harmonic_curvature", "spectrum_raw_excess", "spectrum_averaged_excess",
           "spectrum_equivalent_lr", "spectrum_cooldown_tau", "swa_cooldown_curvature", "ema_branch_curvature",
           "swa_branch_curvature"]


def max_stable_alpha(momentum: float = 0.0) -> float:
    """Heavy-ball stability bound 2(1+μ) on α = λh (theory.md §2.2, §2.6). Example: ``max_stable_alpha(0.9)`` → 3.8.

    The bound is the optimiser spec's (:meth:`theory.spec.SGD.max_stable_alpha`, its one definition); it does not
    depend on the schedule, so any schedule stands in for asking about a momentum alone.
    """
    _check_mu(momentum)
    return _edge(float(momentum))


@functools.lru_cache(maxsize=64)
def _edge(momentum: float) -> float:
    # cached: every variance call checks its rates against the edge, and building the spec takes microseconds
    return SGD(Constant(1.0), momentum).max_stable_alpha()


def _check_mu(mu: float) -> None:
    if not (np.isfinite(mu) and 0 <= mu < 1):
        raise ValueError(f"momentum must be in [0, 1), got {mu}")


def _prep(alpha, sigma2, mu):
    _check_mu(mu)
    alpha, sigma2 = np.broadcast_arrays(np.asarray(alpha, dtype=float), np.asarray(sigma2, dtype=float))
    if np.any(~np.isfinite(alpha)) or np.any(alpha < 0):
        raise ValueError("alpha = λh must be finite and >= 0")
    if np.any(~np.isfinite(sigma2)) or np.any(sigma2 < 0):
        raise ValueError("sigma2 must be finite and >= 0")
    return alpha, sigma2, alpha >= max_stable_alpha(mu)


def _int(name: str, v, lo: int) -> int:
    if int(v) != v or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    return int(v)


def iterate_variance(alpha, sigma2=1.0, momentum: float = 0.0) -> np.ndarray:
    """v∞ = (1+μ)ασ² / ((1−μ)(2(1+μ) − α)); μ = 0: ασ²/(2−α) (theory.md §2.4, §2.6). inf where unstable.

    Example: ``iterate_variance(0.05)`` → 0.025641.
    """
    alpha, sigma2, bad = _prep(alpha, sigma2, momentum)
    mu = momentum
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (1 + mu) * alpha * sigma2 / ((1 - mu) * (2 * (1 + mu) - alpha))
    return np.where(bad, np.inf, v)


def _acf(alpha: np.ndarray, mu: float, lag: int) -> np.ndarray:
    """Stationary autocorrelation Cov(x_t, x_{t−lag})/v∞ of the heavy-ball iterate (flat α, stable entries)."""
    if mu == 0:
        return (1.0 - alpha) ** lag
    phi1 = 1.0 + mu - alpha
    rho1 = phi1 / (1.0 + mu)                                      # Yule-Walker for the AR(2) (φ₁, φ₂ = −μ)
    m = np.zeros(alpha.shape + (2, 2))
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0] = phi1, -mu, 1.0
    if lag == 0:
        return np.ones_like(alpha)
    p = np.linalg.matrix_power(m, lag)                            # (ρ_l, ρ_{l−1}) = M^l (ρ_0, ρ_{−1}) = M^l (1, ρ₁)
    return p[..., 0, 0] + p[..., 0, 1] * rho1


def _f_mean(n: int, q: np.ndarray) -> np.ndarray:
    """f = Σ_{d,e<n} q^{|d−e|} = n² Var(mean of n points)/v∞ for correlation q^{lag}, without cancellation.

    For 0 < q < 1 with n·s small (q = e^{−s}) the closed form n(1+q)/(1−q) − 2q(1−qⁿ)/(1−q)² loses
    ~1/(ns)² digits, so there the series n² − sM₁ + s²M₂/2 − s³M₃/6 (M_k = Σ|d−e|^k, exact integers) is used.
    """
    q = np.asarray(q, dtype=float)
    out = np.empty_like(q)
    pos = q > 0
    s = np.where(pos, -np.log(np.where(pos, q, 1.0)), np.inf)
    small = pos & (n * s < 5e-3)
    m1, m2 = (n ** 3 - n) / 3.0, n * n * (n * n - 1) / 6.0
    m3 = n * (n - 1) * (n + 1) * (3 * n * n - 2) / 30.0
    ss = s[small]
    out[small] = n * n - ss * m1 + ss ** 2 * m2 / 2 - ss ** 3 * m3 / 6
    big = ~small
    qb = q[big]
    one_q = np.where(qb > 0, -np.expm1(-s[big]), 1.0 - qb)
    one_qn = np.where(qb > 0, -np.expm1(-n * s[big]), 1.0 - qb ** n)
    out[big] = n * (1 + qb) / one_q - 2 * qb * one_qn / one_q ** 2
    return out


def ema_variance(alpha, decay: float, sigma2=1.0, momentum: float = 0.0, every: int = 1) -> np.ndarray:
    """Stationary Var of the EMA (decay γ per step, updated every c steps with γ^c) of the iterate.

    μ = 0 (theory.md §3.3, §8): Var/v∞ = (1−g)(1+qg)/((1+g)(1−qg)), g = γ^c, q = a^c, a = 1 − α.
    μ > 0: P = B P Bᵀ + G_B for the block map B (c heavy-ball steps, then the EMA update) of (x, x_prev, y).
    Example: ``ema_variance(0.05, 0.995)`` → 2.283252e-3.
    """
    decay = check_ema_decay(decay)
    c = _int("every", every, 1)
    alpha, sigma2, bad = _prep(alpha, sigma2, momentum)
    v = iterate_variance(np.where(bad, 0.0, alpha), sigma2, momentum)
    if momentum == 0:
        a = 1.0 - alpha
        with np.errstate(divide="ignore", invalid="ignore"):
            if c == 1:
                one_qg = alpha + (1 - decay) - alpha * (1 - decay)   # 1 − aγ without cancellation
            else:
                log_qg = np.log1p(-np.minimum(alpha, 1.0)) + np.log(decay)
                one_qg = np.where((a > 0) & (decay > 0), -np.expm1(c * log_qg), 1.0 - (a * decay) ** c)
            g = decay ** c
            one_g = -np.expm1(c * np.log(decay)) if decay > 0 else 1.0
            ratio = one_g * (1 + a ** c * g) / ((1 + g) * one_qg)
        out = np.where(alpha == 0, 0.0, v * ratio)
    else:
        out = _ema_lyapunov(alpha.ravel(), decay, momentum, c, sigma2.ravel()).reshape(alpha.shape)
    return np.where(bad, np.inf, out)


def _ema_lyapunov(alpha, decay, mu, c, sigma2):
    """Solve (I − B⊗B) vec P = vec G_B for the (x, x_prev, y) block map; return P_yy (flat, stable α)."""
    d = alpha.size
    steps = MapPowers(heavy_ball_step_map(alpha, mu, sigma2, 3))(c)
    e, zero = identity_map(3, d)
    g = decay ** c
    e[2, 2], e[2, 0] = g, 1.0 - g
    b, gb = compose_maps((e, zero), steps)
    bt = np.moveaxis(b, 2, 0)                                     # (D, 3, 3)
    kron = np.einsum("dij,dkl->dikjl", bt, bt).reshape(d, 9, 9)
    rhs = np.moveaxis(gb, 2, 0).reshape(d, 9)
    with np.errstate(divide="ignore", invalid="ignore"):
        lhs = np.eye(9) - kron + np.where(alpha == 0, 1.0, 0.0)[:, None, None] * np.eye(9)   # α = 0: singular
        p = np.linalg.solve(lhs, rhs[..., None])
    return np.where(alpha == 0, 0.0, p[:, 8, 0])


def _mean_of_points(alpha, n: int, c: int, sigma2, mu):
    """Var of the mean of n stationary iterates c steps apart (SWA with every=c; N-point with gap=c)."""
    n = _int("number of averaged points", n, 1)
    c = _int("spacing", c, 0)
    alpha, sigma2, bad = _prep(alpha, sigma2, mu)
    safe = np.where(bad, 0.0, alpha)
    v = iterate_variance(safe, sigma2, mu)
    if n == 1 or c == 0:
        return np.where(bad, np.inf, v)
    if mu == 0:
        ratio = _f_mean(n, (1.0 - safe) ** c) / n ** 2
    else:
        ratio = _mean_points_numeric(safe.ravel(), n, c, mu).reshape(safe.shape)
    return np.where(bad, np.inf, np.where(safe == 0, 0.0, v * ratio))


def _mean_points_numeric(alpha, n, c, mu):
    """Var(S/n)/v∞ for S the sum of n stationary iterates c steps apart: the block map of (x, x_prev, S)
    (c heavy-ball steps with σ² = 1, then S ← S + x) is applied n−1 times by binary powering, starting from the
    stationary (x, x_prev) with S = x. Only covariances are added, so there is no cancellation (flat, stable α)."""
    d = alpha.size
    e, zero = identity_map(3, d)
    e[2, 0] = 1.0
    block = MapPowers(compose_maps((e, zero), MapPowers(heavy_ball_step_map(alpha, mu, np.ones(d), 3))(c)))(n - 1)
    v1 = iterate_variance(alpha, 1.0, mu)
    rho1 = (1.0 + mu - alpha) / (1.0 + mu)                        # lag-1 autocorrelation (Yule-Walker)
    p0 = np.ones((3, 3, d))
    p0[0, 1] = p0[1, 0] = p0[1, 2] = p0[2, 1] = rho1
    with np.errstate(divide="ignore", invalid="ignore"):
        p = sandwich_product(block[0], p0 * v1) + block[1]
        return np.where(alpha == 0, 0.0, p[2, 2] / n ** 2 / v1)


def swa_variance(alpha, n: int, sigma2=1.0, momentum: float = 0.0, every: int = 1) -> np.ndarray:
    """Var of the uniform mean of n stationary iterates sampled every c steps (theory.md §3.4, §8):
    μ = 0: (v∞/n)[(1+q)/(1−q) − 2q(1−qⁿ)/(n(1−q)²)], q = a^c. Example: ``swa_variance(0.05, 400)`` → 2.378205e-3.
    """
    return _mean_of_points(alpha, n, _int("every", every, 1), sigma2, momentum)


def two_point_variance(alpha, gap: int, sigma2=1.0, momentum: float = 0.0) -> np.ndarray:
    """Var(½(x_t + x_{t−k})) = v∞(1 + ρ_k)/2, ρ_k = a^k for μ = 0 (theory.md §3.5).

    Example: ``two_point_variance(0.05, 200)`` → 1.282096e-2.
    """
    k = _int("gap", gap, 0)
    alpha, sigma2, bad = _prep(alpha, sigma2, momentum)
    safe = np.where(bad, 0.0, alpha)
    v = iterate_variance(safe, sigma2, momentum)
    rho = _acf(safe.ravel(), momentum, k).reshape(safe.shape)
    return np.where(bad, np.inf, v * (1.0 + rho) / 2.0)


def n_point_variance(alpha, n: int, gap: int, sigma2=1.0, momentum: float = 0.0) -> np.ndarray:
    """Var((1/N) Σ_{i<N} x_{t−i·gap}) at stationarity (theory.md §3.5); N = 2 is the two-point average."""
    return _mean_of_points(alpha, n, gap, sigma2, momentum)


def averaged_variance(alpha, avg: Averaging, sigma2=1.0, momentum: float = 0.0) -> np.ndarray:
    """Dispatch on the averaging spec; SWA needs a finite ``length`` (the window, in iterates)."""
    if isinstance(avg, NoAverage):
        return iterate_variance(alpha, sigma2, momentum)
    if isinstance(avg, EMA):
        return ema_variance(alpha, avg.decay, sigma2, momentum, avg.every)
    if isinstance(avg, SWA):
        if avg.length is None:
            raise ValueError("stationary SWA variance needs a window: give SWA(length=n iterates)")
        return swa_variance(alpha, avg.length, sigma2, momentum, avg.every)
    if isinstance(avg, TwoPoint):
        return two_point_variance(alpha, avg.gap, sigma2, momentum)
    if isinstance(avg, NPoint):
        return n_point_variance(alpha, avg.n, avg.gap, sigma2, momentum)
    raise ValueError(f"avg must be NoAverage, EMA, SWA, TwoPoint or NPoint; got {type(avg).__name__}")


def equivalent_alpha(variance, sigma2=1.0, momentum: float = 0.0) -> np.ndarray:
    """The constant rate whose stationary iterate variance equals ``variance``: exact inverse of
    :func:`iterate_variance`. With r = v/σ², K = (1+μ)/(1−μ): α = 2(1+μ) r/(K + r); μ = 0: 2r/(1+r)
    (theory.md §3.3). NaN where σ² = 0 and v = 0 (no noise: every rate has zero variance).
    Example: ``equivalent_alpha(2.283252e-3)`` → 4.556101e-3.
    """
    _check_mu(momentum)
    v, s2 = np.broadcast_arrays(np.asarray(variance, dtype=float), np.asarray(sigma2, dtype=float))
    if np.any(np.isnan(v)) or np.any(v < 0) or np.any(~np.isfinite(s2)) or np.any(s2 < 0):
        raise ValueError("variance must be >= 0 (inf allowed) and sigma2 finite and >= 0")
    k = (1 + momentum) / (1 - momentum)
    with np.errstate(invalid="ignore", divide="ignore"):       # σ² = 0, v = 0: every α fits → NaN (undefined)
        r = v / s2
        out = max_stable_alpha(momentum) * r / (k + r)
    return np.where(np.isinf(r), max_stable_alpha(momentum), out)   # infinite variance: the stability edge


def harmonic_equivalent_lr(lr, decay: float, h=1.0, momentum: float = 0.0) -> np.ndarray:
    """The harmonic rule of theory.md §3.3, the one definition of it: the constant LR an EMA of decay γ is worth,
    λ_eq = λβ/(β + λ_eff·h), β = 1 − γ, λ_eff = λ/(1 − μ) (§2.6) — i.e. 1/α_eq,eff = 1/α_eff + 1/β with α = λh.

    Approximate (small α_eff and β). With h = 1 (the default) ``lr`` is the dimensionless rate α and the result α_eq.
    Example: ``harmonic_equivalent_lr(0.05, 0.995)`` → 4.545455e-3 (theory.md §3.3 anchor table).
    """
    _check_mu(momentum)
    decay = check_ema_decay(decay)
    beta = 1.0 - decay
    lr, h = np.asarray(lr, dtype=float), np.asarray(h, dtype=float)
    return lr * beta / (beta + lr * h / (1.0 - momentum))


def harmonic_curvature(lr, decay: float, lr_eq, momentum: float = 0.0) -> np.ndarray:
    """:func:`harmonic_equivalent_lr` solved for the curvature: the h at which an EMA of decay γ is worth ``lr_eq``,
    h = β(λ/λ_eq − 1)(1 − μ)/λ (theory.md §3.3). 1/LR units; meaningful for 0 < λ_eq < λ (h > 0).
    Example: ``harmonic_curvature(0.05, 0.995, 4.545455e-3)`` → 1.0.
    """
    _check_mu(momentum)
    beta = 1.0 - check_ema_decay(decay)
    lr, lr_eq = np.asarray(lr, dtype=float), np.asarray(lr_eq, dtype=float)
    return beta * (lr / lr_eq - 1.0) * (1.0 - momentum) / lr


def equivalent_alpha_approx(alpha, avg: Averaging, momentum: float = 0.0) -> np.ndarray:
    """Small-rate rules for the equivalent rate, in the same (nominal) units as α (theory.md §3.3-3.5, §3.9).

    With α_eff = α/(1−μ) (theory.md §2.6):
    * EMA (harmonic rule): 1/α_eq,eff = 1/α_eff + 1/β, β = 1 − γ; α_eq = (1−μ) α_eq,eff.
    * SWA (n iterates every c), N-point (N points gap c), two-point (N = 2): α_eq = α f(n, q)/n², the variance
      ratio of a mean of n points with correlation q = e^{−c α_eff} (small-rate AR(1)); it tends to α/n for
      points far apart (two-point: α/2, theory.md §3.5), to 2/n for a long SWA window (Var → σ²/n), and to α
      for n = 1 or c = 0.
    Example: ``equivalent_alpha_approx(0.05, EMA(0.995))`` → 4.545455e-3.
    """
    _check_mu(momentum)
    alpha = np.asarray(alpha, dtype=float)
    a_eff = alpha / (1 - momentum)
    if isinstance(avg, NoAverage):
        return alpha * 1.0
    if isinstance(avg, EMA):
        return harmonic_equivalent_lr(alpha, avg.decay, 1.0, momentum)
    if isinstance(avg, SWA):
        if avg.length is None:
            raise ValueError("SWA equivalent rate needs a window: give SWA(length=n iterates)")
        n, c = int(avg.length), int(avg.every)
    elif isinstance(avg, TwoPoint):
        n, c = 2, int(avg.gap)
    elif isinstance(avg, NPoint):
        n, c = int(avg.n), int(avg.gap)
    else:
        raise ValueError(f"avg must be NoAverage, EMA, SWA, TwoPoint or NPoint; got {type(avg).__name__}")
    return alpha * _f_mean(n, np.exp(-c * a_eff)) / n ** 2


# ----------------------------------------------------------------------------------- a spectrum of directions
# A calibrated model is a spectrum: curvatures h_k (1/LR) with noise masses s_k = σ_k² (parameter²). The scalar
# questions a branch needs — "which constant LR is this average worth?", "which cooldown constant replaces SWA?" —
# are answered on the total excess ½Σ_k h_k v_k (theory.md §2.4, §3.3, §3.4). One home for them: compare/ (the
# report) and empirical/ (``--branch-schedule ... --from-report``) both call these.

def spectrum_raw_excess(lr: float, h, sigma2, momentum: float = 0.0) -> float:
    """Stationary excess of the raw iterate at constant LR ``lr``: ½Σ h v∞(λh) (theory.md §2.4, §2.6); inf beyond
    the stability edge of any direction."""
    h = np.asarray(h, dtype=float)
    a = lr * h
    if np.any(a >= max_stable_alpha(momentum)):
        return float("inf")
    return float(0.5 * np.sum(h * iterate_variance(a, sigma2, momentum)))


def spectrum_averaged_excess(lr: float, avg: Averaging, h, sigma2, momentum: float = 0.0) -> float:
    """Stationary excess ½Σ h Var(average) of ``avg`` over a constant-LR run (theory.md §3.3-3.5)."""
    h = np.asarray(h, dtype=float)
    return float(0.5 * np.sum(h * averaged_variance(lr * h, avg, sigma2, momentum)))


def spectrum_equivalent_lr(excess: float, lr: float, h, sigma2, momentum: float = 0.0) -> float:
    """The constant LR whose stationary raw excess over the spectrum equals ``excess`` (for one direction this is
    ``equivalent_alpha(v)/h``, theory.md §3.3). NaN when no LR up to 10⁶·``lr`` reaches it or ``excess`` ≤ 0."""
    from scipy.optimize import brentq

    if not np.isfinite(excess) or excess <= 0:
        return float("nan")
    top = lr
    while spectrum_raw_excess(top, h, sigma2, momentum) < excess and top < 1e6 * lr:
        top *= 2
    f = lambda x: spectrum_raw_excess(x, h, sigma2, momentum) - excess   # noqa: E731
    if f(top) < 0:
        return float("nan")
    return float(brentq(f, 1e-12 * lr, top, xtol=1e-12 * lr, rtol=1e-10))


def spectrum_cooldown_tau(lr: float, h, sigma2, momentum: float = 0.0) -> float:
    """τ (steps) of the SWA-equivalent cooldown λτ/(τ + n) over a spectrum (theory.md §3.4): one direction has
    τ = 1/α_eff = (1 − μ)/(λh); a spectrum has one τ_k per scale, averaged with weights h_k v_k (each scale's share of
    the raw excess, the noise the cooldown has to remove), so the flat scale that carries the excess sets it."""
    h = np.asarray(h, dtype=float)
    w = h * iterate_variance(lr * h, sigma2, momentum)
    return float(np.sum(w * (1.0 - momentum) / (lr * h)) / np.sum(w))


def swa_cooldown_curvature(lr: float, tau: float, momentum: float = 0.0) -> float:
    """The H for which the branch ``swa:H`` (cooldown constant τ = 1/(λ_eff·H)) has cooldown constant ``tau``:
    H = (1 − μ)/(λτ), 1/LR units (theory.md §3.4)."""
    _check_mu(momentum)
    return (1.0 - momentum) / (lr * tau)


def ema_branch_curvature(lr: float, decay: float, h, sigma2, momentum: float = 0.0, every: int = 1) -> float:
    """The H for which the branch ``ema:GAMMA:H`` switches to the constant LR an EMA of decay γ is worth over the
    spectrum: λ_eq solves spectrum_raw_excess(λ_eq) = spectrum_averaged_excess(EMA(γ)) and H inverts the harmonic
    rule at λ_eq (:func:`harmonic_curvature`, theory.md §3.3), so the branch (which applies the harmonic rule with H)
    runs at λ_eq. NaN when the spectrum gives no λ_eq below ``lr``."""
    excess = spectrum_averaged_excess(lr, EMA(decay=decay, every=every), h, sigma2, momentum)
    lam_eq = spectrum_equivalent_lr(excess, lr, h, sigma2, momentum)
    if not 0 < lam_eq < lr:
        return float("nan")
    return float(harmonic_curvature(lr, decay, lam_eq, momentum))


def swa_branch_curvature(lr: float, h, sigma2, momentum: float = 0.0) -> float:
    """The H for which the branch ``swa:H`` cools down with the spectrum's τ (:func:`spectrum_cooldown_tau`,
    theory.md §3.4)."""
    return swa_cooldown_curvature(lr, spectrum_cooldown_tau(lr, h, sigma2, momentum), momentum)
