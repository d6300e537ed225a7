"""Probes against closed forms: an exactly quadratic toy (linear model, MSE loss) where the one-step curve, η*, gᵀHg
and the top eigenvalue are known by hand (theory.md §3.1), plus no-side-effect checks on a BN network."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from empirical import measure as M


def _toy(n=12, d=5, seed=0):
    """ℓ(w) = (1/n) Σ (x_iᵀw − y_i)²: g = (2/n) Xᵀ(Xw − y), H = (2/n) XᵀX (independent of w)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.5, 1.0, 0.7, 0.3],
                                                                          dtype=torch.float64)[:d]
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, X, y


def _analytic(model, X, y):
    Xn, yn, w = X.numpy(), y.numpy()[:, 0], model.weight.detach().numpy()[0]
    n = len(yn)
    r = Xn @ w - yn
    g = 2 / n * Xn.T @ r
    H = 2 / n * Xn.T @ Xn
    return float(r @ r / n), g, H


def _mse_by_hand(out, target):
    return ((out - target) ** 2).mean()


# F.mse_loss takes the reverse-over-reverse HVP fallback (no forward-over-reverse in torch 2.14); the hand-written
# MSE takes the jvp-of-grad path
@pytest.mark.parametrize("loss_fn", [F.mse_loss, _mse_by_hand])
def test_one_step_probe_on_exact_quadratic(loss_fn):
    model, X, y = _toy()
    Xh, yh = _toy(seed=1)[1:]
    loss0, g, H = _analytic(model, X, y)
    gg, gHg = g @ g, g @ H @ g
    eta_star = gg / gHg                                   # minimiser of ℓ0 − η gᵀg + ½η² gᵀHg
    etas = np.geomspace(1e-3, 1.9, 21) * eta_star         # all inside the descent region (0, 2η*)
    for ratio in (1.0, math.inf):
        out = M.one_step_probe(model, X, y, Xh, yh, etas, loss_fn=loss_fn, fit_max_ratio=ratio)
        assert out["loss0_train"] == pytest.approx(loss0, rel=1e-12)
        assert out["grad_sq"] == pytest.approx(gg, rel=1e-12)
        assert out["gHg"] == pytest.approx(gHg, rel=1e-12)               # Taylor term from one HVP
        np.testing.assert_allclose(out["loss_train"], loss0 - etas * gg + 0.5 * etas ** 2 * gHg, rtol=1e-10)
        assert abs(out["fit_r2"] - 1.0) < 1e-10 and abs(out["fit_r2_heldout"] - 1.0) < 1e-10
        c, b, a = out["fit_coef"]
        assert (c, b, a) == pytest.approx((loss0, -gg, 0.5 * gHg), rel=1e-8)
        assert -b / (2 * a) == pytest.approx(eta_star, rel=1e-8)
    # held-out curve: ℓ'(w − ηg) with ℓ' = mean((X'w − y')²), a quadratic in η computed by hand
    Xn, yn, w = Xh.numpy(), yh.numpy()[:, 0], model.weight.detach().numpy()[0]
    held = [np.mean((Xn @ (w - e * g) - yn) ** 2) for e in etas]
    np.testing.assert_allclose(out["loss_heldout"], held, rtol=1e-10)


def test_fit_range_cuts_past_the_descent_region():
    model, X, y = _toy()
    loss0, g, H = _analytic(model, X, y)
    eta_star = (g @ g) / (g @ H @ g)
    etas = np.geomspace(1e-2, 10, 13) * eta_star          # reaches 10η*: the loss rises above ℓ0 after 2η*
    out = M.one_step_probe(model, X, y, X, y, etas, loss_fn=F.mse_loss)
    mask = M.fit_range(etas, out["loss_train"], out["loss0_train"])
    assert np.array_equal(mask, etas < 2 * eta_star)
    assert abs(out["fit_r2"] - 1.0) < 1e-10


def test_fit_range_rounding_and_redips():
    eta = np.arange(1.0, 9.0)
    loss0 = 1.0
    loss = np.array([1.0 + 1e-12, 0.9, 0.5, 0.8, 1.2, 0.3, np.inf, 0.1])  # rounding at η=1; re-dip after a rise
    assert M.fit_range(eta, loss, loss0).tolist() == [True] * 4 + [False] * 4
    assert M.fit_range(eta, loss, loss0, math.inf).tolist() == [True] * 6 + [False] * 2
    assert M.fit_range(eta, loss, loss0, 1.25).tolist() == [True] * 6 + [False] * 2   # 1.2 <= 1.25·loss0
    loss[6] = 5.0
    assert M.fit_range(eta, loss, loss0, math.inf).all()
    assert not M.fit_range(eta, 1.1 + eta, loss0).any()      # rises from the first η: no descent on this grid
    assert not M.fit_range(eta, np.full(8, np.nan), loss0).any()
    with pytest.raises(ValueError, match="max_ratio"):
        M.fit_range(eta, loss, loss0, 0.0)


def test_quadratic_fit_known_coefficients():
    eta = np.geomspace(1e-4, 10.0, 9)
    coef, r2 = M.quadratic_fit(eta, 3.0 - 2.0 * eta + 0.25 * eta ** 2)
    np.testing.assert_allclose(coef, [3.0, -2.0, 0.25], rtol=1e-9)
    assert abs(r2 - 1) < 1e-12
    coef, r2 = M.quadratic_fit([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 0.0, 1.0])
    # the residual is the projection of y on the cubic orthogonal polynomial p3 = (−1, 3, −3, 1):
    # SS_res = (y·p3)²/‖p3‖² = 4²/20 = 0.8, SS_tot = 4·0.5² = 1, so R² = 0.2; fitted values y − 0.2·p3
    np.testing.assert_allclose(coef[0] + coef[1] * np.arange(4) + coef[2] * np.arange(4) ** 2,
                               np.array([0, 1, 0, 1]) - 0.2 * np.array([-1, 3, -3, 1]), atol=1e-12)
    assert r2 == pytest.approx(0.2, rel=1e-12)
    with pytest.raises(ValueError, match=">= 3"):
        M.quadratic_fit([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])


def test_top_curvature_on_quadratic():
    model, X, y = _toy()
    _, _, H = _analytic(model, X, y)
    top = np.linalg.eigvalsh(H)[-1]
    est = M.top_curvature(model, [(X, y)], iters=200, seed=3, loss_fn=F.mse_loss)
    assert est == pytest.approx(top, rel=1e-9)
    # mean loss over two batches: Hessian is the mean of the two Hessians
    Xb, yb = _toy(seed=4)[1:]
    H2 = (H + _analytic(model, Xb, yb)[2]) / 2
    est2 = M.top_curvature(model, [(X, y), (Xb, yb)], iters=200, loss_fn=F.mse_loss)
    assert est2 == pytest.approx(np.linalg.eigvalsh(H2)[-1], rel=1e-9)


def test_grad_alignment():
    model, X, y = _toy()
    assert M.grad_alignment(model, X, y, [(X, y), (X, y)], loss_fn=F.mse_loss) == pytest.approx(1.0, abs=1e-12)
    Xb, yb = _toy(seed=2)[1:]
    Xc, yc = _toy(seed=3)[1:]
    g = _analytic(model, X, y)[1]
    gm = (_analytic(model, Xb, yb)[1] + _analytic(model, Xc, yc)[1]) / 2
    cos = g @ gm / np.linalg.norm(g) / np.linalg.norm(gm)
    got = M.grad_alignment(model, X, y, [(Xb, yb), (Xc, yc)], loss_fn=F.mse_loss)
    assert got == pytest.approx(cos, rel=1e-10)
    with pytest.raises(ValueError, match="reference batch"):
        M.grad_alignment(model, X, y, [])


def test_probe_etas():
    e = M.probe_etas(0.1, 0.9, n=7, lo=1e-3, hi=1e3)       # λ_eff = 0.1 / 0.1 = 1
    np.testing.assert_allclose(e, 10.0 ** np.arange(-3, 4), rtol=1e-12)
    for bad in [dict(lr=0.0, momentum=0.9), dict(lr=0.1, momentum=1.0), dict(lr=0.1, momentum=0.0, n=0),
                dict(lr=0.1, momentum=0.0, lo=1.0, hi=0.5)]:
        with pytest.raises(ValueError):
            M.probe_etas(**bad)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def _bn_setup():
    torch.manual_seed(0)
    m = BNNet().double()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, 1, 5, 5, dtype=torch.float64)
    return m, x, torch.arange(6) % 4


def test_probe_has_no_side_effects_and_uses_eval_bn():
    m, x, y = _bn_setup()
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = M.one_step_probe(m, x, y, x[:3], y[:3], M.probe_etas(0.01, 0.9, n=5))
    M.grad_alignment(m, x, y, [(x, y)])
    M.top_curvature(m, [(x, y)], iters=2)
    M.batch_losses(m, [(x, y)])
    assert m.training and m.bn.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    # eval-mode BN: loss0 and ‖g‖² equal plain autograd on the model in eval mode
    m.eval()
    loss = F.cross_entropy(m(x), y)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    assert out["loss0_train"] == pytest.approx(loss.item(), rel=1e-12)
    assert out["grad_sq"] == pytest.approx(sum((g * g).sum() for g in grads).item(), rel=1e-12)


def test_gHg_matches_finite_difference_on_bn_net():
    m, x, y = _bn_setup()
    m.eval()
    params = list(m.parameters())

    def grads_at(shift):
        with torch.no_grad():
            for p, s in zip(params, shift):
                p.add_(s)
        gs = torch.autograd.grad(F.cross_entropy(m(x), y), params)
        with torch.no_grad():
            for p, s in zip(params, shift):
                p.sub_(s)
        return gs

    g = grads_at([torch.zeros_like(p) for p in params])
    eps = 1e-5
    gp, gm = grads_at([eps * t for t in g]), grads_at([-eps * t for t in g])
    fd = sum(((a - b) / (2 * eps) * t).sum() for a, b, t in zip(gp, gm, g)).item()   # gᵀ(Hg), central difference
    out = M.one_step_probe(m, x, y, x, y, np.array([1e-3, 1e-2, 1e-1]))
    assert out["gHg"] == pytest.approx(fd, rel=1e-6)


def test_batch_losses_by_hand():
    m, x, y = _bn_setup()
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    got = M.batch_losses(m, batches)
    m.eval()
    with torch.no_grad():
        want = [F.cross_entropy(m(a), b).item() for a, b in batches]
    assert got.dtype == np.float64 and got.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("fraction, k", [(1.0, 8), (0.25, 2), (0.3, 3), (0.01, 1)])
def test_bank_records_the_first_ceil_f_b_images_of_each_batch(fraction, k):
    # the bank's losses equal cross-entropy of the first k = ceil(f·8) images of each 8-image batch, by hand
    from dataclasses import replace

    from empirical import config, train

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 4, (8,))) for _ in range(4)]
    fixed = {"bank": batches[:2], "held": batches[2:]}
    cfg = replace(config.RunConfig(), batch_size=8, bank_every=1, bank_fraction=fraction, probe_every=0,
                  align_every=0, curv_every=0)
    logged = {}

    class Rec:
        def log(self, group, step, **series):
            logged[group] = series

    train.measure(0, train.TrainState(cfg, fixed=fixed, rec=Rec()), 0.1, None, None, model_at=lambda: model)
    for name, part in (("train_loss", batches[:2]), ("heldout_loss", batches[2:])):
        want = []
        with torch.no_grad():
            for x, y in part:
                logits = x[:k].reshape(k, 12) @ model[1].weight.T + model[1].bias
                want.append(float(-(logits.log_softmax(1)[torch.arange(k), y[:k]]).mean()))
        np.testing.assert_allclose(logged["bank"][name], want, rtol=1e-6)
