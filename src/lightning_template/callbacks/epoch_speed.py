"""Time each epoch and count its training samples per second, without touching the training step."""

from __future__ import annotations

import time

import lightning as L
import torch

from lightning_template.callbacks.epoch_level import EpochLevelCallback


def _wait_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per epoch boundary, never per step


class EpochSpeedMonitor(EpochLevelCallback):
    """Scalars `time/epoch_s` (training plus validation wall time) and `time/samples_per_s` (training
    samples, over all processes, per second of training, validation excluded), once per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch_start = 0.0
        self._validation_start: float | None = None
        self._validation_s = 0.0
        self._batches_at_start = 0

    def _batches_done(self, trainer: L.Trainer) -> int:
        # `total`, not `current`: Lightning resets the epoch counter after on_train_epoch_start.
        return trainer.fit_loop.epoch_loop.batch_progress.total.completed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _wait_for(pl_module.device)
        self._epoch_start = time.perf_counter()
        self._validation_s = 0.0
        self._batches_at_start = self._batches_done(trainer)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training and not trainer.sanity_checking:
            _wait_for(pl_module.device)
            self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._validation_s += time.perf_counter() - self._validation_start
            self._validation_start = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _wait_for(pl_module.device)
        elapsed = time.perf_counter() - self._epoch_start
        batches = self._batches_done(trainer) - self._batches_at_start
        pl_module.log("time/epoch_s", elapsed, on_epoch=True)
        samples = _samples(trainer, batches)
        training_s = elapsed - self._validation_s
        if samples and training_s > 0:
            pl_module.log("time/samples_per_s", samples * trainer.world_size / training_s, on_epoch=True)


def _samples(trainer: L.Trainer, batches: int) -> int | None:
    """Samples in `batches` batches of this process: full batches, except for a short last one."""
    loader = trainer.train_dataloader
    batch_size = getattr(loader, "batch_size", None)
    if loader is None or not batch_size:
        return None
    try:
        return min(batches * batch_size, len(loader.sampler))
    except TypeError:  # a sampler without a length
        return batches * batch_size
