"""Test a checkpoint: `python -m lightning_template.eval ckpt_path=<file.ckpt>` (or `lt-eval`)."""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_template.checkpoints import load_checkpoint, read_checkpoint
from lightning_template.errors import report_user_errors
from lightning_template.train import build_trainer, final_metrics, print_summary


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model, which carries its own network, spec and standardization."""
    model = load_checkpoint(cfg.get("ckpt_path"))
    given, trained_on = cfg.get("data") or {}, read_checkpoint(cfg.ckpt_path)["datamodule_hyper_parameters"]
    with open_dict(cfg):  # the data the model was trained on, unless data=<option>, with data.* on top
        cfg.data = given if "_target_" in given else OmegaConf.merge(trained_on, given)
    trainer = build_trainer(cfg)
    trainer.test(model, datamodule=instantiate(cfg.data), verbose=False)
    metrics = final_metrics(trainer)
    places = {"Checkpoint": str(cfg.ckpt_path), "Run directory": cfg.paths.output_dir}
    print_summary("Evaluation finished", metrics, places)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    with report_user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
