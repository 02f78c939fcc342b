"""Train a model: `python -m lightning_template.train [overrides]` or `lt-train [overrides]`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lightning_template.callbacks.interrupt_checkpoint import SIGTERM_EXIT_CODE
from lightning_template.checkpointing import (
    check_same_network,
    read_checkpoint,
    register_resolvers,
    resolve_ckpt_path,
)
from lightning_template.distributed import ddp_processes_join_this_job
from lightning_template.errors import UserInputError
from lightning_template.models.classifier import network_config
from lightning_template.runtime import (
    build_callbacks,
    build_loggers,
    exit_on_user_error,
    final_metrics,
    log_hyperparameters,
    print_summary,
    silence_known_noise,
)

log = logging.getLogger(__name__)
register_resolvers()  # before Hydra composes conf/train.yaml, whose run dir depends on ckpt_path


@dataclass
class Run:
    """Everything a training run is made of, built from the config and nothing else."""

    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer
    loggers: list[Logger]


def build_run(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Run:
    """Seed, then instantiate the datamodule, model, loggers, callbacks and Trainer from `cfg`."""
    _check_trainer_args(cfg.trainer)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    model: L.LightningModule = instantiate(
        cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler
    )
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers)) + list(extra_callbacks)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Run(datamodule, model, trainer, loggers)


def _check_trainer_args(trainer_cfg: DictConfig) -> None:
    max_epochs = trainer_cfg.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and (isinstance(max_epochs, bool) or max_epochs < 1):
        raise UserInputError(
            f"trainer.max_epochs must be a whole number >= 1 (or -1 for no limit, with trainer.max_steps), "
            f"got {max_epochs!r}."
        )


def resume_checkpoint(cfg: DictConfig, model: L.LightningModule) -> Path | None:
    """The checkpoint to resume from (`ckpt_path`: a file or `last`), checked against the model's network."""
    path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name)
    net = getattr(model, "net", None)
    if path is not None and isinstance(net, torch.nn.Module):
        check_same_network(path, read_checkpoint(path), network_config(net))
        log.info("Resuming from %s", path)
    return path


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every final metric (train/val/test) as floats."""
    run = build_run(cfg, extra_callbacks)
    datamodule, model, trainer, loggers = run.datamodule, run.model, run.trainer, run.loggers
    ckpt_path = resume_checkpoint(cfg, model)
    log_hyperparameters(cfg, model, loggers)

    try:
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # InterruptCheckpoint has saved last.ckpt and said how to resume; exit as a terminated process.
        sys.exit(SIGTERM_EXIT_CODE)
    metrics = final_metrics(trainer.callback_metrics)

    # Read before testing: trainer.test(ckpt_path=...) restores the callbacks' older state too.
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    last = checkpoint.last_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if cfg.get("test"):
        if not best:
            log.warning("No best checkpoint was saved: testing the weights at the end of training.")
        trainer.test(
            model=model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
        metrics.update(final_metrics(trainer.callback_metrics))

    locations = {"Run directory": str(cfg.paths.output_dir), "Best checkpoint": best or "(none saved)"}
    if last:
        locations["Last checkpoint"] = last
    if any(isinstance(lg, TensorBoardLogger) for lg in loggers):
        locations["View in TensorBoard"] = f"tensorboard --logdir {cfg.paths.output_dir}"
    print_summary("Training finished", metrics, locations)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Command-line entry point; returns `optimized_metric` for Hydra sweepers."""
    silence_known_noise()
    with exit_on_user_error(), ddp_processes_join_this_job():
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
