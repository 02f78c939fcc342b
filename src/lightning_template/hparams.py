"""LogHyperparameters: the settings that tell runs apart, for every logger and TensorBoard's HPARAMS tab."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from torch.utils.tensorboard.summary import hparams

# Metrics of TensorBoard's HPARAMS tab, by which the runs of a sweep are compared.
HPARAM_METRICS = ("hp_metric", "val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as `a/b/c` keys with values TensorBoard's HPARAMS tab can show."""
    if isinstance(node, Mapping):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    name = prefix.rstrip("/")
    if name.endswith("_target_"):
        return {name: str(node).rpartition(".")[2]}
    return {name: node if isinstance(node, (int, float, str, bool)) else str(node)}


class LogHyperparameters(L.Callback):
    """Sends `params` to every logger when fitting starts: after a resumed checkpoint has been checked, so
    that a refused resume writes nothing."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = flatten(
            OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params
        )

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(self.params)
            if isinstance(logger, TensorBoardLogger):  # the values come from the scalars logged later
                for summary in hparams(self.params, dict.fromkeys(HPARAM_METRICS, 0.0)):
                    logger.experiment.file_writer.add_summary(summary)
