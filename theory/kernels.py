"""Block kernels: exact first and second moments across stretches of steps whose LR changes at every step.

Per direction a heavy-ball step at rate α_t = λ_t h is the affine map of the state s = (x, x_prev[, y])
(theory.md §2.3, §2.6, §8):

    mean ← Φ_t mean,   P ← Φ_t P Φ_tᵀ + G_t,   Φ_t = E_t A_t,   G_t = α_t² σ² b_t b_tᵀ,

with A_t the step matrix [[c_t, d_t], [1, 0]], c_t = 1 + μ r_t − α_t, d_t = −μ r_t, r_t = α_t/α_{t−1} (PyTorch
rescales its velocity buffer when the LR changes; theory.md §2.6), and E_t the averaging event after the step,
y ← u_t y + w_t x (none: u = 1, w = 0; reset: u = 0, w = 1; EMA: u = γ^c, w = 1 − γ^c; SWA sum: u = w = 1),
b_t = (1, 0[, w_t]). Without momentum the x_prev slot is never read and is dropped (c_t = 1 − α_t).

Three ways to apply k such maps, all exact (they differ in rounding only, ~k·1e-16 relative):

* :func:`tree` composes the k maps pairwise, (Φ₂, G₂)∘(Φ₁, G₁) = (Φ₂Φ₁, Φ₂G₁Φ₂ᵀ + G₂), in log₂k rounds of
  vectorised array operations: the Python cost grows with log k, so it suits few directions (the associative
  reduction: compose the affine maps of blocks of steps).
* :func:`seq_plain` (μ = 0) steps through the k maps one at a time, each a handful of in-place operations on
  D-vectors, and obtains the average's own variance and mean, whose coefficients u_t² and u_t do not depend on
  the direction, as two weighted sums (matrix-vector products) over the block: suits many directions.
* :func:`seq_momentum` (μ > 0) steps through the full heavy-ball update entry by entry.

Arrays are direction-last: rates ``alpha`` [k, D], state ``mean`` [n, D], ``cov`` [n, n, D].
"""

from __future__ import annotations

import numpy as np

__all__ = ["step_ratio", "tree", "tree_many", "tree_phi", "seq_plain", "seq_momentum"]


def step_ratio(alpha: np.ndarray, alpha_prev) -> np.ndarray:
    """r_t = α_t / α_{t−1} per step and direction [k, D] (1 where both are 0; the first step uses ``alpha_prev``,
    r = 1 when it is None: the run's first update). Raises where α_{t−1} = 0 < α_t: a momentum buffer built at LR
    0 has no displacement to rescale (theory.md §2.6; as theory.moments' phase boundaries)."""
    prev = np.empty_like(alpha)
    prev[1:] = alpha[:-1]
    prev[0] = alpha[0] if alpha_prev is None else alpha_prev
    if np.any((prev == 0) & (alpha != 0)):
        raise ValueError("with momentum, an LR of exactly 0 followed by a non-zero LR is not supported "
                         "(the momentum buffer built up at LR 0 has no displacement to rescale); use a tiny LR instead")
    return np.divide(alpha, prev, out=np.ones_like(alpha), where=prev != 0)


def _step_mats(alpha, alpha_prev, mu, nx, u=None, w=None):
    """Per-step Φ_t as an array [n, n, k, D] (n = nx, plus 1 with an average)."""
    k, d = alpha.shape
    n = nx + (0 if u is None else 1)
    phi = np.zeros((n, n, k, d))
    if nx == 1:
        np.subtract(1.0, alpha, out=phi[0, 0])
    else:
        r = step_ratio(alpha, alpha_prev)
        np.multiply(r, -mu, out=phi[0, 1])                        # d_t = −μ r_t
        np.subtract(1.0, phi[0, 1], out=phi[0, 0])                # 1 + μ r_t ...
        phi[0, 0] -= alpha                                        # ... − α_t
        phi[1, 0] = 1.0
    if u is not None:
        iy = nx
        for j in range(nx):
            np.multiply(phi[0, j], w[:, None], out=phi[iy, j])
        phi[iy, iy] = u[:, None]
    return phi


def _step_noise(alpha, sigma2, n, w=None):
    g = np.zeros((n, n) + alpha.shape)
    np.multiply(alpha * alpha, sigma2, out=g[0, 0])               # α_t² σ², parameter²
    if w is not None:
        iy = n - 1
        np.multiply(g[0, 0], w[:, None], out=g[0, iy])
        g[iy, 0] = g[0, iy]
        np.multiply(g[0, iy], w[:, None], out=g[iy, iy])
    return g


def _mul(a, b):
    """Matrix product over the two leading axes of [n, n, m, D] arrays, written out (n ≤ 3): far fewer Python
    calls than one per direction, and no per-matrix overhead of a batched matmul of 2×2 / 3×3 matrices."""
    n = a.shape[0]
    out = np.empty((n, b.shape[1]) + a.shape[2:])
    for i in range(n):
        for j in range(b.shape[1]):
            np.multiply(a[i, 0], b[0, j], out=out[i, j])
            for m in range(1, a.shape[1]):
                out[i, j] += a[i, m] * b[m, j]
    return out


def _sandwich_add(phi, p, g):
    """Φ P Φᵀ + G for symmetric P and G over [n, n, m, D] arrays."""
    tmp = _mul(phi, p)
    n = phi.shape[0]
    out = np.empty_like(g)
    for i in range(n):
        for j in range(i, n):
            acc = g[i, j].copy()
            for m in range(n):
                acc += tmp[i, m] * phi[j, m]
            out[i, j] = acc
            if j != i:
                out[j, i] = acc
    return out


def _reduce(phi, g):
    """Compose k maps [.., k, D] (step 0 first) into one: pairwise rounds, (later ∘ earlier)."""
    while phi.shape[2] > 1:
        k = phi.shape[2]
        half = k // 2
        first, second = phi[:, :, 0:2 * half:2], phi[:, :, 1:2 * half:2]
        new_phi = _mul(second, first)
        new_g = None if g is None else _sandwich_add(second, g[:, :, 0:2 * half:2], g[:, :, 1:2 * half:2])
        if k % 2:                                                 # the odd last map waits for the next round
            new_phi = np.concatenate([new_phi, phi[:, :, k - 1:]], axis=2)
            new_g = None if g is None else np.concatenate([new_g, g[:, :, k - 1:]], axis=2)
        phi, g = new_phi, new_g
    return phi[:, :, 0], (None if g is None else g[:, :, 0])


def tree(alpha, alpha_prev, mu, sigma2, nx, u=None, w=None):
    """The composed map (Φ [n, n, D], G [n, n, D]) of k steps at rates ``alpha`` [k, D], each followed by the
    averaging event (u_t, w_t) [k] when given (theory.md §2.3, §2.6, §3.3, §3.4)."""
    phi = _step_mats(alpha, alpha_prev, mu, nx, u, w)
    g = _step_noise(alpha, sigma2, phi.shape[0], w)
    return _reduce(phi, g)


def tree_many(alpha, alpha_prev, pad, mu, sigma2, nx, u=None, w=None):
    """Several independent stretches at once: ``alpha`` and ``alpha_prev`` [L, m, D] hold, for m stretches of at
    most L steps, each step's rate and the rate of the step before it; ``pad`` [L, m] marks steps past a stretch's
    end (identity maps); ``u``, ``w`` [L, m] its events. Returns the m composed maps (Φ, G) [n, n, m, D].

    One pairwise reduction over L for all m·D columns: the Python cost of a tree is paid once for every stretch
    between two output points of a run, not once per stretch (theory.md §2.3, §2.6, §8)."""
    L, m, d = alpha.shape
    a2 = alpha.reshape(L, m * d)
    uu = ww = None
    if u is not None:
        uu, ww = np.repeat(u, d, axis=1), np.repeat(w, d, axis=1)
    n = nx + (0 if u is None else 1)
    phi = np.zeros((n, n, L, m * d))
    if nx == 1:
        np.subtract(1.0, a2, out=phi[0, 0])
    else:
        prev = alpha_prev.reshape(L, m * d)
        if np.any((prev == 0) & (a2 != 0) & ~np.repeat(pad, d, axis=1)):
            raise ValueError("with momentum, an LR of exactly 0 followed by a non-zero LR is not supported "
                             "(the momentum buffer built up at LR 0 has no displacement to rescale); use a tiny LR "
                             "instead")
        r = np.divide(a2, prev, out=np.ones_like(a2), where=prev != 0)
        np.multiply(r, -mu, out=phi[0, 1])
        np.subtract(1.0, phi[0, 1], out=phi[0, 0])
        phi[0, 0] -= a2
        phi[1, 0] = 1.0
    if uu is not None:
        iy = nx
        for j in range(nx):
            np.multiply(phi[0, j], ww, out=phi[iy, j])
        phi[iy, iy] = uu
    g = np.zeros((n, n, L, m * d))
    np.multiply(a2 * a2, np.tile(sigma2, m), out=g[0, 0])
    if ww is not None:
        iy = n - 1
        np.multiply(g[0, 0], ww, out=g[0, iy])
        g[iy, 0] = g[0, iy]
        np.multiply(g[0, iy], ww, out=g[iy, iy])
    padc = np.repeat(pad, d, axis=1)
    if padc.any():
        for i in range(n):
            for j in range(n):
                phi[i, j][padc] = 1.0 if i == j else 0.0
                g[i, j][padc] = 0.0
    phi, g = _reduce(phi, g)
    return phi.reshape(n, n, m, d), g.reshape(n, n, m, d)


def tree_phi(alpha, alpha_prev, mu, nx):
    """Φ(t+k, t) of the iterate slots only [nx, nx, D]: the transition product of k steps (theory.md §3.5, §8)."""
    return _reduce(_step_mats(alpha, alpha_prev, mu, nx), None)[0]


def _suffix_products(u):
    """ω_j = Π_{i>j} u_i for j < k (ω_{k−1} = 1), and the full product Π u."""
    rev = np.cumprod(u[::-1])
    omega = np.ones_like(u)
    omega[:-1] = rev[:-1][::-1]
    return omega, (float(rev[-1]) if u.size else 1.0)


def _cov_row(xn, x, uc, wn, u, wi) -> None:
    """Cov(x, y) after one step and its event, over ``scale``: X' = u c X + w W' into ``xn`` (``uc`` the row u_t c_t,
    ``wn`` = W', ``wi`` = w_t / scale); u = 0 is a reset, y ← x. u and wi are Python floats: cheap tests."""
    if u == 0.0:
        np.multiply(wn, wi, out=xn)
        return
    np.multiply(x, uc, out=xn)
    if wi == 1.0:
        xn += wn
    elif wi != 0.0:
        xn += wi * wn


def _fold_block(yy, my, ws, xs, mxs, uu, wb, scale, n) -> None:
    """The average's variance ``yy`` (and mean ``my`` unless None) over a block of n buffered rows, in place:
    Y_end = (Π u²) Y_0 + Σ_j ω_j (2 w_j X_{j+1} − w_j² W_{j+1}) (seq_plain's docstring)."""
    om2, full2 = _suffix_products(uu * uu)
    yy *= full2
    yy += (2.0 * scale * om2 * wb) @ xs[1:n + 1]
    yy -= (om2 * wb * wb) @ ws[1:n + 1]
    if my is not None:
        om, full = _suffix_products(uu)
        my *= full
        my += (om * wb) @ mxs[1:n + 1]


def seq_plain(mean, cov, alpha, sigma2, u=None, w=None, scale=1.0, means=True, sub=8):
    """μ = 0: state (x[, y]) after the k steps at rates ``alpha`` [k, D] (or a pair (λ [k], h [D]) with α = λ ⊗ h)
    and events (u, w) [k] (theory.md §2.3,
    §3.3, §3.4). ``scale`` is the usual event weight w (1 − γ^c, or 1 for SWA): Cov(x, y) is carried divided by it
    so that an ordinary event costs one multiply and one add per direction. ``means=False`` skips the means (all
    zero: E x_0 = 0 keeps every mean at 0). Work goes ``sub`` steps at a time through [sub + 1, D] buffers that
    stay in cache, so memory does not grow with k.

    Variance recursion W' = c²W + α²σ², c = 1 − α; Cov(x, y): X' = u c X + w W'; the average's variance
    Y' = u²Y + 2uw c X + w²W' = u²Y + 2w X' − w²W' (substituting u c X = X' − w W'), so over ``sub`` steps
    Y_end = (Π u²) Y_0 + Σ_j ω_j (2 w_j X_{j+1} − w_j² W_{j+1}), ω_j = Π_{i>j} u_i², and likewise the average's
    mean, m_y' = u m_y + w m_x': both are matrix-vector products over the buffered rows.

    A pair (λ, h) whose noise s = h²σ² is positive in every direction goes to :func:`_seq_separable` (the same
    recursion, fewer passes over memory); this form serves the rest (per-direction rates, h = 0 or σ² = 0).
    """
    if isinstance(alpha, tuple):                                  # α = λ_t h, formed ``sub`` steps at a time
        lam, hs = alpha
        k, d = lam.size, hs.size
        noise = np.broadcast_to(np.asarray(sigma2, dtype=float), (d,)) * (hs * hs)   # s = h²σ²
        if np.all(noise > 0) and np.all(np.isfinite(noise)):
            return _seq_separable(mean, cov, lam, hs, noise, u, w, scale, means, sub)
        abuf = np.empty((sub, d))
    else:
        k, d = alpha.shape
    unit_noise = bool(np.all(sigma2 == 1.0))
    has_y = u is not None
    ws = np.empty((sub + 1, d))                                   # W_j = Var x_j, parameter²
    xs = np.empty((sub + 1, d)) if has_y else None                # X_j / scale, X_j = Cov(x_j, y_j)
    mxs = np.empty((sub + 1, d)) if means else None
    c, c2, q = np.empty((sub, d)), np.empty((sub, d)), np.empty((sub, d))
    wrows = list(ws)
    xrows = list(xs) if has_y else None
    ws[0] = cov[0, 0]
    if means:
        mxs[0] = mean[0]
    if has_y:
        xs[0] = cov[0, 1] / scale
        winv = w / scale
        yy = cov[1, 1].copy()
        my = mean[1].copy() if means else None
    for j0 in range(0, k, sub):
        n = min(sub, k - j0)
        cb, c2b, qb = c[:n], c2[:n], q[:n]
        if isinstance(alpha, tuple):
            ab = np.multiply.outer(lam[j0:j0 + n], hs, out=abuf[:n])
        else:
            ab = alpha[j0:j0 + n]
        if has_y or means:
            np.subtract(1.0, ab, out=cb)
            np.multiply(cb, cb, out=c2b)
        else:                                                     # variance only: c itself is never read
            np.subtract(1.0, ab, out=c2b)
            np.square(c2b, out=c2b)
        np.multiply(ab, ab, out=qb)
        if not unit_noise:
            qb *= sigma2                                          # α_t² σ², parameter²
        if means:                                                 # m_x' = c m_x, before cb becomes u c
            for i in range(n):
                np.multiply(mxs[i], cb[i], out=mxs[i + 1])
        if has_y:
            uu = u[j0:j0 + n]
            cb *= uu[:, None]                                     # u_t c_t
            ul, wl = uu.tolist(), winv[j0:j0 + n].tolist()       # Python floats: cheap tests in the loop below
        for i in range(n):                                        # row views made once (wrows, xrows, ...)
            wn = wrows[i + 1]
            np.multiply(wrows[i], c2b[i], out=wn)
            wn += qb[i]
            if has_y:
                _cov_row(xrows[i + 1], xrows[i], cb[i], wn, ul[i], wl[i])
        if has_y:
            _fold_block(yy, my, ws, xs, mxs, uu, w[j0:j0 + n], scale, n)
        for buf in (ws, xs, mxs):                                 # the block's last rows start the next block
            if buf is not None:
                buf[0] = buf[n]
    new_mean, new_cov = mean.copy(), cov.copy()
    new_cov[0, 0] = ws[0]
    if means:
        new_mean[0] = mxs[0]
    if has_y:
        new_cov[1, 1] = yy
        new_cov[0, 1] = new_cov[1, 0] = xs[0] * scale
        if means:
            new_mean[1] = my
    return new_mean, new_cov


# Where λ_t h ≤ this, c_t² is formed expanded, 1 − 2λh + λ²h², in one matrix product: with c² ≥ 1/4 its rounding
# is ≤ ~1e-15 relative. Above it (up to the stability edge λh = 2, where c² → 0 would lose digits to cancellation)
# c_t = 1 − λ_t h is formed and squared.
EXPANDED_MAX_RATE = 0.5


def _seq_separable(mean, cov, lam, hs, noise, u, w, scale, means, sub):
    """:func:`seq_plain` for α_t = λ_t h with s = h²σ² > 0 in every direction (theory.md §2.3, §3.3, §3.4, §8).

    The second moments are carried divided by s (W̃ = W/s, X̃ = X/(s·scale), Ỹ = Y/s): the recursion is linear
    and s is the only place σ² enters, so W̃' = c²W̃ + λ_t² — the noise is a scalar per step, added without
    forming a [sub, D] array of α²σ². The coefficient rows of a block, c_t² and u_t c_t (and c_t for the means),
    come from small matrix products of per-step scalars with the basis rows (1, h, h²) instead of four
    element-wise passes. Per step and direction this reads and writes memory 8 times with an average (c², uc,
    two for W̃, two for X̃, the two matrix-vector products) and 3 times without, against 11 and 6 for the
    element-wise form: measured in scripts/bench_theory.py (docs/performance.md).
    """
    k, d = lam.size, hs.size
    hmax = float(np.max(np.abs(hs))) if d else 0.0
    basis = np.stack([np.ones(d), hs, hs * hs])                   # [3, D]: 1, h (1/LR), h² (1/LR²)
    has_y = u is not None
    ws = np.empty((sub + 1, d))                                   # W̃_j = Var x_j / s
    xs = np.empty((sub + 1, d)) if has_y else None                # X̃_j = Cov(x_j, y_j) / (s · scale)
    mxs = np.empty((sub + 1, d)) if means else None
    c2 = np.empty((sub, d))
    cbuf = np.empty((2 * sub, d))                                 # rows: c_t, then u_t c_t (the average)
    wrows, xrows = list(ws), (list(xs) if has_y else None)
    ws[0] = cov[0, 0] / noise
    if means:
        mxs[0] = mean[0]
    if has_y:
        xs[0] = cov[0, 1] / (noise * scale)
        yy = cov[1, 1] / noise
        my = mean[1].copy() if means else None
    # The per-step scalars of every coefficient row, for all k steps at once (sliced per block below).
    expanded = (float(np.max(np.abs(lam))) if k else 0.0) * hmax <= EXPANDED_MAX_RATE
    one = np.ones(k)
    sq_lhs = np.stack([one, -2.0 * lam, lam * lam], axis=1) if expanded else None   # c² = 1 − 2λh + λ²h²
    c_lhs = np.stack([one, -lam], axis=1) if (means or not expanded) else None      # c = 1 − λh
    uc_lhs = np.stack([u, -u * lam], axis=1) if has_y else None                     # u c
    l2_all = (lam * lam).tolist()                                 # the noise λ_t², in units of s
    if has_y:
        u_all, w_all = u.tolist(), (w / scale).tolist()           # Python floats: cheap tests in the loop below
    for j0 in range(0, k, sub):
        n = min(sub, k - j0)
        c2b = c2[:n]
        if expanded:
            np.matmul(sq_lhs[j0:j0 + n], basis, out=c2b)
        if c_lhs is not None:
            cb = np.matmul(c_lhs[j0:j0 + n], basis[:2], out=cbuf[:n])
            if not expanded:
                np.multiply(cb, cb, out=c2b)
        if has_y:
            uu = u[j0:j0 + n]
            ucb = np.matmul(uc_lhs[j0:j0 + n], basis[:2], out=cbuf[sub:sub + n])
        if means:                                                 # m_x' = c m_x
            for i in range(n):
                np.multiply(mxs[i], cb[i], out=mxs[i + 1])
        for i in range(n):
            wn = wrows[i + 1]
            np.multiply(wrows[i], c2b[i], out=wn)
            wn += l2_all[j0 + i]
            if has_y:
                _cov_row(xrows[i + 1], xrows[i], ucb[i], wn, u_all[j0 + i], w_all[j0 + i])
        if has_y:
            _fold_block(yy, my, ws, xs, mxs, uu, w[j0:j0 + n], scale, n)
        for buf in (ws, xs, mxs):                                 # the block's last rows start the next block
            if buf is not None:
                buf[0] = buf[n]
    new_mean, new_cov = mean.copy(), cov.copy()
    new_cov[0, 0] = ws[0] * noise
    if means:
        new_mean[0] = mxs[0]
    if has_y:
        new_cov[1, 1] = yy * noise
        new_cov[0, 1] = new_cov[1, 0] = xs[0] * (noise * scale)
        if means:
            new_mean[1] = my
    return new_mean, new_cov


def seq_momentum(mean, cov, alpha, alpha_prev, mu, sigma2, u=None, w=None, means=True):
    """μ > 0: state (x, x_prev[, y]) after the k steps, one heavy-ball update at a time (theory.md §2.6):
    x' = c x + d x_prev + α ε, then the event y ← u y + w x'. Entry-wise form of P ← Φ P Φᵀ + G."""
    r = step_ratio(alpha, alpha_prev)
    dd = r * -mu                                                  # d_t = −μ r_t
    cc = 1.0 - dd - alpha                                         # c_t = 1 + μ r_t − α_t
    q = alpha * alpha
    q *= sigma2
    has_y = u is not None
    mx, mp = mean[0].copy(), mean[1].copy()
    xx, xp, pp = cov[0, 0].copy(), cov[0, 1].copy(), cov[1, 1].copy()
    if has_y:
        my = mean[2].copy()
        xy, py, yy = cov[0, 2].copy(), cov[1, 2].copy(), cov[2, 2].copy()
    for j in range(alpha.shape[0]):
        c, d = cc[j], dd[j]
        r0 = c * xx                                               # Cov(x', x) before the noise
        r0 += d * xp
        r1 = c * xp                                               # Cov(x', x_prev)
        r1 += d * pp
        new_xx = c * r0
        new_xx += d * r1
        new_xx += q[j]
        pp, xp, xx = xx, r0, new_xx                               # x_prev' = x
        if means:
            new_mx = c * mx
            new_mx += d * mp
            mp, mx = mx, new_mx
        if has_y:
            r2 = c * xy                                           # Cov(x', y)
            r2 += d * py
            py, xy = xy, r2
            uj, wj = u[j], w[j]
            if wj != 0.0 or uj != 1.0:
                yy = uj * uj * yy + 2.0 * uj * wj * xy + wj * wj * xx
                xy = uj * xy + wj * xx
                py = uj * py + wj * xp
                if means:
                    my = uj * my + wj * mx
    new_mean, new_cov = mean.copy(), cov.copy()
    new_cov[0, 0], new_cov[0, 1], new_cov[1, 0], new_cov[1, 1] = xx, xp, xp, pp
    if means:
        new_mean[0], new_mean[1] = mx, mp
    if has_y:
        new_cov[0, 2] = new_cov[2, 0] = xy
        new_cov[1, 2] = new_cov[2, 1] = py
        new_cov[2, 2] = yy
        if means:
            new_mean[2] = my
    return new_mean, new_cov
