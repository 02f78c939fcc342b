"""Train a model: `python -m lightning_template.train [overrides]` (or `lt-train`)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from torch.utils.tensorboard.summary import hparams

from lightning_template.checkpoints import find_checkpoint, init_weights, load_checkpoint, resume_dir
from lightning_template.errors import UserError, hide_library_noise, report_user_errors
from lightning_template.models.classifier import ClassifierModule

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("resume_dir", resume_dir, replace=True)  # conf/train.yaml: hydra.run.dir
OmegaConf.register_new_resolver("if_gpu", lambda accelerator, gpu, cpu: gpu if accelerator == "gpu" else cpu)

# Metrics of TensorBoard's HPARAMS tab, by which the runs of a sweep are compared.
HPARAM_METRICS = ("hp_metric", "val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as `a/b/c` keys with values TensorBoard's HPARAMS tab can show."""
    if isinstance(node, Mapping):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    name = prefix.rstrip("/")
    if name.endswith("_target_"):
        return {name: str(node).rpartition(".")[2]}
    return {name: node if isinstance(node, (int, float, str, bool)) else str(node)}


@rank_zero_only
def log_hyperparameters(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Send the settings that tell runs apart to every logger, and open TensorBoard's HPARAMS session."""
    config = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    keys = ("data", "model", "optimizer", "scheduler", "seed")
    params = flatten({key: config.get(key) for key in keys} | {"max_epochs": cfg.trainer.max_epochs})
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):  # the values come from the scalars logged later
            for summary in hparams(params, dict.fromkeys(HPARAM_METRICS, 0.0)):
                logger.experiment.file_writer.add_summary(summary)


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config, as a YAML tree, when the run starts: the log shows what ran."""
    Console().print(Syntax(OmegaConf.to_yaml(cfg, resolve=True), "yaml", background_color="default"))


@rank_zero_only
def print_summary(title: str, metrics: Mapping[str, float], places: Mapping[str, str]) -> None:
    """The run's final numbers, then where it was written and how to look at it."""
    table = Table("metric", "value", title=title, title_justify="left")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    for name, place in places.items():
        console.print(f"[bold]{name}:[/bold] {place}", soft_wrap=True)


def command(module: str, *args: str) -> str:
    """A command to paste into any shell in any folder: this interpreter by its full path, no venv to activate."""
    return shlex.join([sys.executable, "-m", module, *args])


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The Trainer's last logged values as plain floats."""
    return {name: float(value) for name, value in sorted(trainer.callback_metrics.items())}


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Trainer of the `trainer` group, with the `logger` group's loggers."""
    max_epochs = cfg.trainer.get("max_epochs")
    if type(max_epochs) is not int or not (max_epochs >= 1 or max_epochs == -1):  # bool is no epoch count
        raise UserError(
            f"trainer.max_epochs must be a whole number >= 1 (or -1: no limit), got {max_epochs!r}."
        )
    try:
        loggers = [instantiate(logger) for logger in (cfg.get("logger") or {}).values() if logger]
    except InstantiationException as exc:  # logger=mlflow or wandb without its package
        if not isinstance(exc.__cause__, ModuleNotFoundError):
            raise
        extra = ".[mlflow]" if "mlflow" in str(exc) else ".[wandb]"
        raise UserError(
            f'This logger needs its package: pip install -e "{extra}" ({exc.__cause__}).'
        ) from exc
    return instantiate(cfg.trainer, logger=loggers or False, **kwargs)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every final metric."""
    if cfg.get("print_config"):
        print_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: Any = instantiate(cfg.data)
    datamodule.setup("fit")  # the network is built for the data's image shape and classes
    model: ClassifierModule = instantiate(
        cfg.model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        input_shape=datamodule.input_shape,
        class_names=datamodule.classes,
        data=cfg.data,  # saved in checkpoints: eval tests on the same data
    )
    if cfg.get("init_from"):  # fine-tuning: the weights only, into this new run
        init_weights(model, cfg.init_from)
    callbacks = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values() if callback]
    batches = len(datamodule.train_dataloader())  # a small dataset logs at least once per epoch
    log_every_n_steps = min(cfg.trainer.get("log_every_n_steps", 50), batches)
    trainer = build_trainer(cfg, callbacks=callbacks, log_every_n_steps=log_every_n_steps)
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), f"{cfg.paths.log_dir}/{cfg.task_name}")
    saved_net = load_checkpoint(ckpt_path).hparams["net"] if ckpt_path else model.hparams["net"]
    if saved_net != model.hparams["net"]:
        raise UserError(
            f"ckpt_path={ckpt_path} holds another network than the config asks for; resume with the "
            f"model settings it was trained with ({saved_net})."
        )
    log_hyperparameters(cfg, trainer)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (SystemExit, SIGTERMException):  # Lightning turns Ctrl-C into SystemExit after saving
        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        overrides = [o for o in overrides if not o.startswith("ckpt_path=")] + ["ckpt_path=last"]
        resume = command("lightning_template.train", *overrides)
        log.warning("Interrupted: checkpoint saved. Resume with %s", resume)
        sys.exit(128 + signal.SIGTERM if trainer.received_sigterm else 130)
    metrics = final_metrics(trainer)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        metrics.update(final_metrics(trainer))
    places = {"Run directory": cfg.paths.output_dir, "Best checkpoint": best or "(none)"}
    if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
        places["TensorBoard"] = command("tensorboard.main", "--logdir", cfg.paths.output_dir)
    print_summary("Training finished", metrics, places)
    if trainer.is_global_zero:  # for the summary of a sweep
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


@contextmanager
def one_sweep_job() -> Iterator[None]:
    """Make Lightning's extra DDP processes run this job only (it starts them by running `sys.argv` again
    with `hydra.run.dir`: inside `-m`, the whole sweep), and clear the environment its launcher leaves."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environment = sys.argv, dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(cast(DictConfig, hydra_cfg)):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Command-line entry point; returns `optimized_metric` to Hydra's sweepers (NaN if the job failed)."""
    hide_library_noise()
    metrics: dict[str, float] = {}
    with one_sweep_job(), report_user_errors():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"), float("nan"))


if __name__ == "__main__":
    main()
