"""What a run trains on, for a config: data, model, and the loss of training, evaluation and measurements — the
classification datasets (ResNets, cross-entropy) or the quadratic closure test (empirical/quadratic.py,
docs/theory.md §2.1). empirical/train.py takes all three from here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from empirical.config import RunConfig


@dataclass
class Task:
    train_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # what SGD minimises on a training batch
    loss_fn: Callable | None         # what every evaluation and measurement takes; None = measure's cross-entropy
    accuracy: bool                   # argmax accuracy means something (else eval/*_acc_* is recorded as NaN)


def for_config(cfg: RunConfig) -> Task:
    """Classification: cross-entropy with ``--label-smoothing`` for training, plain mean cross-entropy
    (empirical.measure's default) for evaluation and measurements. quadratic: one QuadraticLoss everywhere."""
    if cfg.dataset == "quadratic":
        from empirical import quadratic
        loss = quadratic.loss_of(cfg)
        return Task(loss, loss, False)
    return Task(functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing), None, True)


def load_data(cfg: RunConfig):
    """The run's DataBundle (empirical.data.load_data; the quadratic task's depends on its spectrum and length)."""
    if cfg.dataset == "quadratic":
        from empirical import quadratic
        return quadratic.make_data(cfg)
    from empirical import data
    return data.load_data(cfg.dataset, cfg.data_dir, seed=cfg.seed, max_train=cfg.max_train, max_test=cfg.max_test)


def build_model(cfg: RunConfig, data) -> torch.nn.Module:
    """A fresh model (empirical.models.build_model; call after torch.manual_seed). The quadratic model starts at
    quadratic.start_point(cfg)."""
    from empirical.models import build_model as build
    model = build(cfg.arch, data.num_classes, data.in_channels, data.image_size)
    if cfg.dataset == "quadratic":
        from empirical import quadratic
        with torch.no_grad():
            model.theta.copy_(torch.as_tensor(quadratic.start_point(cfg)))
    return model
