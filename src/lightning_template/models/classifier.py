"""ClassifierModule: trains any classification network on raw inputs, images or table rows; knows no dataset."""

import inspect
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.wrappers import ClasswiseWrapper

from lightning_template.errors import UserError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
STRETCHABLE = (CosineAnnealingLR, ReduceLROnPlateau)  # schedules that a run resumed for longer can follow


def check_network(config: Mapping[str, Any]) -> None:
    """Refuse a `_target_` that is no nn.Module, before any data is read."""
    target = str(config.get("_target_"))
    with suppress(Exception):  # no such class
        if issubclass(get_class(target), nn.Module):
            return
    raise UserError(f"model.net._target_={target!r} is not an nn.Module class.")


class ClassifierModule(L.LightningModule):
    """Loss, metrics and optimizer around any network; a checkpoint alone turns raw inputs into logits."""

    net: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        """`spec` (InputSpec.description()) comes from a checkpoint; a new model takes its datamodule's."""
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        lr = getattr(optimizer, "keywords", {}).get("lr")  # refused before the Trainer starts
        if optimizer is not None and not (isinstance(lr, (int, float)) and lr > 0):
            raise UserError(f"optimizer.lr must be a positive number, got {lr!r}.")
        check_network(net)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer, self.scheduler, self.label_smoothing = optimizer, scheduler, label_smoothing
        if spec is not None:
            self.build(spec)

    def build(self, spec: Mapping[str, Any]) -> None:
        """The network, standardization and metrics for the data's inputs and classes (`spec`, saved with them)."""
        self.hparams["spec"] = dict(spec)
        shape, classes = spec["shape"], list(spec["classes"])
        self.net = instantiate(self.hparams["net"], input_shape=shape, num_classes=len(classes))
        self.register_buffer("mean", torch.zeros(shape))  # the standardization, fitted on the training split
        self.register_buffer("std", torch.ones(shape))
        # Two inputs, as the data has them: for the model summary, the graph and export.
        self.example_input_array = torch.zeros(2, *shape, dtype=getattr(torch, spec["dtype"]))
        accuracies = (MulticlassAccuracy(len(classes), average="micro") for _ in range(3))
        self.train_acc, self.val_acc, self.test_acc = accuracies
        per_class = MulticlassAccuracy(len(classes), average=None)  # one accuracy per class, named
        self.test_class_acc = ClasswiseWrapper(per_class, labels=classes, prefix="test/class_acc/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints: a resumed run remembers its best

    def setup(self, stage: str) -> None:
        spec = self.trainer.datamodule.spec  # type: ignore[attr-defined]  # its setup has run (Lightning's order)
        if self.hparams.get("spec") is None:  # a new model: built for this data, with its standardization
            self.build(spec.description())
            self.mean, self.std = spec.mean.clone(), spec.std.clone()
        check_data(spec.description(), self.hparams["spec"], "The data", "the model")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for raw inputs of the spec's shape: pixels (uint8, or floats in [0, 255]) or features."""
        return self.net((inputs.float() - self.mean) / self.std)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):  # stop before a NaN reaches the weights (on a GPU: one sync per step)
            raise UserError(
                f"Training diverged: the loss became {loss.item()} at step {self.global_step}. Lower "
                "optimizer.lr, or clip gradients with trainer.gradient_clip_val=1.0."
            )
        # Updated here, logged once per epoch: a self.log call per step would cost 0.5 ms, a fifth of a step.
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(logits, labels)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss, prog_bar=True)  # metric objects: synced over processes
        self.log("train/acc", self.train_acc)

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        logits = self(inputs)
        loss, acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        acc.update(logits, labels)
        if stage == "test":
            self.test_class_acc.update(logits, labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return {"logits": logits}  # for the callbacks that draw predictions and mistakes

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._evaluate("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._evaluate("test", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)
        self.log("hp_metric", self.val_acc_best.compute(), sync_dist=True)  # TensorBoard's HPARAMS tab

    def on_test_epoch_end(self) -> None:
        # Synced over processes by compute(); sync_dist because Lightning asks for it under DDP.
        self.log_dict(self.test_class_acc.compute(), sync_dist=True)
        self.test_class_acc.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout and augmentation draw from this generator: a resumed run draws what it would have.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["max_epochs"] = self.trainer.max_epochs  # a run resumed for longer stretches its schedule

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_data(
            checkpoint["hyper_parameters"]["spec"], self.hparams["spec"], "The checkpoint", "this data"
        )
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if self.scheduler and checkpoint.get("lr_schedulers"):  # resuming a fit (Lightning restores it next)
            resume_schedule(checkpoint, self.trainer.max_epochs)

    def configure_optimizers(self) -> Any:
        if self.optimizer is None:
            raise UserError("ClassifierModule needs an optimizer to train (the `optimizer` config group).")
        optimizer = self.optimizer(self.parameters())
        if not self.scheduler:
            return optimizer
        scheduler = dict(self.scheduler)
        factory = scheduler.pop("scheduler")
        if "total_steps" in inspect.signature(factory).parameters:  # OneCycleLR: the run's length
            factory = partial(factory, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": factory(optimizer), **scheduler}}


def resume_schedule(checkpoint: dict[str, Any], max_epochs: int | None) -> None:
    """Resumed with another trainer.max_epochs, cosine anneals from the current rate over the epochs left."""
    state = checkpoint["lr_schedulers"][0]
    if max_epochs is not None and checkpoint.get("max_epochs", max_epochs) != max_epochs and "T_max" in state:
        rates = [group["lr"] for group in checkpoint["optimizer_states"][0]["param_groups"]]
        state.update(T_max=max(1, max_epochs - checkpoint["epoch"] - 1), base_lrs=rates, last_epoch=0)


def check_data(found: dict[str, Any], expected: dict[str, Any], found_in: str, expected_in: str) -> None:
    """Refuse data whose inputs or classes differ from those the model was built for."""
    differ = [key for key, value in found.items() if value != expected.get(key)]
    if differ:
        what = "; ".join(f"{key} {found[key]} where {expected_in} has {expected.get(key)}" for key in differ)
        raise UserError(f"{found_in} has {what}. Use the data the model was trained on.")
