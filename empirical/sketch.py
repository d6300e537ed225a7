"""A fixed CountSketch of the weights, so distances between DIFFERENT runs can be measured from files.

A branch run (``--branch-from``) and its parent's averaged weights live in two processes; storing full weight vectors
at every evaluation would cost |θ| floats each time. Instead every run records S θ ∈ R^d for raw and averaged weights,
with S the CountSketch (Charikar, Chen & Farach-Colton 2002): coordinate i of the flattened parameters goes to bucket
b(i) ∈ [0, d) with sign s(i) ∈ {±1}. S is linear, so S θ − S θ' = S(θ − θ'), and for any fixed vector x

    E ‖S x‖² = ‖x‖²,   Var ‖S x‖² ≤ 2 ‖x‖⁴ / d        (relative s.d. of ‖S x‖ ≤ 1/√(2d): 2.2 % at d = 1024).

b and s come from a torch.Generator seeded with SKETCH_SEED, independent of the run's seed, in parameter order: two
runs of the same architecture share S, whatever their seeds, device or DDP world size. Nothing needs checkpointing.
Cost: one index_add_ per parameter tensor per sketched variant (O(|θ|)); memory: an int64 bucket index and a sign per
parameter (parameters are sketched on their device).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

SKETCH_SEED = 2301_02312   # fixed: the arXiv number of the paper; any constant shared by all runs would do


class CountSketch:
    def __init__(self, shapes: Sequence[torch.Size], dim: int, devices: Sequence[torch.device] | None = None):
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        g = torch.Generator().manual_seed(SKETCH_SEED)
        devices = list(devices) if devices is not None else [torch.device("cpu")] * len(shapes)
        self._bucket, self._sign = [], []
        for shape, dev in zip(shapes, devices):
            n = int(np.prod(shape)) if len(shape) else 1
            self._bucket.append(torch.randint(0, self.dim, (n,), generator=g).to(dev))
            self._sign.append((torch.randint(0, 2, (n,), generator=g, dtype=torch.int8) * 2 - 1).to(dev))

    @torch.no_grad()
    def __call__(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """S θ for θ the concatenation of ``tensors`` (same shapes and order as at construction), float64 [dim]."""
        if len(tensors) != len(self._bucket):
            raise ValueError(f"expected {len(self._bucket)} tensors, got {len(tensors)}")
        out = None
        for t, b, s in zip(tensors, self._bucket, self._sign):
            x = t.detach().reshape(-1).double() * s
            if out is None or out.device != x.device:
                out = out.to(x.device) if out is not None else torch.zeros(self.dim, dtype=torch.float64,
                                                                           device=x.device)
            out.index_add_(0, b, x)
        return out.cpu().numpy() if out is not None else np.zeros(self.dim)

