"""Noisy-quadratic model (NQM) of SGD and the equivalence between weight averaging and LR schedules.

Reference: Sandler, Zhmoginov, Vladymyrov & Miller, "Training trajectories, mini-batch losses and the curious role
of the learning rate", arXiv 2301.02312. Formulas: docs/theory.md (project reconstruction, sections cited
in each docstring). This package imports numpy, scipy and sympy only, never torch.

Notation (per eigendirection k of the Hessian H):

=========  =====================================================================
h          curvature h_k (1/LR units)
σ²         variance of the batch minimisers θ_B along u_k (parameter²)
λ, λ_t     learning rate (PyTorch units); η a probe LR of a one-step experiment
μ          heavy-ball momentum (PyTorch convention)
α = λh     step fraction (dimensionless); α_eff = λh/(1−μ); a = 1 − α
γ, β       EMA decay per optimiser step and β = 1 − γ
m, v       mean and variance of x = u_kᵀ(θ − θ*)
v∞         stationary variance at constant LR
k, N, n    two-point gap (steps), number of points, SWA window (iterates)
=========  =====================================================================
"""
