"""The few glue helpers that train and eval share: build from config, log, summarize, report errors."""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lightning_template.checkpointing import read_checkpoint
from lightning_template.data.batches import Standardizer
from lightning_template.errors import UserInputError
from lightning_template.models.classifier import ClassifierModule

log = logging.getLogger(__name__)

# Registered as metrics of the TensorBoard HPARAMS session, so sweeps can be sorted by them.
HPARAM_METRICS = (
    "hp_metric",
    "val/acc_best",
    "val/acc",
    "val/loss",
    "test/acc",
    "test/loss",
    "time/samples_per_s",
)
HPARAM_GROUPS = ("data", "model", "optimizer", "scheduler")  # flattened into the HPARAMS tab
# Config keys that change how fast or where a run goes, never its results: left out of HPARAMS.
NOT_HPARAMS = ("data_dir", "download", "num_workers", "pin_memory", "eval_batch_size", "on_device")
# Per-class test metrics (`test/f1_3`) are printed as their own table, one row per class.
PER_CLASS_METRIC = re.compile(r"^(?P<stage>[^/]+)/(?P<metric>precision|recall|f1)_(?P<label>\d+)$")


def build_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every logger in the `logger` group (none, one or several)."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node and "_target_" in node]


def build_callbacks(cfg: DictConfig | None, has_logger: bool) -> list[Callback]:
    """Instantiate the `callbacks` group, skipping entries set to null and those that need a logger."""
    if not cfg:
        return []
    callbacks = [instantiate(node) for node in cfg.values() if node and "_target_" in node]
    if not has_logger:
        dropped = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
        if dropped:
            log.info("No logger configured: leaving out LearningRateMonitor, which needs one.")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("_partial_", "_convert_", "_recursive_"):
                continue
            _flatten(f"{prefix}/{key}" if prefix else str(key), value, out)
    elif isinstance(node, (list, tuple)):
        out[prefix] = str(list(node))
    elif node is None:
        out[prefix] = "null"
    elif prefix.endswith("_target_") and isinstance(node, str):
        out[prefix] = node.rpartition(".")[2]  # the class name is what tells runs apart
    else:
        out[prefix] = node


@functools.cache
def _option_keys(group: str) -> frozenset[str]:
    """The flattened keys of every option the template ships for a config group (conf/<group>/*.yaml)."""
    keys: dict[str, Any] = {}
    folder = importlib.resources.files("lightning_template.conf") / group
    for option in folder.iterdir() if folder.is_dir() else ():
        if option.name.endswith(".yaml"):
            node = OmegaConf.to_container(OmegaConf.create(option.read_text()), resolve=False)
            if isinstance(node, dict):
                node.pop("defaults", None)
                _flatten(group, node, keys)
    return frozenset(keys)


def hyperparameters(cfg: DictConfig, model: LightningModule | None = None) -> dict[str, Any]:
    """The flat subset of the run's config that tells runs apart in TensorBoard's HPARAMS tab."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    flat: dict[str, Any] = {}
    for group in HPARAM_GROUPS:
        _flatten(group, container.get(group), flat)
        # TensorBoard takes its columns from one run of a sweep: every run lists every option's keys.
        for key in _option_keys(group) - flat.keys():
            flat[key] = "-"
    for key in ("max_epochs", "precision", "accelerator", "devices", "deterministic"):
        flat[f"trainer/{key}"] = str(container.get("trainer", {}).get(key))
    flat["seed"] = str(container.get("seed"))
    # Options that leave no trace in the flattened values (scheduler=none, an experiment's name).
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        flat["scheduler"] = str(choices.get("scheduler"))
        flat["experiment"] = str(choices.get("experiment"))
    for key in [k for k in flat if k.rpartition("/")[2] in NOT_HPARAMS]:
        del flat[key]
    if model is not None:
        flat["model/params"] = sum(p.numel() for p in model.parameters())
    return flat


@rank_zero_only
def log_hyperparameters(cfg: DictConfig, model: LightningModule, loggers: list[Logger]) -> None:
    """Send the config to every logger, and open an HPARAMS session that names the metrics to compare."""
    params = hyperparameters(cfg, model)
    for logger in loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):
            from torch.utils.tensorboard.summary import hparams

            # Metric values here only register the tags; the real values are logged during the run.
            experiment, start, end = hparams(params, dict.fromkeys(HPARAM_METRICS, 0.0))
            writer = logger.experiment._get_file_writer()
            for summary in (experiment, start, end):
                writer.add_summary(summary)


def load_classifier(ckpt_path: str | os.PathLike[str] | None) -> ClassifierModule:
    """Load a ClassifierModule checkpoint safely (weights_only), or explain what is wrong with the file."""
    if ckpt_path is None or str(ckpt_path) in ("", "???"):
        raise UserInputError(f"No checkpoint given: pass ckpt_path=<file.ckpt>.{_latest_checkpoint_hint()}")
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserInputError(
            f"ckpt_path={ckpt_path} does not exist or is not a file.{_latest_checkpoint_hint()}"
        )
    checkpoint = read_checkpoint(path)
    if "state_dict" not in checkpoint or "net" not in checkpoint.get("hyper_parameters", {}):
        raise UserInputError(
            f"ckpt_path={ckpt_path} is a PyTorch file but not a checkpoint of this template's ClassifierModule "
            "(it has no state_dict or no network config in hyper_parameters)."
        )
    try:
        return ClassifierModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(
            f"ckpt_path={ckpt_path} does not fit the network it describes ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]})."
        ) from exc


def load_standardizer(ckpt_path: str | os.PathLike[str]) -> Standardizer:
    """The standardization a model was trained with, from the datamodule state saved in its checkpoint."""
    checkpoint = read_checkpoint(Path(ckpt_path))
    # Lightning stores a datamodule's state_dict under the datamodule's class name.
    for state in checkpoint.values():
        if isinstance(state, dict) and isinstance(state.get("standardizer"), dict):
            standardizer = Standardizer()
            standardizer.load_state_dict(state["standardizer"])
            return standardizer
    raise UserInputError(
        f"ckpt_path={ckpt_path} holds no standardization statistics (the datamodule's `standardizer` "
        "state), so raw images cannot be prepared the way the model was trained. Use a checkpoint written "
        "by train, which saves them."
    )


def _latest_checkpoint_hint() -> str:
    candidates = sorted(Path("logs").glob("*/runs/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return f" The most recent one here is {candidates[-1]}." if candidates else ""


def final_metrics(trainer_metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats from the Trainer's callback metrics, leaving out the last step's values."""
    return {
        name: float(value)
        for name, value in sorted(trainer_metrics.items())
        if isinstance(value, (torch.Tensor, float, int)) and not name.endswith("_step")
    }


@rank_zero_only
def print_summary(title: str, metrics: Mapping[str, float], locations: Mapping[str, str]) -> None:
    """One table at the end of a run: its numbers, then where it was written and how to look at it."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    per_class: dict[str, dict[int, dict[str, float]]] = {}  # stage -> class -> metric -> value
    for name, value in metrics.items():
        match = PER_CLASS_METRIC.match(name)
        if match:
            row = per_class.setdefault(match["stage"], {}).setdefault(int(match["label"]), {})
            row[match["metric"]] = value
        else:
            table.add_row(name, _format_number(value))
    console = Console()
    console.print(table)
    for stage, classes in per_class.items():
        class_table = Table(title=f"{stage}: per class", title_justify="left")
        class_table.add_column("class", style="bold", justify="right")
        for metric in ("precision", "recall", "f1"):
            class_table.add_column(metric, justify="right")
        for label, values in sorted(classes.items()):
            cells = [_format_number(values[m]) if m in values else "" for m in ("precision", "recall", "f1")]
            class_table.add_row(str(label), *cells)
        console.print(class_table)
    for name, where in locations.items():
        console.print(f"[bold]{name}:[/bold] {where}", soft_wrap=True)


def _format_number(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def silence_known_noise() -> None:
    """Hide library chatter that says nothing about this run (advertising, a known deprecation, workers)."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    # The data lives in memory and is indexed a whole batch at a time: worker processes would only slow it.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Run directories are new for every run; the only way into a used one is resuming there on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("\U0001f4a1 Tip")
    )


def _user_message(exc: BaseException) -> str | None:
    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, (ValueError, UserInputError)):
        return str(exc.__cause__)
    if isinstance(exc, (UserInputError, ValueError)):
        return str(exc)
    return None


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a problem the user can fix into a one-paragraph message and exit code 2."""
    try:
        yield
    except Exception as exc:
        message = _user_message(exc)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {message}\n(Set HYDRA_FULL_ERROR=1 for the full traceback.)", file=sys.stderr)
        sys.exit(2)
