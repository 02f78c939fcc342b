"""LearningCurves: curves.png, the Keras tutorial's history plot, in every run directory."""

from pathlib import Path
from typing import Any

import lightning as L
from matplotlib.figure import Figure


class LearningCurves(L.Callback):
    """curves.png, the Keras tutorial's history plot: no TensorBoard needed; resumed runs plot every epoch."""

    def __init__(self, path: str | Path = "curves.png") -> None:
        self.path = Path(path)
        self.history: dict[str, dict[int, float]] = {}  # "train/loss" -> epoch -> value
        self.train_epoch: int | None = None  # the last training epoch: the module logs its values at its end

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def record(self, stage: str, epoch: int | None) -> None:
        """Keep `<stage>/loss` and `<stage>/acc` of an epoch (under DDP: the synced values)."""
        if epoch is None:  # no epoch yet, so no trainer either
            return
        for name, value in self.trainer.callback_metrics.items():
            if name in (f"{stage}/loss", f"{stage}/acc"):
                self.history.setdefault(name, {})[epoch] = float(value)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.record("val", trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_epoch = trainer.current_epoch  # its values arrive after this hook, from the module's

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record("train", self.train_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record("train", self.train_epoch)
        if not trainer.is_global_zero or not self.history:
            return
        figure = Figure(figsize=(10, 4), layout="constrained")
        for axes, metric in zip(figure.subplots(1, 2), ("loss", "acc"), strict=True):
            for stage, label in (("train", "train"), ("val", "validation")):
                values = self.history.get(f"{stage}/{metric}", {})
                axes.plot(list(values), list(values.values()), marker="o", label=label)
            axes.set(title=metric, xlabel="epoch")
            axes.xaxis.get_major_locator().set_params(integer=True)
            axes.legend()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.path)

    def state_dict(self) -> dict[str, Any]:
        self.record("train", self.train_epoch)  # checkpoints are saved once the epoch's values are logged
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = state_dict["history"]
