"""Every option file under conf/ composes and builds; every option that changes training trains a few batches."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_template.errors import UserError
from lightning_template.train import build_trainer, train

from tests.conftest import FAST, REPO

CONF = REPO / "conf"
TRAINED = ("callbacks", "debug", "experiment", "logger", "model", "optimizer", "scheduler")  # a tiny fit each
NEEDS_A_GPU = ("trainer/ddp", "trainer/gpu")  # composed here, trained by tests/test_gpu.py
OPTIONS = sorted(  # group/name of every option file: a new one is picked up here by itself
    path.relative_to(CONF).with_suffix("").as_posix()
    for path in CONF.glob("*/**/*.yaml")
    if path.relative_to(CONF).as_posix() != "local/default.yaml"  # this machine's own settings
)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_composes_builds_and_trains(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    group, _, name = option.rpartition("/")
    quiet = [] if group == "logger" else ["logger=none"]  # no event files where the logger is not tested
    fast = [o for o in FAST if option != "callbacks/none" or not o.startswith("callbacks.")]  # none to drop
    cfg = make_cfg("train", [f"{group}={name}", *quiet, *fast])
    for key in OmegaConf.missing_keys(cfg):  # values the user must give, such as data.root
        OmegaConf.update(cfg, key, str(tmp_path))
    instantiate(cfg.data)
    if group in TRAINED and option not in NEEDS_A_GPU:
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb keeps a little state outside the run directory
        assert math.isfinite(train(cfg)["train/loss"])
        if group == "logger":  # each tracker writes into the run directory, besides the checkpoints
            assert bool(cfg.logger) == any(
                path.is_dir() and path.name != "checkpoints" for path in tmp_path.iterdir()
            )
    elif option not in NEEDS_A_GPU:
        build_trainer(cfg)
    elif not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"trainer\.accelerator=gpu, but no CUDA GPU is visible"):
            build_trainer(cfg)
