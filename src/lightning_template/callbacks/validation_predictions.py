"""Show, each validation epoch, the same validation digits with what the model currently predicts."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightning_template.callbacks.epoch_level import EpochLevelCallback
from lightning_template.callbacks.tensorboard_images import (
    labelled_grid,
    log_image,
    tensorboard_loggers,
    unit_range,
)


class ValidationPredictionGrid(EpochLevelCallback):
    """TensorBoard image `val/predictions`: the first validation digits, captioned `p:<predicted> t:<true>`.

    Keeps a slice of the first validation batch (no host sync) and draws it once at the end of the
    epoch with PIL; captions are green when right, red when wrong. Needs the module's validation_step
    to return `{"preds": ...}`. Idle without a TensorBoard logger, on other ranks than 0 and during the
    sanity check.
    """

    def __init__(
        self, num_images: int = 32, columns: int = 8, every_n_epochs: int = 1, scale: int = 2
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_images", num_images),
            ("columns", columns),
            ("every_n_epochs", every_n_epochs),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ValidationPredictionGrid {name} must be a positive integer, got {value!r}."
                )
        self.num_images = num_images
        self.columns = columns
        self.every_n_epochs = every_n_epochs
        self.scale = scale
        self._sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _due(self, trainer: L.Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            and bool(tensorboard_loggers(trainer))
        )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or not isinstance(outputs, dict) or not self._due(trainer):
            return
        images, targets = batch
        n = self.num_images
        self._sample = (
            images[:n].detach().clone(),
            targets[:n].clone(),
            outputs["preds"][:n].detach().clone(),
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sample is None:
            return
        images, targets, preds = (t.cpu() for t in self._sample)
        self._sample = None
        captions = [f"p:{p} t:{t}" for p, t in zip(preds.tolist(), targets.tolist(), strict=True)]
        grid = labelled_grid(
            unit_range(images, trainer), captions, (preds == targets).tolist(), self.columns, self.scale
        )
        log_image(trainer, "val/predictions", grid)
