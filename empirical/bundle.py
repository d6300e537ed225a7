"""What every dataset loader returns (empirical.data.load_data, empirical.quadratic.make_data): the three splits and
what a model needs to know about the inputs. Its own module so that the loaders of empirical/data.py and the quadratic
task import it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataBundle:
    train: Dataset  # (x, y) with training augmentation, if the dataset has any
    train_eval: Dataset  # the same images as `train`, without augmentation
    test: Dataset  # held-out split, no augmentation
    num_classes: int
    in_channels: int
    image_size: int  # side of the square input, pixels
    name: str
    details: dict = field(default_factory=dict, compare=False, hash=False)  # source, split, normalisation, ...

    def describe(self) -> dict:
        """Sizes and provenance, JSON-serialisable, for the run's config/env record."""
        return {"name": self.name, "num_train": len(self.train), "num_test": len(self.test),
                "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": self.image_size, **self.details}


