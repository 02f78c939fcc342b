"""What a user sees of a run: TensorBoard's tabs read back with TensorBoard's own reader, and curves.png."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from lightning_template.callbacks.test_mistakes import ConfidentMistakesGrid, most_confident_mistakes
from lightning_template.callbacks.validation_predictions import ValidationPredictionGrid
from lightning_template.runtime import print_summary
from lightning_template.train import train

TEST_IMAGES = 5000  # debug=fast: 2 test batches of 2500
PER_CLASS = {f"test/{metric}_{c}" for metric in ("precision", "recall", "f1") for c in range(10)}


class KeepTestState(L.Callback):
    """Keeps what the run's own callbacks computed at test time, and the tested model's test predictions."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.callbacks = {type(c).__name__: c for c in trainer.callbacks}
        data = trainer.datamodule
        images = data.standardizer(data.data_test.images[:TEST_IMAGES])
        with torch.no_grad():
            self.logits = pl_module(images.to(pl_module.device)).cpu()
        self.targets = data.data_test.labels[:TEST_IMAGES]


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_default_run_fills_every_tensorboard_tab(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    keep = KeepTestState()
    metrics = train(make_cfg("train", ["debug=fast"]), extra_callbacks=[keep])

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {
        "train/loss_step",
        "train/acc_step",
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "lr-Adam",
        "time/epoch_s",
        "time/samples_per_s",
        "test/loss",
        "test/acc",
    } | PER_CLASS <= set(tags["scalars"])
    assert events.Scalars("time/samples_per_s")[-1].value > 0
    assert {"val/predictions", "val/confusion_matrix", "test/mistakes", "test/confusion_matrix"} <= set(
        tags["images"]
    )
    assert all(image.width > 0 for tag in tags["images"] for image in events.Images(tag))
    assert tags["graph"]

    # HPARAMS: the metrics to compare runs by are registered, and the run's settings are in its session.
    plugin = events.PluginTagToContent("hparams")
    experiment = hparams_metadata.parse_experiment_plugin_data(plugin["_hparams_/experiment"])
    assert {"val/acc_best", "test/acc", "test/loss"} <= {info.name.tag for info in experiment.metric_infos}
    session = hparams_metadata.parse_session_start_info_plugin_data(plugin["_hparams_/session_start_info"])
    assert {
        "model/net/hidden_sizes",
        "model/net/dropout",
        "optimizer/_target_",
        "optimizer/lr",
        "data/batch_size",
        "data/augment/rotate_degrees",
        "scheduler",
        "seed",
    } <= set(session.hparams)
    assert session.hparams["optimizer/_target_"].string_value == "Adam"

    # Per-class metrics are returned (and printed), not only logged.
    assert set(metrics) >= PER_CLASS

    # The confusion matrices count every evaluated image once, by its true class.
    matrices = keep.callbacks["ConfusionMatrixFigure"].matrices
    assert int(matrices["val"].sum()) == 5000  # debug=fast: 2 validation batches of 2500
    assert torch.equal(matrices["test"].sum(dim=1), torch.bincount(keep.targets, minlength=10))

    # The mistakes grid shows only mistakes: the test set's most confident ones, most confident first.
    shown = keep.callbacks["ConfidentMistakesGrid"].mistakes
    assert len(shown["pred"]) == 32
    assert (shown["pred"] != shown["target"]).all()
    probabilities = keep.logits.softmax(dim=1)
    confidence, preds = probabilities.max(dim=1)
    wrong_confidence = confidence[preds != keep.targets]
    expected = wrong_confidence.sort(descending=True).values[:32]
    torch.testing.assert_close(shown["confidence"], expected, atol=1e-5, rtol=1e-4)

    assert _is_png(tmp_path / "curves.png")


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_without_tensorboard_the_run_still_writes_curves(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, logger: str
) -> None:
    cfg = make_cfg("train", ["debug=fast", f"logger={logger}", "trainer.max_epochs=2"])
    metrics = train(cfg)
    assert set(metrics) >= PER_CLASS
    assert metrics["time/samples_per_s"] > 0
    assert not (tmp_path / "tensorboard").exists()
    assert _is_png(tmp_path / "curves.png")


def test_most_confident_mistakes_skips_right_answers() -> None:
    logits = torch.tensor([[9.0, 0.0], [0.0, 9.0], [3.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    targets = torch.tensor([0, 0, 1, 1, 1])  # rows 1, 2 and 4 are wrong
    index, preds, confidence = most_confident_mistakes(logits, targets, k=2)
    assert index.tolist() == [1, 4]
    assert preds.tolist() == [1, 0]
    assert confidence[0] > confidence[1]
    assert most_confident_mistakes(logits, targets, k=10)[0].tolist() == [1, 4, 2]


def test_summary_prints_per_class_metrics_as_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    metrics: dict[str, Any] = {
        "test/acc": 0.5,
        "test/precision_0": 0.25,
        "test/recall_0": 0.75,
        "test/f1_0": 0.375,
    }
    print_summary("Done", metrics, {"Run directory": "/somewhere"})
    out = capsys.readouterr().out
    assert "test: per class" in out
    class_row = next(line for line in out.splitlines() if "0.2500" in line)
    assert "0.7500" in class_row and "0.3750" in class_row
    assert "test/precision_0" not in out


def test_tensorboard_callbacks_stay_out_of_the_training_step(make_cfg: Callable[..., DictConfig]) -> None:
    # Lightning calls every callback's per-batch hooks on every step unless they are not callable.
    from lightning_template.callbacks.epoch_level import TRAINING_BATCH_HOOKS, EpochLevelCallback
    from lightning_template.runtime import build_callbacks

    callbacks = build_callbacks(make_cfg("train").callbacks, has_logger=True)
    ours = [c for c in callbacks if isinstance(c, EpochLevelCallback)]
    assert len(ours) >= 6
    assert all(getattr(c, hook) is None for c in ours for hook in TRAINING_BATCH_HOOKS)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (
            lambda: ValidationPredictionGrid(num_images=0),
            "ValidationPredictionGrid num_images must be a positive integer, got 0",
        ),
        (
            lambda: ValidationPredictionGrid(every_n_epochs=True),
            "every_n_epochs must be a positive integer, got True",
        ),
        (
            lambda: ConfidentMistakesGrid(columns=-2),
            "ConfidentMistakesGrid columns must be a positive integer, got -2",
        ),
    ],
)
def test_image_grids_refuse_bad_sizes_by_name(make: Callable[[], Any], needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        make()
