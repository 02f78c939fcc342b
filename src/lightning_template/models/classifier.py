"""ClassifierModule: trains any classification network; knows nothing of MNIST."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lightning_template.errors import TrainingDivergedError

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], Optimizer]


def network_config(net: nn.Module) -> dict[str, Any]:
    """Describe a network as `_target_` plus its constructor arguments, so checkpoints never pickle code."""
    config = getattr(net, "config", None)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{type(net).__qualname__} has no `config` dict of its constructor arguments; ClassifierModule "
            "needs one to rebuild the network from a checkpoint (see models/mlp.py for an example)."
        )
    return {"_target_": f"{type(net).__module__}.{type(net).__qualname__}", **config}


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from `network_config` output, refusing any target that is not an nn.Module."""
    kwargs = dict(config)
    target = kwargs.pop("_target_", None)
    if not isinstance(target, str):
        raise ValueError(f"Network config needs a `_target_` class path, got {target!r}.")
    module_name, _, class_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None) if module_name else None
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ValueError(f"Network `_target_` {target!r} is not an nn.Module subclass.")
    return cls(**kwargs)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training, accuracy metrics and optimizer wiring around any classification network."""

    train_sums: torch.Tensor  # a buffer: [loss * n, correct, n] summed over the epoch's training batches

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.net = net if isinstance(net, nn.Module) else build_network(net)
        net_config = network_config(self.net)
        num_classes = net_config.get("num_classes")
        if not isinstance(num_classes, int):
            raise ValueError(f"The network's config must give an integer `num_classes`, got {num_classes!r}.")
        # Only plain data goes into the checkpoint: the network's config, never the module or factories.
        self.save_hyperparameters(
            {"net": net_config, "label_smoothing": float(label_smoothing)}, logger=False
        )
        if optimizer is not None:
            _check_optimizer(optimizer, self.net)
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.label_smoothing = float(label_smoothing)
        self.compile_network = compile  # not `self.compile`: that would hide nn.Module.compile()
        # torch.compile wraps the bound forward (not the module), so state_dict keys stay the network's.
        self._compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None

        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives a resume from checkpoint
        # One value per class, logged as test/precision_<c>, test/recall_<c>, test/f1_<c>.
        self.test_per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(num_classes, average=None),
                "recall": MulticlassRecall(num_classes, average=None),
                "f1": MulticlassF1Score(num_classes, average=None),
            }
        )
        self.register_buffer("train_sums", torch.zeros(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of already-normalized inputs."""
        return self._compiled_forward(x) if self._compiled_forward is not None else self.net(x)

    def setup(self, stage: str) -> None:
        if self.compile_network and self._compiled_forward is None:
            self._compiled_forward = torch.compile(self.net.forward)

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, logits.argmax(dim=1), y

    def on_train_start(self) -> None:
        # The sanity-check validation pass must not leak into the first epoch's numbers.
        self.val_acc.reset()
        self.val_loss.reset()

    def on_train_epoch_start(self) -> None:
        self.train_sums.zero_()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._shared_step(batch)
        # A self.log call costs about a sixth of this small MLP's whole step on a CPU (about 0.5 ms of
        # 3 ms), so the epoch numbers are accumulated on the device (no host sync) and step numbers are
        # logged only on the steps Lightning writes (every trainer.log_every_n_steps; global_step + 1
        # is its step counter here).
        # Step numbers stay off the progress bar: Lightning calls .item() on those after every batch.
        correct = (preds == y).sum()
        n = len(y)
        self.train_sums += torch.stack([loss.detach() * n, correct.float(), loss.new_full((), n)])
        every: int = getattr(self.trainer, "log_every_n_steps", 0)  # set by the Trainer at runtime
        log_step = bool(every) and (self.global_step + 1) % every == 0
        # Stop before a non-finite loss reaches the weights. Free on a CPU; on an accelerator checking
        # every step would wait for the device, so it is checked on logged steps only.
        on_cpu = loss.device.type == "cpu"
        if on_cpu or log_step:
            self._check_finite(loss if on_cpu else self.train_sums[0], exact=on_cpu, every=every)
        if log_step:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
            self.log("train/acc_step", correct / n, on_step=True, on_epoch=False)
        return loss

    def _check_finite(self, value: torch.Tensor, exact: bool, every: int) -> None:
        if bool(torch.isfinite(value)):
            return
        step = self.global_step
        if exact:
            where = f"at step {step} (epoch {self.current_epoch}), before that step changed the weights"
        else:
            where = (
                f"between steps {max(0, step + 1 - every)} and {step} (epoch {self.current_epoch}; on an "
                "accelerator the loss is checked every trainer.log_every_n_steps steps)"
            )
        raise TrainingDivergedError(
            f"Training diverged: the loss became {float(value.detach())} {where}. Training stopped; checkpoints "
            "written earlier are kept. Lower the learning rate (optimizer.lr), clip gradients "
            "(trainer.gradient_clip_val=1.0) or check the data."
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run interrupted mid-epoch resumes with the partial sums, so its epoch numbers stay exact.
        checkpoint["train_sums"] = self.train_sums.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "train_sums" in checkpoint:
            self.train_sums.copy_(checkpoint["train_sums"])

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, count = self.train_sums
        if count > 0:
            self.log("train/loss", loss_sum / count, on_epoch=True, sync_dist=True, prog_bar=True)
            self.log("train/acc", correct / count, on_epoch=True, sync_dist=True)

    def _evaluation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"logits": logits, "preds": logits.argmax(dim=1)}

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        """Update the metrics; return the batch's logits and predictions for callbacks (image grids)."""
        loss, outputs = self._evaluation_step(batch)
        y = batch[1]
        self.val_loss.update(loss, weight=len(y))
        self.val_acc.update(outputs["preds"], y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        return outputs

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        best = self.val_acc_best.compute()
        self.log("val/acc_best", best, prog_bar=True)
        self.log("hp_metric", best)  # TensorBoard's HPARAMS tab reads this tag

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Update the metrics; return the batch's logits and predictions for callbacks (mistakes, confusion)."""
        loss, outputs = self._evaluation_step(batch)
        y = batch[1]
        self.test_loss.update(loss, weight=len(y))
        self.test_acc.update(outputs["preds"], y)
        self.test_per_class.update(outputs["preds"], y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        return outputs

    def on_test_epoch_end(self) -> None:
        # compute() gathers the states of every process first, so the values are the whole test set's.
        per_class = {
            f"test/{name}_{c}": value
            for name, values in self.test_per_class.compute().items()
            for c, value in enumerate(values)
        }
        self.log_dict(per_class, sync_dist=True)  # equal on every rank already; sync_dist avoids a warning
        self.test_per_class.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(x), dim=1)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(
                "ClassifierModule was built without an optimizer factory, so it cannot train; "
                "pass `optimizer=functools.partial(torch.optim.Adam, lr=1e-3)` (Hydra: the `optimizer` group)."
            )
        optimizer = self.optimizer_factory(self.parameters())
        if not self.scheduler_config:
            return optimizer
        lr_scheduler = dict(self.scheduler_config)
        factory = lr_scheduler.pop("scheduler")
        kwargs: dict[str, Any] = {}
        if _needs_total_steps(factory):
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        lr_scheduler["scheduler"] = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}


def _check_optimizer(factory: OptimizerFactory, net: nn.Module) -> None:
    """Build the optimizer once at construction, so a bad argument fails before any data is loaded."""
    lr = (getattr(factory, "keywords", None) or {}).get("lr")
    if isinstance(lr, (int, float)) and not lr > 0:
        raise ValueError(f"optimizer.lr must be a positive number, got {lr!r}.")
    try:
        factory(net.parameters())
    except (ValueError, TypeError) as exc:
        name = getattr(getattr(factory, "func", factory), "__name__", "optimizer")
        raise ValueError(f"The `optimizer` config ({name}) is invalid: {exc}.") from exc


def _needs_total_steps(factory: Callable[..., Any]) -> bool:
    """Schedulers like OneCycleLR need the run length, which only the Trainer knows."""
    keywords = getattr(factory, "keywords", {}) or {}
    if "total_steps" in keywords or "epochs" in keywords:
        return False
    target = getattr(factory, "func", factory)
    try:
        return "total_steps" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
