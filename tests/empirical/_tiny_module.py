"""The small LightningModule the Lightning tests fit (tests/empirical/test_lightning.py and the two-process DDP script
_lightning_ddp.py): a conv net with BatchNorm on 1×8×8 inputs, 10 classes, heavy-ball SGD (lr 0.05, μ 0.9)."""
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class Tiny(pl.LightningModule):
    """A small conv net with BatchNorm on 8×8 digits; forward returns logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
