"""Confusion matrices as figures: which digits the model mixes up, for validation and for test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_template.callbacks.epoch_level import EpochLevelCallback
from lightning_template.callbacks.tensorboard_images import tensorboard_loggers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STAGES = ("val", "test")
ANNOTATE_MAX_CLASSES = 20  # write the numbers into the cells up to this many classes


class ConfusionMatrixFigure(EpochLevelCallback):
    """TensorBoard images `val/confusion_matrix` (the last validation epoch, at the end of fit) and
    `test/confusion_matrix`: counts and row-normalized (recall per true class), side by side.

    The counts are torchmetrics states, updated from each batch's `preds` (returned by the module's
    validation_step/test_step) and summed over processes when computed. `matrices` holds the last
    counts per stage. Drawn with matplotlib only twice a run, so it adds nothing per epoch but a
    bincount per validation batch.
    """

    def __init__(self, validation: bool = True, test: bool = True) -> None:
        super().__init__()
        self.enabled = {"val": validation, "test": test}
        self._metrics: dict[str, MulticlassConfusionMatrix] = {}
        self.matrices: dict[str, torch.Tensor] = {}

    def _update(self, stage: str, trainer: L.Trainer, outputs: Any, batch: Any) -> None:
        if not self.enabled[stage] or not isinstance(outputs, dict) or not tensorboard_loggers(trainer):
            return
        preds, targets = outputs["preds"], batch[1]
        metric = self._metrics.get(stage)
        if metric is None:
            num_classes = outputs["logits"].shape[1]
            metric = MulticlassConfusionMatrix(num_classes, validate_args=False).to(preds.device)
            self._metrics[stage] = metric
        metric.update(preds, targets)

    def _collect(self, stage: str) -> None:
        metric = self._metrics.get(stage)
        if metric is None or not metric.update_called:
            return
        self.matrices[stage] = metric.compute().cpu()  # every process takes part: states are summed
        metric.reset()

    def _draw(self, stage: str, trainer: L.Trainer) -> None:
        counts = self.matrices.get(stage)
        if counts is None or not trainer.is_global_zero:
            return
        title = {"val": "Validation", "test": "Test"}[stage]
        figure = confusion_figure(counts, f"{title}: {int(counts.sum())} images")
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_figure(
                f"{stage}/confusion_matrix", figure, global_step=trainer.global_step, close=False
            )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self._metrics:
            self._metrics["val"].reset()  # only the last epoch's validation is drawn

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._update("val", trainer, outputs, batch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect("val")
        self._draw("val", trainer)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrices.pop("test", None)
        if "test" in self._metrics:
            self._metrics["test"].reset()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update("test", trainer, outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect("test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Drawn after the test loop (matplotlib takes about 0.3 s), once the metrics are logged.
        self._draw("test", trainer)


def confusion_figure(counts: torch.Tensor, title: str) -> Figure:
    """Two heat maps, rows = true class and columns = predicted: raw counts, and each row divided by its sum."""
    from matplotlib.figure import Figure

    counts = counts.double()
    normalized = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    n = counts.shape[0]
    size = max(4.5, 0.45 * n)
    figure = Figure(figsize=(2 * size, size + 0.6))
    # Fixed margins rather than a layout engine, and no colour bars: the numbers are in the cells.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.86, wspace=0.22)
    figure.suptitle(title)
    for axes, values, name, fmt in zip(
        figure.subplots(1, 2),
        (counts, normalized),
        ("counts", "row-normalized (recall)"),
        ("{:.0f}", "{:.2f}"),
        strict=True,
    ):
        axes.imshow(values.numpy(), cmap="Blues", vmin=0)
        axes.set(title=name, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        if n <= ANNOTATE_MAX_CLASSES:
            threshold = float(values.max()) / 2
            for row in range(n):
                for col in range(n):
                    value = float(values[row, col])
                    if value:
                        color = "white" if value > threshold else "black"
                        text = fmt.format(value)
                        axes.text(col, row, text, ha="center", va="center", fontsize=7, color=color)
    return figure
