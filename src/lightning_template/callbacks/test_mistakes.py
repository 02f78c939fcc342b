"""Show the test digits the model gets wrong with the most confidence: where it is surest and still wrong."""

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


def most_confident_mistakes(
    logits: torch.Tensor, targets: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices, predictions and softmax confidences of the (at most) k most confident wrong predictions."""
    confidence, preds = logits.detach().float().softmax(dim=1).max(dim=1)
    wrong = (preds != targets).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True)[:k]
    index = wrong[order]
    return index, preds[index], confidence[index]


class ConfidentMistakesGrid(EpochLevelCallback):
    """TensorBoard image `test/mistakes`: the test set's most confident mistakes, `p:<pred> t:<true> <conf>%`.

    Keeps the running top `num_images` over the test batches (on the device), gathers them from every
    process, and draws them once at the end of testing. `mistakes` holds what was drawn (confidence,
    prediction, target). Needs the module's test_step to return `{"logits": ...}`.
    """

    def __init__(self, num_images: int = 32, columns: int = 8, scale: int = 3) -> None:
        super().__init__()
        for name, value in (("num_images", num_images), ("columns", columns)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ConfidentMistakesGrid {name} must be a positive integer, got {value!r}.")
        self.num_images = num_images
        self.columns = columns
        self.scale = scale
        self._best: dict[str, torch.Tensor] | None = None
        self._images: torch.Tensor | None = None
        self.mistakes: dict[str, torch.Tensor] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._best = None
        self._images = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or not tensorboard_loggers(trainer):
            return
        images, targets = batch
        index, preds, confidence = most_confident_mistakes(outputs["logits"], targets, self.num_images)
        found = {
            "confidence": confidence,
            "pred": preds,
            "target": targets[index],
            "image": images[index].detach().float(),
        }
        self._best = found if self._best is None else _top(_concat(self._best, found), self.num_images)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._best is None or not tensorboard_loggers(trainer):
            return
        best = self._best
        self._best = None
        if trainer.world_size > 1:
            # Same-sized tensors on every rank (padded with confidence -1), stacked by all_gather.
            best = _pad(best, self.num_images)
            best = {name: _gather(pl_module, t) for name, t in best.items()}
            best = _top(best, self.num_images)
            keep = best["confidence"] >= 0
            best = {name: t[keep] for name, t in best.items()}
        self.mistakes = {name: t.cpu() for name, t in best.items() if name != "image"}
        self._images = best["image"].cpu()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Drawn after the test loop, from what on_test_epoch_end gathered.
        images, self._images = self._images, None
        if images is None or not trainer.is_global_zero or not len(images):
            return
        best = self.mistakes
        captions = [
            f"p:{p} t:{t} {round(100 * c)}%"
            for p, t, c in zip(
                best["pred"].tolist(), best["target"].tolist(), best["confidence"].tolist(), strict=True
            )
        ]
        wrong = [False] * len(captions)
        grid = labelled_grid(unit_range(images, trainer), captions, wrong, self.columns, self.scale)
        log_image(trainer, "test/mistakes", grid)


def _gather(pl_module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    gathered = pl_module.all_gather(tensor)
    assert isinstance(gathered, torch.Tensor)
    return gathered.flatten(0, 1)  # (world size, k, ...) -> (world size * k, ...)


def _concat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([a[name], b[name]]) for name in a}


def _top(found: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    order = found["confidence"].argsort(descending=True)[:k]
    return {name: t[order] for name, t in found.items()}


def _pad(found: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    missing = k - len(found["confidence"])
    if missing <= 0:
        return found
    padded = {}
    for name, t in found.items():
        fill = torch.full(
            (missing, *t.shape[1:]), -1 if name == "confidence" else 0, dtype=t.dtype, device=t.device
        )
        padded[name] = torch.cat([t, fill])
    return padded
