"""What a run shows beyond scalars: TensorBoard images and figures, and curves.png with or without a logger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template.callbacks import PredictionImages, confident_mistakes
from lightning_template.curves import LearningCurves
from lightning_template.train import train

from tests.conftest import FAST

PNG = b"\x89PNG\r\n\x1a\n"
QUIET = [*FAST, "callbacks.progress_bar=null"]  # FAST turns the progress bar off


def test_tensorboard_shows_predictions_mistakes_confusion_matrices_and_graph(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    graph = "logger.tensorboard.log_graph=true"
    train(make_cfg("train", [*QUIET, graph, "trainer.max_epochs=2", "++trainer.num_sanity_val_steps=1"]))

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert len(events.Images("val/predictions")) == 2  # one per epoch, none for the sanity check
    for tag in ("test/mistakes", "val/confusion_matrix", "test/confusion_matrix"):
        assert len(events.Images(tag)) == 1, tag
    assert events.Tags()["graph"]
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)


def test_confusion_matrix_counts_every_test_image(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("train", QUIET)
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    callback = PredictionImages()
    trainer = L.Trainer(
        logger=TensorBoardLogger(tmp_path),
        callbacks=[callback],
        limit_test_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, datamodule=instantiate(cfg.data), verbose=False)

    matrix = callback.confusion["test"].compute()
    assert matrix.shape == (10, 10)
    assert matrix.sum() == 2 * cfg.data.eval_batch_size


def test_mistakes_are_the_surest_wrong_predictions_first() -> None:
    images = torch.arange(6)  # stands in for each image
    preds = torch.tensor([0, 2, 2, 0, 1, 5])
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    confidences = torch.tensor([0.99, 0.6, 0.95, 0.8, 0.7, 0.5])

    shown, shown_preds, shown_labels, shown_confidences = confident_mistakes(
        (images, preds, labels, confidences), k=2
    )
    assert shown.tolist() == [3, 4]
    assert (shown_preds != shown_labels).all()
    assert shown_confidences.tolist() == sorted(shown_confidences.tolist(), reverse=True)

    # With fewer mistakes than places, every mistake comes before any right prediction.
    shown, shown_preds, shown_labels, _ = confident_mistakes((images, preds, labels, confidences), k=5)
    assert shown[:3].tolist() == [3, 4, 1]
    assert (shown_preds[3:] == shown_labels[3:]).all()


def test_curves_without_a_logger_cover_every_epoch_across_a_resume(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    train(make_cfg("train", [*QUIET, "logger=none", "test=false"]))
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "tensorboard").exists()

    last = tmp_path / "checkpoints" / "last.ckpt"
    (tmp_path / "curves.png").unlink()
    train(
        make_cfg("train", [*QUIET, "logger=none", "test=false", "trainer.max_epochs=2", f"ckpt_path={last}"])
    )
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)

    state = torch.load(last, weights_only=True)["callbacks"]["LearningCurves"]
    curves = LearningCurves()
    curves.load_state_dict(state)
    assert curves.state_dict() == state
    assert {name: list(values) for name, values in curves.history.items()} == {
        "train/loss": [0, 1],
        "train/acc": [0, 1],
        "val/loss": [0, 1],
        "val/acc": [0, 1],
    }
