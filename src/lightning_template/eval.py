"""Test a checkpoint: `python -m lightning_template.eval ckpt_path=...` or `lt-eval ckpt_path=...`."""

from __future__ import annotations

import warnings

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_template.runtime import (
    build_loggers,
    exit_on_user_error,
    final_metrics,
    load_classifier,
    print_summary,
    silence_known_noise,
)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test `cfg.ckpt_path` with the network and standardization stored in the checkpoint itself."""
    ckpt_path = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path
    model = load_classifier(ckpt_path)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    loggers = build_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    # ckpt_path also restores the datamodule's standardization statistics saved at training time.
    with warnings.catch_warnings():
        # Testing needs none of the training callbacks whose state the checkpoint also holds.
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        trainer.test(
            model=model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
        )
    metrics = final_metrics(trainer.callback_metrics)
    locations = {"Run directory": str(cfg.paths.output_dir), "Checkpoint": str(ckpt_path)}
    if loggers:
        locations["View in TensorBoard"] = f"tensorboard --logdir {cfg.paths.output_dir}"
    print_summary("Evaluation finished", metrics, locations)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    silence_known_noise()
    with exit_on_user_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
