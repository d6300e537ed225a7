"""Synthetic run directories drawn from the noisy-quadratic model itself, for the tests of compare, figures and
scripts/reproduce.py (imported as ``synthetic_runs``: tests/ is on sys.path under pytest).

A synthetic run looks like an empirical run (docs/run-series.md) but its numbers come from a heavy-ball NQM with a
few curvature scales (theory.md §2.1 M1/M3, §2.6). Every expected value is computed HERE from the AR(2)
autocovariance of heavy-ball SGD, written out independently of ``theory/`` on purpose: tests then check that
``compare`` (which uses ``theory``) recovers the parameters chosen here, which is a cross-check of both. The one
exception is the heavy-ball impulse response of the fixed-batch dips, ``theory.inverse.constant_kernel`` (its one
definition, checked against hand values in tests/theory/test_inverse.py); the dip the figures predict comes from
``theory.probes`` through transition matrices, a different computation, so that check stays independent.

Per scale j: curvature ``h[j]`` (1/LR units), noise mass ``s[j]`` = Σ σ_k² over the directions of that scale
(param²), ``d[j]`` directions (only used to sample the one-step probes), and a bias mass ``b[j]`` = Σ m_0,k²
(param²) that decays with the GD mean recursion. AR(2) per direction (PyTorch heavy ball, theory.md §2.6)::

    x_{t+1} = φ1 x_t + φ2 x_{t−1} + α ε_t,   φ1 = 1 + μ − α,  φ2 = −μ,  α = λh

Stationary autocovariance (Yule–Walker): ρ0 = (1+μ)ασ²/((1−μ)(2(1+μ)−α)), ρ1 = φ1ρ0/(1+μ), ρn = φ1ρ(n−1) + φ2ρ(n−2).
Any linear average Σ c_i x_{t−i} has variance Σ_ij c_i c_j ρ(|i−j|), evaluated in closed sums below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common import prediction, rundir
from theory.inverse import constant_kernel
from theory.spec import EMA, SWA, NPoint, TwoPoint, variant_name


@dataclass(frozen=True)
class SynthSetup:
    """Parameters of a synthetic run (units in the module docstring)."""

    h: tuple = (2.0,)                 # curvatures, 1/LR
    s: tuple = (0.5,)                 # noise mass per scale, param²
    d: tuple = (200,)                 # directions per scale (probe sampling only)
    b: tuple = (0.5,)                 # initial bias mass per scale, param²
    lr: float = 0.01                  # λ
    momentum: float = 0.9             # μ
    steps: int = 6000                 # T
    floor: float = 0.3                # L(θ*) + ½ tr(HΣ): the loss floor the report must estimate
    eval_every: int = 100
    probe_every: int = 250
    bank_every: int = 10
    ema_decays: tuple = (0.99, 0.999)
    swa_start: int = 3000
    two_point_gaps: tuple = (10, 100, 1000)
    n_points: int = 4
    n_point_gap: int = 500
    eval_noise: float = 0.01          # absolute s.d. of each eval loss value (loss units)
    eta_grid: tuple = field(default=(-2.0, 2.5, 28))  # log10 range of η/λ_eff and number of probe LRs


def autocov(alpha: float, sigma2: float, mu: float, n: int) -> np.ndarray:
    """ρ(0..n−1) of the stationary heavy-ball iterate (module docstring)."""
    phi1, phi2 = 1 + mu - alpha, -mu
    rho = np.empty(max(n, 2))
    rho[0] = (1 + mu) * alpha * sigma2 / ((1 - mu) * (2 * (1 + mu) - alpha))
    rho[1] = phi1 * rho[0] / (1 + mu)
    for i in range(2, rho.size):
        rho[i] = phi1 * rho[i - 1] + phi2 * rho[i - 2]
    return rho[:n]


def _ema_coef(g: float, t: int) -> np.ndarray:
    c = (1 - g) * g ** (t - np.arange(t + 1, dtype=float))
    c[0] = g ** t
    return c


def _coef_var(rho: np.ndarray, c: np.ndarray) -> float:
    """Var of Σ_i c_i x_i = Σ_d ρ(d)·A(d), A the autocorrelation of c (by FFT; exact up to rounding)."""
    n = c.size
    f = np.fft.rfft(c, 2 * n)
    ac = np.fft.irfft(f * np.conj(f), 2 * n)[:n]
    return float(rho[0] * ac[0] + 2 * np.sum(rho[1:n] * ac[1:n]))


def _window_var(rho: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Var of the mean of n consecutive iterates: (1/n²)[nρ0 + 2 Σ_{d=1}^{n−1} (n−d) ρd], vectorised over n."""
    d = np.arange(rho.size)
    c0 = np.concatenate([[0.0], np.cumsum(rho[1:])])          # c0[m] = Σ_{d=1}^{m} ρd
    c1 = np.concatenate([[0.0], np.cumsum(d[1:] * rho[1:])])
    m = n - 1
    return (n * rho[0] + 2 * (n * c0[m] - c1[m])) / n.astype(float) ** 2


def _mean_path(alpha: float, mu: float, T: int) -> np.ndarray:
    """Deterministic mean m_t/m_0 (no noise), x_{−1} = x_0 (velocity buffer starts at zero)."""
    m = np.empty(T + 1)
    m[0] = 1.0
    prev = 1.0
    for t in range(T):
        nxt = (1 + mu - alpha) * m[t] - mu * prev
        prev, m[t + 1] = m[t], nxt
    return m


def averages(cfg: SynthSetup) -> list:
    """The averages a synthetic run keeps, as theory.spec objects with their timing: EMAs from step 0, the SWA from
    ``swa_start``, the two-point lags and one N-point average (what :func:`expected_excess` computes)."""
    return ([EMA(g, start=0) for g in cfg.ema_decays] + [SWA(start=cfg.swa_start)]
            + [TwoPoint(k) for k in cfg.two_point_gaps] + [NPoint(cfg.n_points, cfg.n_point_gap)])


def expected_excess(cfg: SynthSetup, steps: np.ndarray) -> dict[str, np.ndarray]:
    """Expected excess loss ½Σh(m² + Var) of raw and every averaged variant at ``steps``; iterate stationary."""
    T = cfg.steps
    out: dict[str, np.ndarray] = {}
    names = ["raw"] + [variant_name(a) for a in averages(cfg)]
    for nm in names:
        out[nm] = np.zeros(steps.size)
    for h, s, b in zip(cfg.h, cfg.s, cfg.b):
        a = cfg.lr * h
        nrho = T + 2
        rho = autocov(a, s, cfg.momentum, nrho)
        m = _mean_path(a, cfg.momentum, T)
        msq = lambda path: b * path[steps] ** 2                                   # noqa: E731
        out["raw"] += 0.5 * h * (rho[0] + msq(m))
        for g in cfg.ema_decays:   # EMA from step 0 with y_0 = x_0: y_t = γ^t x_0 + β Σ_{i=1..t} γ^{t−i} x_i
            y = np.empty(T + 1)
            y[0] = m[0]
            for t in range(1, T + 1):
                y[t] = g * y[t - 1] + (1 - g) * m[t]
            var = np.array([_coef_var(rho, _ema_coef(g, int(t))) for t in steps])
            out[variant_name(EMA(g))] += 0.5 * h * (var + msq(y))
        n = np.maximum(steps - cfg.swa_start + 1, 1)
        cs = np.concatenate([[0.0], np.cumsum(m)])
        swa_m = np.where(steps >= cfg.swa_start, (cs[steps + 1] - cs[np.minimum(steps, cfg.swa_start)]) / n, m[steps])
        out["swa"] += 0.5 * h * (np.where(steps >= cfg.swa_start, _window_var(rho, n), rho[0]) + b * swa_m ** 2)
        for k in cfg.two_point_gaps:
            ok = steps >= k
            z = np.where(ok, 0.5 * (m[steps] + m[np.maximum(steps - k, 0)]), m[steps])
            out[variant_name(TwoPoint(k))] += 0.5 * h * (np.where(ok, 0.5 * (rho[0] + rho[k]), rho[0]) + b * z ** 2)
        N, G = cfg.n_points, cfg.n_point_gap
        ii, jj = np.meshgrid(np.arange(N), np.arange(N))
        vN = np.sum(rho[np.abs(ii - jj) * G]) / N ** 2
        ok = steps >= (N - 1) * G
        zN = np.where(ok, np.mean([m[np.maximum(steps - i * G, 0)] for i in range(N)], axis=0), m[steps])
        out[variant_name(NPoint(N, G))] += 0.5 * h * (np.where(ok, vN, rho[0]) + b * zN ** 2)
    return out


def branch_excess(cfg: SynthSetup, lr_fn, t0: int, steps: np.ndarray) -> np.ndarray:
    """Expected excess of a run that is stationary at λ up to t0, then follows lr_fn(t) (2×2 Lyapunov per scale)."""
    total = np.zeros(steps.size)
    mu = cfg.momentum
    for h, s in zip(cfg.h, cfg.s):
        a0 = cfg.lr * h
        rho = autocov(a0, s, mu, 2)
        P = np.array([[rho[0], rho[1]], [rho[1], rho[0]]])   # Cov of (x_t, x_{t−1})
        vals = {}
        want = set(int(x) for x in steps)
        for t in range(t0, int(steps.max()) + 1):
            if t in want:
                vals[t] = P[0, 0]
            a = lr_fn(t) * h
            A = np.array([[1 + mu - a, -mu], [1.0, 0.0]])
            P = A @ P @ A.T
            P[0, 0] += a * a * s
        total += 0.5 * h * np.array([vals[int(x)] for x in steps])
    return total


def _probes(cfg: SynthSetup, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """One-step probe rows: sample x (stationary), a training batch B and a held-out batch B′ (theory.md §3.1)."""
    lam_eff = cfg.lr / (1 - cfg.momentum)
    lo, hi, ne = cfg.eta_grid
    eta = lam_eff * np.logspace(lo, hi, int(ne))
    h = np.concatenate([np.full(d, hh) for hh, d in zip(cfg.h, cfg.d)])
    sig2 = np.concatenate([np.full(d, ss / d) for ss, d in zip(cfg.s, cfg.d)])
    v = np.concatenate([np.full(d, autocov(cfg.lr * hh, ss / d, cfg.momentum, 1)[0]) for hh, ss, d in zip(cfg.h, cfg.s, cfg.d)])
    out = {k: [] for k in ("eta", "loss_train", "loss_heldout", "loss0_train", "loss0_heldout", "grad_sq", "gHg",
                           "fit_coef", "fit_r2", "fit_coef_heldout", "fit_r2_heldout", "cos")}
    for _ in range(n_rows):
        x = rng.normal(0, np.sqrt(v))
        u = x - rng.normal(0, np.sqrt(sig2))                    # θ − θ_B
        e2 = rng.normal(0, np.sqrt(sig2))                       # held-out batch minimiser offset
        lt = 0.5 * np.sum(h * ((1 - np.outer(eta, h)) * u) ** 2, axis=1)
        xp = x - np.outer(eta, h * u)
        lh = 0.5 * np.sum(h * (xp - e2) ** 2, axis=1) + cfg.floor - 0.5 * np.sum(h * sig2)
        out["eta"].append(eta)
        out["loss_train"].append(lt)
        out["loss_heldout"].append(lh)
        out["loss0_train"].append(0.5 * np.sum(h * u ** 2))
        out["loss0_heldout"].append(0.5 * np.sum(h * (x - e2) ** 2) + cfg.floor - 0.5 * np.sum(h * sig2))
        out["grad_sq"].append(np.sum(h ** 2 * u ** 2))
        out["gHg"].append(np.sum(h ** 3 * u ** 2))
        for curve, key in ((lt, "fit_coef"), (lh, "fit_coef_heldout")):
            keep = curve <= curve[0] * 1.5 + 1e-12 if key == "fit_coef" else eta <= 4 * lam_eff
            a2, b1, c0 = np.polyfit(eta[keep], curve[keep], 2)
            res = curve[keep] - np.polyval([a2, b1, c0], eta[keep])
            out[key].append([c0, b1, a2])
            out[key.replace("coef", "r2")].append(1 - np.sum(res ** 2) / np.sum((curve[keep] - curve[keep].mean()) ** 2))
        gx, gb = h * x, h * u
        out["cos"].append(gx @ gb / np.linalg.norm(gx) / np.linalg.norm(gb))
    return {k: np.asarray(vv) for k, vv in out.items()}


def write_run(path, cfg: SynthSetup, seed: int = 0, *, branch: dict | None = None) -> rundir.Path:
    """Write one synthetic run directory. ``branch`` = {"t0": step, "lr_fn": callable, "name": str} makes it a
    branch run (from a checkpoint of the parent at t0, steps absolute, raw variant only)."""
    rng = np.random.default_rng(seed + (1000 if branch else 0))
    run = rundir.new_run_dir("synthetic", "synth", out=path)
    T = cfg.steps
    estep = np.unique(np.concatenate([np.arange(0, T + 1, cfg.eval_every), [T]])).astype(np.int64)
    lr_fn = (lambda t: cfg.lr) if branch is None else (lambda t: cfg.lr if t < branch["t0"] else branch["lr_fn"](t))
    series: dict[str, np.ndarray] = {}
    if branch is None:
        ex = expected_excess(cfg, estep)
    else:
        estep = estep[estep >= branch["t0"]]
        ex = {"raw": branch_excess(cfg, branch["lr_fn"], branch["t0"], estep)}
    series["eval/step"] = estep
    for nm, e in ex.items():
        for split in ("train", "test"):
            loss = cfg.floor + e + rng.normal(0, cfg.eval_noise, e.size)
            series[f"eval/{split}_loss_{nm}"] = loss
            series[f"eval/{split}_acc_{nm}"] = np.exp(-loss)
    tstep = np.arange(0 if branch is None else branch["t0"], T, 10, dtype=np.int64)
    series["train/step"] = tstep
    series["train/lr"] = np.array([lr_fn(int(t)) for t in tstep])
    series["train/loss"] = cfg.floor + np.interp(tstep, estep, ex["raw"]) * 2 + rng.normal(0, 0.05, tstep.size)
    if branch is None:
        pstep = np.arange(cfg.probe_every, T + 1, cfg.probe_every, dtype=np.int64)
        pr = _probes(cfg, rng, pstep.size)
        series["probe/step"] = pstep
        for k in ("eta", "loss_train", "loss_heldout", "loss0_train", "loss0_heldout", "grad_sq", "gHg",
                  "fit_coef", "fit_r2", "fit_coef_heldout", "fit_r2_heldout"):
            series[f"probe/{k}"] = pr[k]
        series["align/step"], series["align/cos"] = pstep, pr["cos"]
        series["curv/step"] = pstep
        series["curv/top_eig"] = max(cfg.h) * (1 + rng.normal(0, 0.02, pstep.size))
        bstep = np.arange(0, T + 1, cfg.bank_every, dtype=np.int64)
        used = np.array([T // 2 + 7, T // 2 + 503, T - 990, -1], dtype=np.int64)
        tr = np.empty((bstep.size, used.size))
        for j, s_used in enumerate(used):
            tr[:, j] = cfg.floor + np.interp(bstep, estep, ex["raw"])
            if s_used >= 0:
                for hh, ss in zip(cfg.h, cfg.s):
                    # response of x_{s+m} to a unit ε_s: 0 at m = 0, then the heavy-ball kernel k_{m−1}
                    r = np.concatenate([[0.0], constant_kernel(cfg.lr * hh, T + 1, cfg.momentum)])
                    lag = bstep - s_used
                    tr[:, j] -= np.where(lag > 0, hh * ss * r[np.clip(lag, 0, T + 1)], 0.0)
        series["bank/step"], series["bank/train_loss"] = bstep, tr + rng.normal(0, 0.002, tr.shape)
        series["bank/heldout_loss"] = cfg.floor + np.interp(bstep, estep, ex["raw"])[:, None] + rng.normal(0, 0.002, (bstep.size, 3))
        series["static/bank_used_at"] = used
        series["dist/step"] = estep   # rough stand-in for ‖θ_avg − θ_raw‖ (M3: ½h‖·‖² ≈ excess gap); figures only
        for nm in ex:
            if nm != "raw":
                series[f"dist/{nm}"] = np.sqrt(np.maximum(2 * (ex["raw"] - ex[nm]) / max(cfg.h), 0))
    rundir.Trajectory(series).save(run / "trajectory.npz")
    conf = {"preset": "synthetic", "lr": cfg.lr, "momentum": cfg.momentum, "batch_size": 64, "weight_decay": 0.0,
            "schedule": "constant" if branch is None else branch.get("name", "branch"), "steps": T,
            "ema_decays": list(cfg.ema_decays), "swa_start": cfg.swa_start, "two_point_gaps": list(cfg.two_point_gaps),
            "n_points": cfg.n_points, "n_point_gap": cfg.n_point_gap, "bn_mode": "none", "seed": seed,
            # the record compare reads each average from, as empirical/averaging.py writes it (a branch keeps its
            # parent's record: the same setup)
            "averaging": {"specs": {variant_name(a): a.to_dict() for a in averages(cfg)}},
            "eval_every": cfg.eval_every, "probe_every": cfg.probe_every, "bank_every": cfg.bank_every,
            "branch_from": None if branch is None else f"synthetic-parent-s{seed}@{branch['t0']}",
            "branch_step": None if branch is None else int(branch["t0"]),
            "branch_schedule": None if branch is None else branch.get("spec"),
            # a branch predicted before it ran records the prediction file and its hash (empirical.run --prediction)
            "prediction": None if branch is None or not branch.get("prediction") else str(branch["prediction"]),
            "prediction_sha256": None if branch is None or not branch.get("prediction")
            else prediction.sha256_of(branch["prediction"])}
    rundir.write_config(run, "synthetic", conf, command=["tests/synthetic_runs.py"])
    rundir.write_env(run)
    final = {nm: {"loss": float(series[f"eval/test_loss_{nm}"][-1]), "acc": float(series[f"eval/test_acc_{nm}"][-1]),
                  "train_loss": float(series[f"eval/train_loss_{nm}"][-1]),
                  "train_acc": float(series[f"eval/train_acc_{nm}"][-1])} for nm in ex}
    rundir.write_summary(run, "ok", T, eval=final, wall_s=0.0)
    return run
