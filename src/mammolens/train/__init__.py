"""Training: :func:`train` and the stages it runs (see docs/architecture.md, "Inside train/").

Stage glue: ``api`` (``train()``), ``patch_stage`` / ``ssl_stage`` (the pretraining
commands) with ``cached_images``. Algorithms: ``patch_pretrain``, ``ssl_pretrain``,
``heads`` (on the shared ``loop``) and ``module`` (the whole-image LightningModule), with
``losses``.
"""

from mammolens.train.api import TrainResult, train

__all__ = ["TrainResult", "train"]
