"""Symbolic derivations (sympy) of the stationary results of theory.md §2.4, §2.6, §3.1, §3.3–3.6 and §8.

Nothing here is a typed-in formula. Each expression is *solved for*:

* v∞ and the EMA variance: the stationary Lyapunov equation P = A P Aᵀ + σ² b bᵀ of the joint state
  (x_t, x_{t−1}) (heavy ball, §2.6) or (x_t, y_t) / (x_t, x_{t−1}, y_t) (EMA, §3.3, §8) is written entry by entry
  and solved as a linear system in the unknown entries of P;
* the lag-k autocovariance Cov(x_t, x_{t−k}) = (A^k P)₀₀: μ = 0 from the scalar power a^k; μ > 0 from the
  diagonalisation A = V diag(r₁, r₂) V⁻¹ computed by sympy (r₁ r₂ = μ, r₁ + r₂ = 1 + μ − α);
* two-point, N-point and SWA variances (§3.4, §3.5): the double sum (1/N²) Σ_{i,j<N} Cov_{|i−j|·gap} is evaluated by
  ``sympy.summation`` over the geometric terms (for μ > 0 term by term over r₁^k and r₂^k, so momentum is closed
  form too);
* equivalent rates: ``sympy.solve`` of v∞(α_eq) = V, keeping the root in (0, 2(1+μ));
* the inverse map (§3.6): the kernel equations Σ_t c_t g_{t−1−s} = w_s for a small horizon are solved for c;
* the one-step probe (§3.1): ℓ(θ − ηg) is expanded and collected in η, and the expected gains are taken by
  replacing Gaussian monomials with their moments.

``derive()`` returns the expressions (cached; sympy is imported only when it is called, so importing this module
costs nothing). ``lambdified(backend)`` turns them into functions ('numpy', or 'mpmath' for high-precision
reference values); ``numeric()`` wraps the numpy ones into array functions with the argument conventions of
theory/stationary.py. Heavy-ball expressions are evaluated in complex arithmetic (r₁,₂ are complex for
α ∈ ((1−√μ)², (1+√μ)²)) and the real part is returned; they lose digits when r₁ ≈ r₂ (α ≈ (1 ± √μ)²).
The EMA with ``every`` > 1 is derived for μ = 0 only.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import sympy

__all__ = ["derive", "symbols", "lambdified", "numeric", "ARGS", "INVERSE_HORIZON"]

INVERSE_HORIZON = 6      # steps T of the symbolic kernel-equality system (§3.6); the recursion is read off it

# argument order of every lambdified expression (all are functions of these symbols only)
ARGS: dict[str, tuple[str, ...]] = {
    "v_inf": ("alpha", "sigma2"), "v_inf_hb": ("alpha", "mu", "sigma2"),
    "ema_variance": ("alpha", "gamma", "sigma2"), "ema_ratio": ("alpha", "gamma"),
    "ema_variance_hb": ("alpha", "gamma", "mu", "sigma2"), "ema_variance_every": ("alpha", "gamma", "c", "sigma2"),
    "cov_lag": ("alpha", "k", "sigma2"), "cov_lag_hb": ("alpha", "mu", "k", "sigma2"),
    "two_point": ("alpha", "k", "sigma2"), "two_point_hb": ("alpha", "mu", "k", "sigma2"),
    "pair_sum": ("n", "q"), "swa": ("alpha", "n", "sigma2"),
    "n_point": ("alpha", "N", "gap", "sigma2"), "n_point_hb": ("alpha", "mu", "N", "gap", "sigma2"),
    "alpha_eq": ("V", "sigma2"), "alpha_eq_hb": ("V", "mu", "sigma2"), "ema_alpha_eq": ("alpha", "gamma"),
    "inverse_weight": ("W0", "W1", "alpha"), "inverse_weight_hb": ("W0", "W1", "W2", "alpha", "mu"),
    "probe_A": ("h", "u2"), "probe_B": ("h", "u2"), "probe_C": ("h", "u2"),
    "batch_gain": ("h", "m", "v", "sigma2", "eta"), "heldout_gain": ("h", "m", "v", "sigma2", "eta"),
    "gain_gap": ("h", "sigma2", "eta"), "heldout_gain_stationary": ("h", "lam", "sigma2", "eta"),
    "heldout_root_hb": ("h", "lam", "mu"),
}


@functools.lru_cache(maxsize=None)
def symbols() -> dict[str, "sympy.Symbol"]:
    """The sympy symbols used by :func:`derive`, by name (α, μ, γ, σ², lags and counts, probe variables)."""
    import sympy as sp
    pos = dict(positive=True)
    out = {s: sp.Symbol(s, **pos) for s in ("alpha", "sigma2", "h", "lam", "eta", "V", "u2", "v")}
    out.update({s: sp.Symbol(s, nonnegative=True) for s in ("mu", "gamma")})
    out.update({s: sp.Symbol(s, integer=True, nonnegative=True) for s in ("k", "gap", "j")})
    out.update({s: sp.Symbol(s, integer=True, positive=True) for s in ("n", "N", "c", "i")})
    out.update({s: sp.Symbol(s) for s in ("q", "g", "m", "r1", "r2", "W0", "W1", "W2")})
    return out


def _lyapunov(A, b, noise):
    """Solve P = A P Aᵀ + noise·b bᵀ for symmetric P as a linear system in its entries (theory.md §8)."""
    import sympy as sp
    n = A.shape[0]
    P = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"p{min(i, j)}{max(i, j)}"))
    unknowns = sorted(P.free_symbols, key=str)
    eqs = [e for e in (P - A * P * A.T - noise * b * b.T) if e != 0]
    sol = sp.solve(eqs, unknowns, dict=True)
    if len(sol) != 1:
        raise ArithmeticError("the stationary Lyapunov system has no unique solution")
    return P.subs(sol[0]).applyfunc(sp.factor)


def _pair_sum(n, q):
    """Σ_{i<n} Σ_{j<n} q^{|i−j|} by symbolic summation: diagonal + 2 Σ_i Σ_{j<i} q^{i−j} (generic q ≠ 1)."""
    import sympy as sp
    S = symbols()
    i, j = S["i"], S["j"]
    inner = sp.summation(q ** (i - j), (j, 0, i - 1))              # i ≥ 1; a Piecewise on q = 1
    outer = sp.summation(_generic(inner), (i, 1, n - 1))
    return sp.factor(sp.simplify(n + 2 * _generic(outer)))


def _generic(expr):
    """Pick the generic (q ≠ 1) branch of a Piecewise produced by summing a geometric series."""
    import sympy as sp
    expr = sp.piecewise_fold(expr)
    if isinstance(expr, sp.Piecewise):
        for val, cond in expr.args:
            if cond is not sp.true:
                continue
            return val
        return expr.args[-1][0]
    return expr


def _expect(expr, gaussians):
    """E[expr] for a polynomial in independent standard normals: z^p → (p−1)!! (p even), 0 (p odd)."""
    import sympy as sp
    poly = sp.Poly(sp.expand(expr), *gaussians)
    total = 0
    for powers, coeff in poly.terms():
        mom = 1
        for p in powers:
            mom *= 0 if p % 2 else sp.factorial2(p - 1)
        total += coeff * mom
    return sp.factor(total)


@functools.lru_cache(maxsize=None)
def derive() -> dict[str, "sympy.Expr"]:
    """All derived expressions by name (arguments: :data:`ARGS`). Cached; takes a few seconds the first time."""
    import sympy as sp
    S = symbols()
    al, mu, ga, s2, k = S["alpha"], S["mu"], S["gamma"], S["sigma2"], S["k"]
    out: dict = {}
    a, be, cc = 1 - al, 1 - ga, 1 + mu - al

    # heavy ball, state (x_t, x_{t−1}): x_{t+1} = (1+μ−α) x_t − μ x_{t−1} + α ε_t (theory.md §2.6)
    A_hb, b_hb = sp.Matrix([[cc, -mu], [1, 0]]), sp.Matrix([al, 0])
    P_hb = _lyapunov(A_hb, b_hb, s2)
    out["v_inf_hb"] = P_hb[0, 0]
    out["v_inf"] = _lyapunov(sp.Matrix([[a]]), sp.Matrix([al]), s2)[0, 0]     # plain SGD, state x_t (§2.4)
    v_inf = out["v_inf"]

    # EMA y_{t+1} = γ y_t + β x_{t+1}: state (x, y) for μ = 0, (x, x_prev, y) with momentum (§3.3, §8)
    P_ema = _lyapunov(sp.Matrix([[a, 0], [be * a, ga]]), sp.Matrix([al, be * al]), s2)
    out["ema_variance"] = P_ema[1, 1]
    out["ema_ratio"] = sp.factor(sp.simplify(P_ema[1, 1] / v_inf))
    P_e3 = _lyapunov(sp.Matrix([[cc, -mu, 0], [1, 0, 0], [be * cc, -be * mu, ga]]), sp.Matrix([al, 0, be * al]), s2)
    out["ema_variance_hb"] = P_e3[2, 2]
    # EMA every c steps with decay g = γ^c, seen at update times: c plain steps x → q x + w (q = a^c,
    # Var w = Σ_{j<c} α² a^{2j} σ², itself summed symbolically), then y ← g y + (1−g) x
    q, g, c = S["q"], S["g"], S["c"]
    w_var = sp.summation(al ** 2 * a ** (2 * S["j"]) * s2, (S["j"], 0, c - 1))
    P_ev = _lyapunov(sp.Matrix([[q, 0], [(1 - g) * q, g]]), sp.Matrix([1, 1 - g]), _generic(w_var))
    out["ema_variance_every"] = sp.simplify(P_ev[1, 1].subs({q: a ** c, g: ga ** c}))

    # lag-k autocovariance (A^k P)₀₀
    out["cov_lag"] = v_inf * a ** k
    r1, r2 = S["r1"], S["r2"]
    root_sub = {mu: r1 * r2, al: 1 + r1 * r2 - r1 - r2}            # char. polynomial z² − (1+μ−α) z + μ
    A_r = A_hb.subs(root_sub)
    V, D = A_r.diagonalize()
    coef = (V.inv() * P_hb.subs(root_sub)).applyfunc(sp.simplify)
    terms = [(sp.factor(V[0, i] * coef[i, 0]), D[i, i]) for i in range(2)]   # Cov_k = Σ_i coef_i · r_i^k
    disc = sp.sqrt(cc ** 2 - 4 * mu)
    back = {r1: (cc + disc) / 2, r2: (cc - disc) / 2}
    out["cov_lag_hb"] = sum(cf * r ** k for cf, r in terms).subs(back)

    # two-point: Var(½(x_t + x_{t−k})) = ¼(2 v∞ + 2 Cov_k) (§3.5)
    out["two_point"] = sp.factor(sp.Rational(1, 4) * (2 * v_inf + 2 * out["cov_lag"]))
    out["two_point_hb"] = sp.Rational(1, 4) * (2 * out["v_inf_hb"] + 2 * out["cov_lag_hb"])

    # N-point / SWA: (1/N²) Σ_{i,j<N} Cov_{|i−j|·gap}, geometric in q = a^gap (or r_i^gap) (§3.4, §3.5)
    n, N, gap = S["n"], S["N"], S["gap"]
    f = _pair_sum(n, q)
    out["pair_sum"] = f
    out["n_point"] = v_inf * f.subs({n: N, q: a ** gap}) / N ** 2
    out["swa"] = v_inf * f.subs(q, a) / n ** 2
    out["n_point_hb"] = (sum(cf * f.subs({n: N, q: r ** gap}) for cf, r in terms) / N ** 2).subs(back)

    # equivalent rate: v∞(α_eq) = V (§3.3), root in (0, 2(1+μ))
    Vs, ae = S["V"], sp.Symbol("alpha_eq", positive=True)
    for key, vexpr in (("alpha_eq", v_inf), ("alpha_eq_hb", out["v_inf_hb"])):
        roots = sp.solve(sp.Eq(vexpr.subs(al, ae), Vs), ae)
        if len(roots) != 1:
            raise ArithmeticError(f"expected one root for {key}, got {roots}")
        out[key] = sp.factor(roots[0])
    out["ema_alpha_eq"] = sp.factor(sp.simplify(out["alpha_eq"].subs({Vs: out["ema_ratio"] * v_inf, s2: 1})))

    # inverse map (§3.6): c_{s+1} read off the solved kernel system (shift invariant, so row 0 is generic)
    sol = inverse_solution(INVERSE_HORIZON)
    W = [S["W0"], S["W1"], S["W2"]]
    ws = sp.symbols(f"w0:{INVERSE_HORIZON}")
    cs = sp.symbols(f"c1:{INVERSE_HORIZON + 1}")
    gen = sp.factor(sol[cs[0]].subs(dict(zip(ws[:3], W))))
    out["inverse_weight_hb"] = gen
    out["inverse_weight"] = sp.factor(gen.subs(mu, 0))

    out.update(_probe())
    return out


@functools.lru_cache(maxsize=None)
def inverse_solution(T: int, momentum: bool = True) -> dict:
    """Solve Σ_{t=1}^{T} c_t g_{t−1−s} = w_s (s < T) for c_1..c_T, g_j the noise impulse response of a constant-rate
    heavy-ball run obtained by running the recursion on symbolic noise ε_0..ε_{T−1} (theory.md §3.6).

    Returns {c_t: expression in w_0..w_{T−1}, α, μ} (μ = 0 when ``momentum`` is False).
    """
    import sympy as sp
    if int(T) != T or T < 3:
        raise ValueError(f"horizon T must be an integer >= 3, got {T}")
    S = symbols()
    al, mu = S["alpha"], (S["mu"] if momentum else 0)
    eps, ws, cs = sp.symbols(f"e0:{T}"), sp.symbols(f"w0:{T}"), sp.symbols(f"c1:{T + 1}")
    x_prev, x, theta = 0, 0, [0]                                  # noise part of θ_t (x_{−1} = x_0 = 0)
    for t in range(T):
        x_prev, x = x, sp.expand((1 + mu - al) * x - mu * x_prev + al * eps[t])
        theta.append(x)
    eqs = [sp.Eq(sum(cs[t - 1] * theta[t].coeff(eps[s]) for t in range(1, T + 1)), ws[s]) for s in range(T)]
    sol = sp.solve(eqs, cs, dict=True)
    if len(sol) != 1:
        raise ArithmeticError("the kernel-equality system has no unique solution")
    return {key: sp.factor(val) for key, val in sol[0].items()}


def _probe() -> dict:
    """One GD step of probe LR η on a fixed batch (theory.md §3.1), per direction x, batch offset e."""
    import sympy as sp
    S = symbols()
    h, eta, s2, m, v, lam, mu = S["h"], S["eta"], S["sigma2"], S["m"], S["v"], S["lam"], S["mu"]
    out = {}
    # exact η polynomial of the batch loss for three directions: ½ Σ h_k (1 − η h_k)² u_k²
    hs, us = sp.symbols("h_1:4", positive=True), sp.symbols("u_1:4", real=True)
    loss = sum(hk * (uk - eta * hk * uk) ** 2 / 2 for hk, uk in zip(hs, us))  # u' = u − η g_B, g_B = h u
    coeffs = sp.Poly(sp.expand(loss), eta).all_coeffs()[::-1]     # [η⁰, η¹, η²]
    if len(coeffs) != 3:
        raise ArithmeticError("the one-step batch loss is not quadratic in η")
    A, B, C = coeffs[0], -coeffs[1] / 2, coeffs[2]                 # loss = A − 2Bη + Cη²
    for key, val in (("probe_A", A), ("probe_B", B), ("probe_C", C)):   # per-direction term: direction 1's
        out[key] = sp.factor(sp.expand(val).coeff(us[0] ** 2).subs(hs[0], h) * S["u2"])
    out["probe_poly_3d"] = sp.ImmutableMatrix([A, B, C])               # (A, B, C) for three directions
    # expectations: x = m + √v z, batch offset e = σ z_B, held-out batch offset e' = σ z', all independent
    z, zb, zh = sp.symbols("z z_B z_H", real=True)
    x, e, e2 = m + sp.sqrt(v) * z, sp.sqrt(s2) * zb, sp.sqrt(s2) * zh
    x_new = x - eta * h * (x - e)
    ell = lambda xx, off: h * (xx - off) ** 2 / 2                  # noqa: E731 - per-direction batch loss
    out["batch_gain"] = _expect(ell(x, e) - ell(x_new, e), (z, zb, zh))
    out["heldout_gain"] = _expect(ell(x, e2) - ell(x_new, e2), (z, zb, zh))
    out["gain_gap"] = sp.factor(sp.simplify(out["batch_gain"] - out["heldout_gain"]))
    al = S["alpha"]
    v_hb = _lyapunov(sp.Matrix([[1 + mu - al, -mu], [1, 0]]), sp.Matrix([al, 0]), s2)[0, 0]   # §2.6
    stat = out["heldout_gain"].subs({m: 0, v: v_hb.subs({mu: 0, al: lam * h})})
    out["heldout_gain_stationary"] = sp.factor(sp.simplify(stat))
    stat_hb = out["heldout_gain"].subs({m: 0, v: v_hb.subs(al, lam * h)})
    roots = [r for r in sp.solve(sp.factor(stat_hb), eta) if r != 0]
    if len(roots) != 1:
        raise ArithmeticError(f"expected one nonzero root of the held-out gain, got {roots}")
    out["heldout_root_hb"] = sp.factor(roots[0])
    return out


@functools.lru_cache(maxsize=None)
def lambdified(backend: str = "numpy") -> dict[str, Callable]:
    """``derive()`` turned into functions of :data:`ARGS` (positional). backend 'numpy' or 'mpmath'.

    Heavy-ball ('_hb') functions need complex inputs under numpy (see :func:`numeric`); mpmath promotes itself.
    """
    import sympy as sp
    if backend not in ("numpy", "mpmath"):
        raise ValueError(f"backend must be 'numpy' or 'mpmath', got {backend!r}")
    S, ex = symbols(), derive()
    return {key: sp.lambdify([S[a] for a in args], ex[key], modules=backend, cse=True) for key, args in ARGS.items()}


def numeric() -> dict[str, Callable]:
    """Array functions built on the numpy-lambdified :func:`derive` (reference for theory/stationary.py).

    Keys and signatures (sigma2 default 1., momentum default 0.; stable 0 < α < 2(1+μ) only):
    ``iterate_variance(alpha, sigma2, momentum)``, ``ema_variance(alpha, decay, sigma2, momentum, every=1)``
    (every > 1 only with momentum 0), ``cov_lag(alpha, k, sigma2, momentum)``, ``two_point_variance(alpha, gap,
    sigma2, momentum)``, ``n_point_variance(alpha, n, gap, sigma2, momentum)``, ``swa_variance(alpha, n, sigma2,
    momentum, every=1)``, ``equivalent_alpha(variance, sigma2, momentum)``, ``inverse_weights(w, alpha, momentum)``
    (c_1..c_T of theory.md §3.6), ``batch_gain / heldout_gain(h, m, v, sigma2, eta)``, ``gain_gap(h, sigma2,
    eta)``, ``heldout_gain_stationary(h, lr, sigma2, eta)``, ``heldout_root(h, lr, momentum)`` (theory.md §3.1).
    """
    L = lambdified("numpy")

    def hb(key, alpha, mu, *rest):
        """Heavy-ball expression in complex arithmetic (complex roots r₁,₂), real part returned."""
        with np.errstate(all="ignore"):
            val = L[key](np.asarray(alpha, dtype=complex), np.asarray(mu, dtype=complex), *rest)
        return np.real(val)

    def check(momentum, every=1):
        if not (np.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if int(every) != every or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every}")

    def iterate_variance(alpha, sigma2=1.0, momentum=0.0):
        check(momentum)
        return L["v_inf_hb"](np.asarray(alpha, dtype=float), momentum, sigma2)

    def ema_variance(alpha, decay, sigma2=1.0, momentum=0.0, every=1):
        check(momentum, every)
        if every == 1:
            return L["ema_variance_hb"](np.asarray(alpha, dtype=float), decay, momentum, sigma2)
        if momentum != 0:
            raise ValueError("ema_variance with every > 1 is derived for momentum 0 only")
        return L["ema_variance_every"](np.asarray(alpha, dtype=float), decay, int(every), sigma2)

    def cov_lag(alpha, k, sigma2=1.0, momentum=0.0):
        check(momentum)
        if momentum == 0:
            return L["cov_lag"](np.asarray(alpha, dtype=float), k, sigma2)
        return hb("cov_lag_hb", alpha, momentum, k, sigma2)

    def two_point_variance(alpha, gap, sigma2=1.0, momentum=0.0):
        check(momentum)
        if momentum == 0:
            return L["two_point"](np.asarray(alpha, dtype=float), gap, sigma2)
        return hb("two_point_hb", alpha, momentum, gap, sigma2)

    def n_point_variance(alpha, n, gap, sigma2=1.0, momentum=0.0):
        check(momentum)
        if int(n) != n or n < 1 or int(gap) != gap or gap < 0:
            raise ValueError(f"n must be an integer >= 1 and gap an integer >= 0, got {n}, {gap}")
        if n == 1 or gap == 0:                                    # all points are the same iterate
            return iterate_variance(alpha, sigma2, momentum)
        if momentum == 0:
            return L["n_point"](np.asarray(alpha, dtype=float), int(n), int(gap), sigma2)
        return hb("n_point_hb", alpha, momentum, int(n), int(gap), sigma2)

    def swa_variance(alpha, n, sigma2=1.0, momentum=0.0, every=1):
        check(momentum, every)
        return n_point_variance(alpha, n, every, sigma2, momentum)

    def equivalent_alpha(variance, sigma2=1.0, momentum=0.0):
        check(momentum)
        return L["alpha_eq_hb"](np.asarray(variance, dtype=float), momentum, sigma2)

    def inverse_weights(w, alpha, momentum=0.0):
        check(momentum)
        wp = np.concatenate([np.asarray(w, dtype=float), [0.0, 0.0]])    # w_T = w_{T+1} = 0
        return L["inverse_weight_hb"](wp[:-2], wp[1:-1], wp[2:], alpha, momentum)

    return {
        "iterate_variance": iterate_variance, "ema_variance": ema_variance, "cov_lag": cov_lag,
        "two_point_variance": two_point_variance, "n_point_variance": n_point_variance,
        "swa_variance": swa_variance, "equivalent_alpha": equivalent_alpha, "inverse_weights": inverse_weights,
        "batch_gain": L["batch_gain"], "heldout_gain": L["heldout_gain"], "gain_gap": L["gain_gap"],
        "heldout_gain_stationary": L["heldout_gain_stationary"], "heldout_root": L["heldout_root_hb"],
    }
