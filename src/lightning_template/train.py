"""Train a model: `python -m lightning_template.train [overrides]` or `lt-train [overrides]`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

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


@dataclass
class Run:
    """Everything a training run is made of, built from the config and nothing else."""

    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer
    loggers: list[Logger]


def build_run(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Run:
    """Seed, then instantiate the datamodule, model, loggers, callbacks and Trainer from `cfg`."""
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every final metric (train/val/test) as floats."""
    run = build_run(cfg)
    datamodule, model, trainer, loggers = run.datamodule, run.model, run.trainer, run.loggers
    log_hyperparameters(cfg, model, loggers)

    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = final_metrics(trainer.callback_metrics)

    # Read before testing: trainer.test(ckpt_path=...) restores the callbacks' older state too.
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    last = checkpoint.last_model_path if checkpoint is not None else ""
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
    with exit_on_user_error():
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
