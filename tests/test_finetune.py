"""init_from: a new run that starts from another run's network weights (fine-tuning), on other data too."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from lightning_template.checkpoints import InitWeights, load_checkpoint
from lightning_template.errors import UserError
from lightning_template.models.classifier import ClassifierModule
from lightning_template.train import train

from tests.conftest import FAST, MNIST_SPEC
from tests.test_data import write_fashion_mnist

MLP = {"_target_": "lightning_template.models.mlp.MLP", "hidden_sizes": [64, 32]}


@pytest.fixture
def mnist_checkpoint(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """last.ckpt of a one-epoch MNIST run."""
    train(make_cfg("train", [*FAST, "logger=none", "test=false", f"paths.output_dir={tmp_path / 'mnist'}"]))
    return tmp_path / "mnist" / "checkpoints" / "last.ckpt"


def test_matching_tensors_load_and_the_log_names_the_others(
    mnist_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = load_checkpoint(mnist_checkpoint).net.state_dict()
    same_shape = ClassifierModule(MLP, spec=MNIST_SPEC)
    init = InitWeights(str(mnist_checkpoint), MLP["_target_"])
    init.on_fit_start(None, same_shape)  # type: ignore[arg-type]
    assert all(torch.equal(source[k], v) for k, v in same_shape.net.state_dict().items())

    three_classes = ClassifierModule(MLP, spec={**MNIST_SPEC, "classes": ["cat", "dog", "fox"]})
    with caplog.at_level(logging.INFO):
        init.on_fit_start(None, three_classes)  # type: ignore[arg-type]
    loaded, output = three_classes.net.state_dict(), next(reversed(source)).rpartition(".")[0]
    assert torch.equal(loaded["layers.1.weight"], source["layers.1.weight"])
    assert loaded[f"{output}.weight"].shape == (3, 32)  # the new output layer starts from scratch
    assert f"skipped (other shapes): ['{output}.bias', '{output}.weight']" in caplog.text


def test_another_network_class_is_refused(mnist_checkpoint: Path) -> None:
    with pytest.raises(UserError, match=r"init_from=.*holds a lightning_template\.models\.mlp\.MLP network"):
        InitWeights(str(mnist_checkpoint), "lightning_template.models.cnn.CNN")


def test_an_mnist_model_fine_tunes_on_fashion_mnist_and_on_three_classes_in_new_runs(
    make_cfg: Callable[..., DictConfig],
    mnist_checkpoint: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_fashion_mnist(tmp_path / "fashion")
    for name in ("a", "b", "c"):  # 28x28 grayscale images in three classes
        (tmp_path / "letters" / "train" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (28, 28), 80 * "abc".index(name) + i).save(
                tmp_path / "letters" / "train" / name / f"{i}.png"
            )
    runs = {
        "fashion": ["data=fashion_mnist", "data.val_split=0.1", f"paths.data_dir={tmp_path / 'fashion'}"],
        "letters": ["data=image_folder", f"data.root={tmp_path / 'letters'}", "data.image_size=[28,28]"],
    }
    output = next(reversed(load_checkpoint(mnist_checkpoint).net.state_dict())).rpartition(".")[0]
    skipped = {"fashion": "[]", "letters": f"['{output}.bias', '{output}.weight']"}  # 10 classes, then 3
    for run, data in runs.items():
        out = tmp_path / run
        with caplog.at_level(logging.INFO):
            train(
                make_cfg(
                    "train",
                    [*FAST, *data, "logger=none", f"init_from={mnist_checkpoint}", f"paths.output_dir={out}"],
                )
            )
        assert f"skipped (other shapes): {skipped[run]}" in caplog.text
        assert (out / "checkpoints" / "last.ckpt").is_file()  # a new run directory, epochs from 0
        assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in mnist_checkpoint.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_a_missing_init_from_checkpoint_names_the_key() -> None:
    with pytest.raises(UserError, match=r"init_from=nowhere\.ckpt is not a file"):
        InitWeights("nowhere.ckpt", MLP["_target_"])


def test_resuming_and_fine_tuning_at_once_is_refused(
    make_cfg: Callable[..., DictConfig], mnist_checkpoint: Path
) -> None:
    cfg = make_cfg("train", [f"ckpt_path={mnist_checkpoint}", f"init_from={mnist_checkpoint}"])
    with pytest.raises(
        UserError, match=r"ckpt_path resumes a run and init_from starts a new one from its weights"
    ):
        train(cfg)
