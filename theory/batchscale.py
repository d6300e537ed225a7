"""Batch-size scaling in the NQM: "I multiply the batch by κ: which LR and which EMA decay keep the same
trajectory per sample seen?" (theory.md §2.4, §2.6, §3.3).

One step of batch κB replaces κ steps of batch B. The batch minima are means of i.i.d. per-example minima, so
their variance drops from σ² to σ²/κ. Small-rate rules, per sample seen:

* LR ×κ: the mean relaxes by (1 − α)^κ ≈ 1 − κα over κ small steps and by 1 − κα over one large one, and the
  stationary variance v∞ = ασ²/(2(1+μ) − α)·(1+μ)/(1−μ) (theory.md §2.6) is the same to first order in α. Exactly,
  v∞(κα; σ²/κ) / v∞(α; σ²) − 1 = (κ − 1)α / (2(1+μ) − κα): the rule's stationary variance error, which blows up as
  κα approaches the stability edge 2(1+μ) and diverges beyond it (κ_max = 2(1+μ)/(λ h_max)).
* EMA decay γ → γ^κ: the same decay per sample seen.

The exact NQM values next to the rules: the LR λ' with v∞(λ'h; σ²/κ, μ) = v∞(λh; σ², μ) per direction (the loss
floor kept), and the decay γ' with the same stationary EMA variance at λ'.
"""

from __future__ import annotations

import numpy as np

from . import stationary as st
from .moments import excess_loss, moments, moments_from_alpha
from .segments import Varying
from .spec import EMA, NQM, SGD

__all__ = ["rule_variance_error", "exact_lr", "exact_decay", "max_kappa", "trajectory_error", "scaling"]


def rule_variance_error(alpha, kappa: float, momentum: float = 0.0) -> np.ndarray:
    """(κ − 1)α / (2(1+μ) − κα): relative error of the stationary iterate variance under λ → κλ, σ² → σ²/κ
    (inf at or beyond the stability edge κα ≥ 2(1+μ)). Derived from theory.md §2.6's v∞."""
    alpha = np.asarray(alpha, dtype=float)
    edge = st.max_stable_alpha(momentum)
    with np.errstate(divide="ignore"):
        return np.where(kappa * alpha < edge, (kappa - 1) * alpha / (edge - kappa * alpha), np.inf)


def exact_lr(model: NQM, lr: float, momentum: float, kappa: float) -> np.ndarray:
    """Per direction, the LR λ' whose stationary variance with noise σ²/κ equals that at λ with σ² [D]."""
    v = st.iterate_variance(lr * model.h, model.sigma2, momentum)
    return st.equivalent_alpha(v, model.sigma2 / kappa, momentum) / model.h


def exact_decay(alpha, alpha_scaled, decay: float, sigma2, momentum: float, kappa: float) -> np.ndarray:
    """Per direction, γ' with Var_EMA(α', γ'; σ²/κ) = Var_EMA(α, γ; σ²), by bisection (Var_EMA falls as γ' grows);
    NaN where no decay reaches it."""
    alpha, alpha_scaled = np.atleast_1d(alpha).astype(float), np.atleast_1d(alpha_scaled).astype(float)
    sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=float), alpha.shape)
    target = st.ema_variance(alpha, decay, sigma2, momentum)
    out = np.full(alpha.shape, np.nan)
    for i in range(alpha.size):
        f = lambda g: float(st.ema_variance(alpha_scaled[i], g, sigma2[i] / kappa, momentum)) - float(target[i])
        lo, hi = 0.0, 1.0 - 1e-15
        if not (f(lo) >= 0 >= f(hi)):
            continue
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        out[i] = 0.5 * (lo + hi)
    return out


def max_kappa(model: NQM, lr: float, momentum: float) -> float:
    """Largest κ for which κλ stays below the stability edge in every direction: 2(1+μ)/(λ h_max)."""
    return st.max_stable_alpha(momentum) / (lr * float(np.max(model.h)))


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(a - b) / np.abs(b)
    return np.where(a == b, 0.0, r)


def trajectory_error(model: NQM, opt: SGD, avg: EMA | None, kappa: int, total: int, points: int = 100) -> dict:
    """Baseline (batch B, ``total`` steps) vs the κB run under the rules (LR κλ_{κs} at its step s, noise σ²/κ,
    EMA decay γ^κ started at step start/κ), compared at the same samples: baseline step κs vs κB step s.

    Returns the largest relative errors along the trajectory of the excess loss of the iterate and of the EMA,
    and per direction of the final iterate / EMA variance (theory.md §2.3 exact moments for both runs)."""
    kappa = int(kappa)
    n = int(total) // kappa                                       # κB steps covering the same samples
    s = np.unique(np.linspace(0, n, points + 1).astype(np.int64))
    base = moments(model, opt, avg if avg is not None else _none(), s * kappa)
    scaled_model = NQM(h=model.h, sigma2=model.sigma2 / kappa, m0=model.m0, v0=model.v0)
    h, sched = model.h, opt.schedule
    rates = [Varying(0, max(n, 1), lambda t, sl: kappa * sched.lr_at(kappa * t)[:, None] * h[None, sl])]
    s_avg = _none() if avg is None else EMA(decay=avg.decay ** kappa, start=int(avg.start) // kappa)
    big = moments_from_alpha(scaled_model, opt.momentum, s_avg, rates, s)
    out = {"loss_raw": float(np.max(_rel(excess_loss(scaled_model, big.mean_x, big.var_x),
                                         excess_loss(model, base.mean_x, base.var_x)))),
           "var_raw_per_direction": _rel(big.var_x[-1], base.var_x[-1])}
    if avg is not None:
        after = s * kappa >= avg.start
        out["loss_avg"] = float(np.max(_rel(excess_loss(scaled_model, big.mean_avg[after], big.var_avg[after]),
                                            excess_loss(model, base.mean_avg[after], base.var_avg[after]))))
        out["var_avg_per_direction"] = _rel(big.var_avg[-1], base.var_avg[-1])
    return out


def _none():
    from .spec import NoAverage
    return NoAverage()


def scaling(model: NQM, opt: SGD, avg, kappa: float, total: int) -> dict:
    """Everything ``theory.predict --batch-scale`` reports (module docstring); lists are per direction."""
    lr, mu = float(opt.schedule.lr), opt.momentum
    alpha = lr * model.h
    lr_exact = exact_lr(model, lr, mu, kappa)
    res = {"kappa": kappa, "lr_rule": kappa * lr, "lr_exact_same_variance": lr_exact,
           "max_kappa_stable": max_kappa(model, lr, mu),
           "rule_stationary_variance_error": rule_variance_error(alpha, kappa, mu),
           "rule_diverges": bool(np.any(kappa * alpha >= st.max_stable_alpha(mu)))}
    ema = avg if isinstance(avg, EMA) else None
    if ema is not None:
        res["decay_rule"] = ema.decay ** kappa
        res["decay_exact_same_variance"] = exact_decay(alpha, lr_exact * model.h, ema.decay, model.sigma2, mu, kappa)
    if not res["rule_diverges"] and float(kappa) == int(kappa) and int(total) >= int(kappa):
        err = trajectory_error(model, opt, ema, int(kappa), total)
        res["rule_error_along_trajectory"] = {k: v for k, v in err.items() if not k.endswith("per_direction")}
        res["rule_error_per_direction"] = {k: v for k, v in err.items() if k.endswith("per_direction")}
    return res
