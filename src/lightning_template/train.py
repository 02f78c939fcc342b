"""Train a model: `python -m lightning_template.train [overrides]` (or `lt-train`)."""

import json
import logging
import os
import shlex
import sys
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lightning_template.checkpoints import InitWeights, check_resume, find_checkpoint, read_checkpoint
from lightning_template.errors import UserError, report_user_errors
from lightning_template.models.classifier import ClassifierModule

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("if_gpu", lambda accelerator, gpu, cpu: gpu if accelerator == "gpu" else cpu)


@rank_zero_only
def print_summary(title: str, metrics: Mapping[str, float], places: Mapping[str, str]) -> None:
    """The run's final numbers, then where it was written and how to look at it."""
    width = max(map(len, metrics), default=0)
    print(title, *(f"  {name:<{width}}  {value:.4f}" for name, value in metrics.items()), sep="\n")
    print(*(f"{name}: {place}" for name, place in places.items()), sep="\n")


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
        raise UserError(f"trainer.max_epochs must be an integer >= 1 (or -1: no limit), got {max_epochs!r}.")
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        raise UserError("trainer.accelerator=gpu, but no CUDA GPU is visible: use trainer=cpu or ddp_cpu.")
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


def run_seed(cfg: DictConfig, ckpt_path: Path | None) -> int:
    """`seed`; if null, the resumed checkpoint's or one from the run directory: the same in every process."""
    if cfg.get("seed") is not None:
        return cfg.seed
    if ckpt_path:  # a resumed run keeps its split
        return read_checkpoint(ckpt_path)["datamodule_hyper_parameters"]["seed"]
    if os.environ.get("LOCAL_RANK", "0") != "0" and "PL_GLOBAL_SEED" in os.environ:  # a DDP process: rank 0's
        return int(os.environ["PL_GLOBAL_SEED"])
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return zlib.crc32(str(HydraConfig.get().sweep.dir if multirun else cfg.paths.output_dir).encode())


def stop_interrupted(cfg: DictConfig, trainer: L.Trainer, testing: bool, best: str) -> NoReturn:
    """Exit 130 (Ctrl-C) or 143 (SIGTERM), saying what was interrupted and what can be done next."""
    signal_name, code = ("SIGTERM", 143) if trainer.received_sigterm else ("Ctrl-C", 130)
    message = f"Interrupted by {signal_name} while {'testing' if testing else 'fitting'}."
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt").absolute()
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:  # for the sweep's summary
        Path(HydraConfig.get().runtime.output_dir, "interrupted.txt").write_text(f"{message}\n")
    elif testing:
        evaluate = command("lightning_template.eval", f"ckpt_path={best}")
        message += f" Training had finished; test with {evaluate}"
    elif last.is_file():
        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        overrides = [o for o in overrides if not o.startswith("ckpt_path=")] + [f"ckpt_path={last}"]
        message += f" Resume from {last.name} with {command('lightning_template.train', *overrides)}"
    else:
        message += " No checkpoint of this run was saved yet, so there is nothing to resume."
    log.warning(message)
    sys.exit(code)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every final metric."""
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), f"{cfg.paths.log_dir}/{cfg.task_name}")
    if ckpt_path and cfg.get("init_from"):
        raise UserError("ckpt_path resumes a run and init_from starts a new one from its weights: pass one.")
    with open_dict(cfg):  # seed=null: the seed taken is printed and logged; seed=<it> repeats the run
        cfg.seed = L.seed_everything(run_seed(cfg, ckpt_path), workers=True)
    datamodule = instantiate(cfg.data)
    model: ClassifierModule = instantiate(  # its network is built for the data's spec when fitting starts
        cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.get("scheduler"))
    )
    command_dir = cfg.paths.output_dir  # Hydra's: this command's config and log
    if ckpt_path:  # checked first: only then does the run continue in its checkpoint's directory
        with open_dict(cfg):
            cfg.paths.output_dir = check_resume(ckpt_path, model, cfg.trainer.max_epochs) or command_dir
    if cfg.get("print_config"):  # the log shows what ran
        rank_zero_only(print)(OmegaConf.to_yaml(cfg, resolve=True))
    callbacks = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values() if callback]
    if cfg.get("init_from"):  # fine-tuning: the weights only, into this new run
        callbacks.append(InitWeights(cfg.init_from, cfg.model.net._target_))
    trainer = build_trainer(cfg, callbacks=callbacks)
    best, testing = "", False
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = final_metrics(trainer)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if cfg.get("test"):
            testing = True
            trainer.test(
                model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
            )
            metrics.update(final_metrics(trainer))
    except SystemExit:  # Lightning turns Ctrl-C into SystemExit and SIGTERM into SIGTERMException (one)
        stop_interrupted(cfg, trainer, testing, best)
    places = {"Run directory": cfg.paths.output_dir, "Best checkpoint": best or "(none)"}
    if command_dir != cfg.paths.output_dir:
        places["This command's config and log"] = command_dir
    if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
        places["TensorBoard"] = command("tensorboard.main", "--logdir", cfg.paths.output_dir)
    print_summary("Training finished", metrics, places)
    if trainer.is_global_zero:  # for the summary of a sweep
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


@contextmanager
def one_sweep_job() -> Iterator[None]:
    """Lightning's extra DDP processes re-run `sys.argv`, inside `-m` the whole sweep: make it this job only."""
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
    """Command-line entry point; `optimized_metric` for Hydra's sweepers, None if the job failed."""
    metrics: dict[str, float] = {}
    with one_sweep_job(), report_user_errors():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
