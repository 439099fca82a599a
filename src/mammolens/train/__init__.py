"""Training: the recipe (LightningModule), data module, losses and :func:`train`."""

from mammolens.train.api import TrainResult, train

__all__ = ["TrainResult", "train"]
