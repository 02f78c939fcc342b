"""Write the Keras tutorial's `history` plot (loss and accuracy per epoch, train vs validation) to a PNG."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L

from lightning_template.callbacks.epoch_level import EpochLevelCallback

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

STAGES = {"train": "train", "val": "validation"}


class LearningCurves(EpochLevelCallback):
    """`curves.png` in the run directory, for a user without TensorBoard; works with any logger or none.

    Reads the epoch values of `<stage>/<metric>` from the Trainer's callback metrics (so under DDP the
    synced ones) and writes the file once, when training ends (rank 0 only). The history travels in
    checkpoints, so a resumed run plots every epoch.
    """

    def __init__(self, path: str | Path, metrics: Sequence[str] = ("loss", "acc")) -> None:
        super().__init__()
        self.path = Path(path)
        self.metrics = list(metrics)
        self.history: dict[str, dict[int, float]] = {}  # tag -> epoch -> value
        self._trainer: L.Trainer | None = None
        self._train_epoch_ended: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _record(self, trainer: L.Trainer, stage: str, epoch: int) -> None:
        for metric in self.metrics:
            value = trainer.callback_metrics.get(f"{stage}/{metric}")
            if value is not None:
                self.history.setdefault(f"{stage}/{metric}", {})[epoch] = float(value)

    def _record_train_epoch(self, trainer: L.Trainer) -> None:
        # The module logs its epoch numbers after the callbacks' on_train_epoch_end; read them later.
        if self._train_epoch_ended is not None:
            self._record(trainer, "train", self._train_epoch_ended)
            self._train_epoch_ended = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._record(trainer, "val", trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_epoch_ended = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_train_epoch(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_train_epoch(trainer)
        if trainer.is_global_zero and self.history:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            curves_figure(self.history, self.metrics).savefig(self.path, dpi=100)
            log.info("Learning curves written to %s", self.path)

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is not None:
            self._record_train_epoch(self._trainer)
        return {"history": {tag: dict(values) for tag, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {tag: dict(values) for tag, values in state_dict.get("history", {}).items()}


def curves_figure(history: dict[str, dict[int, float]], metrics: Sequence[str]) -> Figure:
    """One panel per metric, a line per stage, epochs on the x axis."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(metrics), 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        for stage, label in STAGES.items():
            values = history.get(f"{stage}/{metric}", {})
            if values:
                epochs = sorted(values)
                axes.plot(epochs, [values[e] for e in epochs], marker="o", markersize=3, label=label)
        name = {"acc": "accuracy"}.get(metric, metric)
        axes.set(title=name, xlabel="epoch", ylabel=name)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend()
    return figure
