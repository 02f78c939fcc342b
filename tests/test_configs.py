"""Every option of every config group composes and builds the objects it describes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.resources import files

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_template.runtime import build_callbacks, build_loggers
from lightning_template.train import build_run

CONF = files("lightning_template.conf")


def options(group: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml")
    )


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    run = build_run(cfg)
    return run.datamodule, run.model, run.trainer


def test_every_group_has_the_documented_options() -> None:
    assert options("optimizer") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["cosine", "none", "onecycle", "plateau"]
    assert options("trainer") == ["cpu", "ddp", "ddp_cpu", "default", "gpu"]
    assert options("hparams_search") == ["optuna"]
    assert options("hydra/launcher") == ["slurm"]
    assert options("logger") == ["csv", "none", "tensorboard"]
    assert {"fast", "overfit", "limit", "profiler"} <= set(options("debug"))
    assert "keras_tutorial" in options("experiment")


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={option}"
        for group in ("data", "model", "optimizer", "scheduler", "callbacks", "logger", "debug", "experiment")
        for option in options(group)
    ]
    + ["trainer=cpu", "trainer=default"],
)
def test_group_option_composes_and_instantiates(make_cfg: Callable[..., DictConfig], override: str) -> None:
    cfg = make_cfg("train", [override])
    datamodule, model, trainer = build(cfg)
    assert isinstance(datamodule, L.LightningDataModule)
    assert isinstance(trainer, L.Trainer)
    optimizer = model.optimizer_factory(model.parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    if model.scheduler_config:
        factory = model.scheduler_config["scheduler"]
        kwargs = {"total_steps": 10} if "OneCycle" in str(factory) else {}
        factory(optimizer, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trainer_instantiates(make_cfg: Callable[..., DictConfig]) -> None:
    _, _, trainer = build(make_cfg("train", ["trainer=gpu"]))
    assert trainer.accelerator.__class__.__name__ == "CUDAAccelerator"


def test_eval_config_composes_and_needs_a_checkpoint(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("eval")
    assert cfg.task_name == "eval"
    assert cfg.data._target_.endswith("MNISTDataModule")
    assert "model" not in cfg  # the network comes from the checkpoint


def test_keras_tutorial_is_the_tutorial_setup(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["experiment=keras_tutorial"])
    assert cfg.data.normalize == "per_pixel"
    assert cfg.data.val_split == 0.1
    assert cfg.data.batch_size == 32
    assert list(cfg.model.net.hidden_sizes) == [64, 32]
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.001


def test_defaults_are_the_documented_ones(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train")
    assert cfg.trainer.max_epochs == 10
    assert cfg.data.batch_size == 128
    assert cfg.data.val_split == 5000
    assert cfg.data.normalize == "global"
    assert cfg.seed is not None
    assert cfg.optimizer.lr == 0.001
    assert not cfg.scheduler
    assert "early_stopping" not in cfg.callbacks
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.save_last


def test_early_stopping_is_one_switch_away(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["callbacks=early_stopping", "callbacks.early_stopping.patience=5"])
    callbacks = build_callbacks(cfg.callbacks, has_logger=True)
    names = {type(c).__name__ for c in callbacks}
    assert {"EarlyStopping", "ModelCheckpoint", "RichProgressBar", "LearningRateMonitor"} <= names
    assert next(c for c in callbacks if isinstance(c, L.pytorch.callbacks.EarlyStopping)).patience == 5


def test_no_logger_drops_the_learning_rate_monitor(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["logger=none"])
    assert build_loggers(cfg.get("logger")) == []
    assert not any(
        type(c).__name__ == "LearningRateMonitor" for c in build_callbacks(cfg.callbacks, has_logger=False)
    )


def test_partial_optimizer_receives_the_parameters(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["optimizer=sgd", "optimizer.lr=0.3"])
    factory = instantiate(cfg.optimizer)
    assert isinstance(factory, functools.partial)
    optimizer = factory([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.3 and optimizer.defaults["nesterov"]
